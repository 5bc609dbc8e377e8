"""Label diagnostics before fine-tuning: what the labels say against the base model, and what
in them would make training worse instead of better.

    report = diagnose(model, train, valid, torch.float32, "cpu")
    report.findings          # each a warning that names the fix
    report.card_section()    # markdown for the model card

* per property (energy per atom, forces, stress): the base model's error against the labels
  (label - base), mean and spread;
* a stress offset far larger than its spread: likely Pulay stress (an under-converged
  plane-wave basis), another smearing or functional; training on it drags the whole model
  (issue 23: held-out forces 81 -> 305 meV/A);
* energies inconsistent with forces and stresses: along the straight path between two frames
  of the same atoms, ``E_b - E_a`` must equal the trapezoid integral of ``-F . dr`` and
  ``V sigma : d(strain)``; the labels' residual is compared with the base model's own (the base
  is exactly conservative, so its residual is the path's discretisation error);
* outliers: robust z-scores (median and MAD) of the per-atom energy error, after a least-squares
  fit of per-element offsets, and of each frame's RMS force error against the base (a frame in
  meV instead of eV stands out by a factor 1000);
* duplicate frames, and validation frames that are also in the training set.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase.units import GPa

from .data import Configuration, batch_of

#: robust z-score above which a frame is an outlier
OUTLIER_Z = 10.0
#: a stress offset is flagged when |mean| > OFFSET_SIGMAS * spread and > OFFSET_MIN_GPA
OFFSET_SIGMAS, OFFSET_MIN_GPA = 3.0, 2.0
#: path residuals: flagged when the labels' median |residual| per atom exceeds this many times
#: the base model's and CONSISTENCY_MIN_EV per atom
CONSISTENCY_FACTOR, CONSISTENCY_MIN_EV = 3.0, 2e-3
#: pairs of frames used for the path check: atoms moved less than this (A), strain below this
PAIR_MAX_DISPLACEMENT, PAIR_MAX_STRAIN = 0.6, 0.08


class TrainingDataWarning(UserWarning):
    """Something in the training labels that would make fine-tuning worse (named, with its fix)."""


@dataclass
class PropertyErrors:
    """label - base over a data set: ``mean`` and ``spread`` (standard deviation), ``mae`` and
    ``rmse``, in ``unit`` (meV/atom, meV/A, GPa); ``n`` values."""

    unit: str
    mean: float
    spread: float
    mae: float
    rmse: float
    n: int


@dataclass
class Finding:
    """One problem in the labels: ``kind`` (``stress_offset``, ``inconsistent``, ``outlier``,
    ``duplicate``, ``overlap``), the warning (it names the fix) and the frames concerned."""

    kind: str
    message: str
    frames: list[str] = field(default_factory=list)


@dataclass
class LabelReport:
    """The diagnostics of a training (and validation) set against a base model."""

    errors: dict[str, dict[str, PropertyErrors]]  # set ("train", "valid") -> property -> errors
    findings: list[Finding]
    #: the isotropic stress offset label - base (GPa) when it is flagged as likely Pulay stress
    stress_offset_GPa: float | None = None
    #: what was done about it (``"subtracted"`` or ``"kept"``), filled in by the caller
    stress_offset_action: str | None = None

    def lines(self) -> list[str]:
        """The table of errors, one line per set and property."""
        out = []
        for name, props in self.errors.items():
            for prop, e in props.items():
                out.append(
                    f"{name} {prop}: label - base mean {e.mean:+.4g} {e.unit}, spread {e.spread:.4g}, "
                    f"MAE {e.mae:.4g}, RMSE {e.rmse:.4g} ({e.n} values)"
                )
        return out

    def card_section(self) -> str:
        """Markdown for the model card: the error table and every finding."""
        return card_section(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "errors": {n: {p: vars(e) for p, e in props.items()} for n, props in self.errors.items()},
            "findings": [vars(f) for f in self.findings],
            "stress_offset_GPa": self.stress_offset_GPa,
            "stress_offset_action": self.stress_offset_action,
        }


def card_section(report: dict[str, Any]) -> str:
    """The card's markdown for a :meth:`LabelReport.to_dict` (the form kept in provenance)."""
    rows = "\n".join(
        f"| {name} | {prop} | {e['unit']} | {e['mean']:+.4g} | {e['spread']:.4g} | {e['mae']:.4g} |"
        for name, props in report["errors"].items()
        for prop, e in props.items()
    )
    findings = "\n".join(f"- **{f['kind']}**: {f['message']}" for f in report["findings"]) or "- none"
    if report.get("stress_offset_action") == "subtracted":
        findings += (f"\n- The stress offset {report['stress_offset_GPa']:+.4g} GPa was subtracted from every stress "
                     "label before training (stress_offset='auto').")  # fmt: skip
    table = ("| set | property | unit | mean (label - base) | spread | MAE |\n|---|---|---|---|---|---|\n"
             f"{rows}\n\n") if rows else ""  # fmt: skip
    return f"## Label diagnostics (before training, base model against the labels)\n\n{table}Findings:\n\n{findings}\n"


@dataclass
class _Frame:
    """One configuration's labels and the base model's predictions, as float64 numpy."""

    name: str
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    energy: float
    forces: np.ndarray | None
    stress: np.ndarray | None  # eV/A^3
    pred_energy: float
    pred_forces: np.ndarray
    pred_stress: np.ndarray | None

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))


def _frames(model: torch.nn.Module, configs: Sequence[Configuration], dtype, device) -> list[_Frame]:
    from .trainer import predict  # the trainer's code path; imported here to keep the import graph one-way

    out = []
    for k in range(0, len(configs), 8):
        chunk = list(configs[k : k + 8])
        with_stress = all(float(c.graph.volumes[0]) > 0 for c in chunk)
        batch = batch_of(chunk, dtype, device)
        pred = predict(model, batch, create_graph=False, with_stress=with_stress)
        offsets = batch.atom_offsets
        for j, c in enumerate(chunk):
            labels = c.graph.labels
            atoms = slice(offsets[j], offsets[j + 1])
            stress = None
            if with_stress:
                stress = (pred["virial"][j] / batch.volumes[j].to(pred["virial"].dtype)).detach().double().cpu().numpy()
            out.append(
                _Frame(
                    name=c.name,
                    numbers=np.asarray(c.numbers),
                    positions=c.graph.positions.numpy(),
                    cell=c.graph.cell[0].numpy(),
                    energy=float(labels.energy[0]),
                    forces=labels.forces.numpy() if bool(labels.force_mask.any()) else None,
                    stress=labels.stress[0].numpy() if bool(labels.stress_mask.any()) else None,
                    pred_energy=float(pred["energy"][j]),
                    pred_forces=pred["forces"][atoms].detach().double().cpu().numpy(),
                    pred_stress=stress,
                )
            )
    return out


def _errors(frames: list[_Frame]) -> dict[str, PropertyErrors]:
    def summarise(values: list[np.ndarray], unit: str) -> PropertyErrors | None:
        if not values:
            return None
        v = np.concatenate([np.ravel(x) for x in values])
        return PropertyErrors(unit, float(v.mean()), float(v.std()), float(np.abs(v).mean()),
                              float(np.sqrt((v**2).mean())), int(v.size))  # fmt: skip

    out = {
        "energy": summarise([np.array([(f.energy - f.pred_energy) / len(f.numbers) * 1e3]) for f in frames],
                            "meV/atom"),  # fmt: skip
        "forces": summarise([(f.forces - f.pred_forces) * 1e3 for f in frames if f.forces is not None], "meV/A"),
        "stress": summarise(
            [(f.stress - f.pred_stress) / GPa for f in frames if f.stress is not None and f.pred_stress is not None],
            "GPa",
        ),
    }
    return {k: v for k, v in out.items() if v is not None}


def _robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """(x - median) / (1.4826 MAD), the MAD floored at ``floor`` (units of ``values``)."""
    median = np.median(values)
    mad = max(1.4826 * float(np.median(np.abs(values - median))), floor)
    return (values - median) / mad


def _energy_residuals(frames: list[_Frame]) -> np.ndarray:
    """Per-atom energy error (label - base, eV/atom) after a least-squares per-element offset
    fit that is refitted once without the frames the first fit calls outliers."""
    elements = sorted({int(z) for f in frames for z in f.numbers})
    counts = np.array([[np.sum(f.numbers == z) for z in elements] for f in frames], dtype=float)
    error = np.array([f.energy - f.pred_energy for f in frames])
    n = counts.sum(1)
    keep = np.ones(len(frames), bool)
    for _ in range(2):
        coef = np.linalg.lstsq(counts[keep], error[keep], rcond=None)[0]
        residual = (error - counts @ coef) / n
        keep = np.abs(_robust_z(residual, 1e-3)) < OUTLIER_Z
        if keep.sum() < len(elements):  # too few left to refit: keep the first fit
            break
    return residual


def _outliers(frames: list[_Frame]) -> list[Finding]:
    found = []
    if len(frames) >= 5:
        residual = _energy_residuals(frames)
        z = _robust_z(residual, 1e-3)
        for f, r, zi in zip(frames, residual, z):
            if abs(zi) > OUTLIER_Z:
                found.append(Finding("outlier", (
                    f"{f.name}: its energy is off by {r * 1e3:+.4g} meV/atom from what the base model and the other "
                    f"frames imply (robust z-score {zi:.3g}); an energy in meV instead of eV, another functional or "
                    "an unconverged calculation? Remove the frame or fix its energy."), [f.name]))  # fmt: skip
    with_forces = [f for f in frames if f.forces is not None]
    if len(with_forces) >= 5:
        rms = np.array([np.sqrt(((f.forces - f.pred_forces) ** 2).mean()) for f in with_forces])
        z = _robust_z(rms, 1e-3)
        for f, r, zi in zip(with_forces, rms, z):
            if zi > OUTLIER_Z and r > 3 * np.median(rms):
                scale = np.sqrt((f.forces**2).mean()) / max(np.sqrt((f.pred_forces**2).mean()), 1e-12)
                found.append(Finding("outlier", (
                    f"{f.name}: its forces differ from the base model's by {r * 1e3:.4g} meV/A RMS (robust z-score "
                    f"{zi:.3g}; the label forces are {scale:.3g} times the base's in size); wrong units or a "
                    "failed calculation? Remove the frame or fix its forces."), [f.name]))  # fmt: skip
    return found


def _stress_offset(frames: list[_Frame]) -> tuple[Finding | None, float | None]:
    pairs = [(f.stress, f.pred_stress) for f in frames if f.stress is not None and f.pred_stress is not None]
    if len(pairs) < 3:
        return None, None
    iso = np.array([np.trace(s - p) / 3 / GPa for s, p in pairs])
    mean, spread = float(iso.mean()), float(iso.std())
    if abs(mean) > OFFSET_SIGMAS * spread and abs(mean) > OFFSET_MIN_GPA:
        ev = mean * GPa
        message = (
            f"the stress labels are offset from the base model by {mean:+.4g} GPa (isotropic part, mean of label - "
            f"base over {len(pairs)} frames) with a spread of only {spread:.3g} GPa: likely Pulay stress (a plane-wave "
            "cutoff too low for stresses), or another smearing or functional. Fitting it would bend the whole "
            "model (forces included) to a constant. Fix: recompute at a higher cutoff, subtract the offset "
            f"({ev:+.5g} eV/A^3 on the diagonal) from the stress labels, or train without stresses (--stress-weight 0)."
        )
        return Finding("stress_offset", message), mean
    return None, None


def _path_gradient(forces: np.ndarray, stress: np.ndarray | None, cell: np.ndarray, ds: np.ndarray,
                   dh: np.ndarray) -> float:  # fmt: skip
    """dE/dt along r(t) = s(t) h(t) at one end (cell ``cell``): -F . (ds h) + V sigma : (h^-1 dh)."""
    value = -float(np.sum(forces * (ds @ cell)))
    if stress is not None:
        value += abs(np.linalg.det(cell)) * float(np.sum(stress * (np.linalg.inv(cell) @ dh)))
    return value


def _pairs(frames: list[_Frame]) -> list[tuple[_Frame, _Frame, np.ndarray, np.ndarray]]:
    """Nearby pairs of frames of the same atoms (at most 3 per frame): (a, b, ds, dh)."""
    groups: dict[bytes, list[_Frame]] = defaultdict(list)
    for f in frames:
        if f.forces is not None and f.volume > 0:
            groups[f.numbers.tobytes()].append(f)
    pairs = []
    for group in groups.values():
        for i, a in enumerate(group):
            inv = np.linalg.inv(a.cell)
            near = []
            for b in group[i + 1 :]:
                ds = b.positions @ np.linalg.inv(b.cell) - a.positions @ inv
                ds -= np.round(ds)
                dh = b.cell - a.cell
                strain = np.abs(inv @ dh).max()
                move = np.linalg.norm(ds @ a.cell, axis=1).max()
                if move < PAIR_MAX_DISPLACEMENT and strain < PAIR_MAX_STRAIN:
                    near.append((move + strain * 10, b, ds, dh))
            for _, b, ds, dh in sorted(near, key=lambda t: t[0])[:3]:
                pairs.append((a, b, ds, dh))
    return pairs[:300]


def _residual(a: _Frame, b: _Frame, ds, dh, energy, forces, stress) -> float:
    """E_b - E_a minus the trapezoid integral of dE/dt, eV (``energy``, ``forces``, ``stress``
    pick labels or predictions)."""
    ga = _path_gradient(forces(a), stress(a), a.cell, ds, dh)
    gb = _path_gradient(forces(b), stress(b), b.cell, ds, dh)
    return energy(b) - energy(a) - 0.5 * (ga + gb)


def _consistency(frames: list[_Frame], stress_offset_ev: float | None) -> list[Finding]:
    pairs = _pairs(frames)
    found = []
    fixed = [(a, b, ds, dh) for a, b, ds, dh in pairs if np.abs(dh).max() < 1e-9]
    strained = [(a, b, ds, dh) for a, b, ds, dh in pairs if np.abs(dh).max() >= 1e-9]

    def label_e(f):
        return f.energy

    def pred_e(f):
        return f.pred_energy

    def label_f(f):
        return f.forces

    def pred_f(f):
        return f.pred_forces

    def pred_s(f):
        return f.pred_stress

    def per_atom_median(values, pairs_):
        return float(np.median([abs(v) / len(a.numbers) for v, (a, *_rest) in zip(values, pairs_)]))

    if len(fixed) >= 3:
        labels = [_residual(a, b, ds, dh, label_e, label_f, pred_s) for a, b, ds, dh in fixed]
        model = [_residual(a, b, ds, dh, pred_e, pred_f, pred_s) for a, b, ds, dh in fixed]
        lab, mod = per_atom_median(labels, fixed), per_atom_median(model, fixed)
        if lab > max(CONSISTENCY_FACTOR * mod, CONSISTENCY_MIN_EV):
            found.append(Finding("inconsistent", (
                f"the energies do not match the forces: over {len(fixed)} pairs of frames with the same cell, "
                f"E_b - E_a differs from the work of the label forces by {lab * 1e3:.3g} meV/atom (median; the base "
                f"model's own path error is {mod * 1e3:.3g}). Energies and forces from different "
                "calculations, or the energy key names another quantity (free vs total energy)? Fix the "
                "labels, or train on forces only (--energy-weight 0).")))  # fmt: skip
    with_stress = [p for p in strained if p[0].stress is not None and p[1].stress is not None]
    if len(with_stress) >= 3:

        def label_s(f):
            return f.stress

        def corrected_s(f):
            return f.stress - stress_offset_ev * np.eye(3)

        labels = [_residual(a, b, ds, dh, label_e, label_f, label_s) for a, b, ds, dh in with_stress]
        model = [_residual(a, b, ds, dh, pred_e, pred_f, pred_s) for a, b, ds, dh in with_stress]
        lab, mod = per_atom_median(labels, with_stress), per_atom_median(model, with_stress)
        if lab > max(CONSISTENCY_FACTOR * mod, CONSISTENCY_MIN_EV):
            extra = ""
            if stress_offset_ev is not None:
                fixed_res = [_residual(a, b, ds, dh, label_e, label_f, corrected_s) for a, b, ds, dh in with_stress]
                left = per_atom_median(fixed_res, with_stress)
                extra = (f" With the stress offset subtracted the mismatch is {left * 1e3:.3g} "
                         "meV/atom: the offset is in the stresses, not in the energies (Pulay stress).")  # fmt: skip
            found.append(Finding("inconsistent", (
                f"the energy-volume slope does not match the stresses: over {len(with_stress)} pairs of strained "
                f"frames, E_b - E_a differs from the work of the label forces and stresses by {lab * 1e3:.3g} meV/atom "
                f"(median; the base model's own path error is {mod * 1e3:.3g}).{extra} Fix: recompute at a higher "
                "cutoff, subtract the offset, or train without stresses (--stress-weight 0).")))  # fmt: skip
    return found


def _fingerprint(c: Configuration) -> tuple:
    cell = c.graph.cell[0].numpy()
    positions = c.graph.positions.numpy()
    frac = positions @ np.linalg.inv(cell) if abs(np.linalg.det(cell)) > 0 else positions
    frac = np.round(frac - np.floor(frac), 6) % 1.0
    return (np.asarray(c.numbers).tobytes(), frac.tobytes(), np.round(cell, 6).tobytes())


def duplicates(train: Sequence[Configuration], valid: Sequence[Configuration]) -> list[Finding]:
    """Frames that occur twice in a set, and validation frames that are also training frames
    (same atoms, positions and cell to 1e-6)."""
    found = []
    seen: dict[tuple, str] = {}
    for name, configs in (("training", train), ("validation", valid)):
        first: dict[tuple, str] = {}
        for c in configs:
            key = _fingerprint(c)
            if key in first:
                found.append(Finding("duplicate", (
                    f"{c.name} repeats {first[key]} in the {name} set: it counts twice in the loss. "
                    "Remove the frame (or give the frames config_weight)."), [c.name, first[key]]))  # fmt: skip
            else:
                first[key] = c.name
        if name == "training":
            seen = first
        else:
            overlap = [(c.name, seen[k]) for k, c in ((_fingerprint(c), c) for c in configs) if k in seen]
            if overlap:
                shown = ", ".join(f"{v} = {t}" for v, t in overlap[:5]) + (", ..." if len(overlap) > 5 else "")
                found.append(Finding("overlap", (
                    f"{len(overlap)} validation frame(s) also in the training set ({shown}): "
                    "the validation errors (and the guard that uses them) would be too optimistic. Remove the frames "
                    "from one of the files."), [v for v, _ in overlap]))  # fmt: skip
    return found


def diagnose(
    model: torch.nn.Module | None,
    train: Sequence[Configuration],
    valid: Sequence[Configuration],
    dtype: torch.dtype,
    device: torch.device | str,
) -> LabelReport:
    """The diagnostics of ``train`` and ``valid`` against the base ``model`` (None: only the
    checks that need no model, duplicates and overlap)."""
    findings = duplicates(train, valid)
    if model is None:
        return LabelReport({}, findings)
    was_training = model.training
    model.eval()
    try:
        train_frames = _frames(model, train, dtype, device)
        valid_frames = _frames(model, valid, dtype, device)
    finally:
        model.train(was_training)
    errors = {"train": _errors(train_frames)}
    if valid_frames:
        errors["valid"] = _errors(valid_frames)
    every = train_frames + valid_frames
    offset_finding, offset = _stress_offset(every)
    if offset_finding is not None:
        findings.insert(0, offset_finding)
    findings += _consistency(every, None if offset is None else offset * GPa)
    findings += _outliers(every)
    return LabelReport(errors, findings, stress_offset_GPa=offset)


def subtract_stress_offset(configs: Sequence[Configuration], offset_GPa: float) -> None:
    """Subtract an isotropic ``offset_GPa`` from the stress labels of ``configs`` (each gets
    new labels; the tensors they were read from are left alone)."""
    for c in configs:
        labels = c.graph.labels
        if bool(labels.stress_mask.any()):
            stress = labels.stress - offset_GPa * GPa * torch.eye(3, dtype=labels.stress.dtype)
            c.graph = c.graph.with_labels(dataclasses.replace(labels, stress=stress))
