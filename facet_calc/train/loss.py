"""The training loss and the error metrics, from a batch and the model's predictions.

Loss = w_E * <c (dE / n_atoms / s_E)^2> + w_F * <c |dF / s_F|^2 / 3> + w_S * <c |dS / s_S|^2 / 9>
(+ w_e * <c (de_i / s_E)^2> over atoms with per-atom energy labels, a teacher's, when w_e > 0),
averaged over structures (energy, stress) and atoms (forces), each term weighted by the
configuration weight ``c``; with ``kind="huber"`` each squared error is replaced by the Huber
function (quadratic within ``delta`` of zero, linear beyond it). Units inside the loss: eV/atom,
eV/A and GPa.

Balanced (the default, ``balance=True``): each property's error is divided by a scale ``s``
measured on the training data before the first epoch (the starting model's RMS error on that
property, :func:`balance_scales`), so every term starts near ``w`` whatever its units, and no
term swamps the others by units alone (issue 23: a stress term weighted 0.1 per GPa^2 with a
30 GPa label offset drowned the forces). Unbalanced, ``s = 1``: the weights carry the units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ase.units import GPa

from ..graph import AtomicGraph

#: the smallest scale a balanced term is divided by (eV/atom, eV/A, GPa): labels that the
#: starting model already matches to within these are not blown up into a dominant term
SCALE_FLOORS = {"energy": 1e-3, "forces": 1e-2, "stress": 0.1}


@dataclass(frozen=True)
class LossWeights:
    """Weights of the energy, force and stress terms. ``balance=True``: dimensionless, each
    term divided by its scale from the data (see the module docstring); ``balance=False``: per
    (eV/atom)^2, (eV/A)^2 and GPa^2 (the old defaults were 1, 1, 0.1). ``huber_delta``: where
    the Huber function turns linear, in units of each scale when balanced, else in eV/atom,
    eV/A and GPa; None: 1.0 balanced, 0.01 unbalanced."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0
    #: per-atom energies (a teacher's, in distillation): divided by the energy scale; 0: unused
    atom_energy: float = 0.0
    #: "mse" by default, measured (benchmarks/finetune_offset.py, EMT Cu + 30 GPa stress offset,
    #: held-out forces / energies): with the new defaults (offset subtracted, guard) MSE 80.0 meV/A /
    #: 1.77 meV/atom against Huber's 81.1 / 3.29; Huber is better only with the offset kept in the
    #: labels (74.3 / 1.87 against 77.7 / 2.74)
    kind: str = "mse"  # or "huber"
    huber_delta: float | None = None
    balance: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("mse", "huber"):
            raise ValueError(f"loss kind must be 'mse' or 'huber', got {self.kind!r}")
        if min(self.energy, self.forces, self.stress) < 0:
            raise ValueError("loss weights must be >= 0")
        if not self.atom_energy >= 0:
            raise ValueError("loss weights must be >= 0")
        if self.huber_delta is not None and not self.huber_delta > 0:
            raise ValueError(f"huber_delta must be > 0 or None, got {self.huber_delta}")

    @property
    def delta(self) -> float:
        if self.huber_delta is not None:
            return self.huber_delta
        return 1.0 if self.balance else 0.01


def predicted_stress(virial: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Stress (n, 3, 3) in eV/A^3, ASE sign, from virials dE/d(strain) (n, 3, 3)."""
    return virial / volume[:, None, None]


def _penalty(diff: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    if weights.kind == "mse":
        return diff.square()
    return torch.nn.functional.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=weights.delta)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    total = weight.sum()
    return (values * weight).sum() / total if total > 0 else values.sum() * 0.0


def _volumes(batch: AtomicGraph) -> torch.Tensor:
    """``(n_graphs,)`` volumes in the labels' dtype (1 where there is no cell: no stress there)."""
    v = batch.volumes.to(batch.labels.energy.dtype)
    return torch.where(v > 0, v, torch.ones_like(v))


def loss_terms(
    pred: dict[str, torch.Tensor], batch: AtomicGraph, weights: LossWeights, scales: dict[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """The weighted loss and its three terms (each a 0-d tensor); ``scales`` (eV/atom, eV/A,
    GPa) divide each property's errors (None: 1, the unbalanced loss)."""
    scales = scales or {}
    labels = batch.labels
    c = labels.weight
    de = (pred["energy"] - labels.energy) / batch.counts / scales.get("energy", 1.0)
    terms = {"energy": _weighted_mean(_penalty(de, weights), c)}
    c_atoms = c[batch.batch] * labels.force_mask
    df = (pred["forces"] - labels.forces) / scales.get("forces", 1.0)
    terms["forces"] = _weighted_mean(_penalty(df, weights).mean(dim=1), c_atoms)
    if pred.get("virial") is not None and bool(labels.stress_mask.any()):
        ds = (predicted_stress(pred["virial"], _volumes(batch)) - labels.stress) / GPa / scales.get("stress", 1.0)
        terms["stress"] = _weighted_mean(_penalty(ds, weights).mean(dim=(1, 2)), c * labels.stress_mask)
    else:
        terms["stress"] = de.sum() * 0.0
    terms["total"] = (
        weights.energy * terms["energy"] + weights.forces * terms["forces"] + weights.stress * terms["stress"]
    )
    if weights.atom_energy > 0 and pred.get("energies") is not None and bool(labels.atom_energy_mask.any()):
        dei = (pred["energies"] - labels.atom_energies) / scales.get("energy", 1.0)
        terms["atom_energy"] = _weighted_mean(_penalty(dei, weights), c[batch.batch] * labels.atom_energy_mask)
        terms["total"] = terms["total"] + weights.atom_energy * terms["atom_energy"]
    return terms


def balance_scales(metrics: dict[str, float]) -> dict[str, float]:
    """The balanced loss's scales (eV/atom, eV/A, GPa) from a :meth:`Metrics.summary` of the
    starting model on the training set: each property's RMS error, floored at
    :data:`SCALE_FLOORS`."""
    units = {"energy": ("energy_rmse_meV_per_atom", 1e-3), "forces": ("forces_rmse_meV_per_A", 1e-3),
             "stress": ("stress_rmse_GPa", 1.0)}  # fmt: skip
    scales = {}
    for key, (name, factor) in units.items():
        value = metrics.get(name)
        scales[key] = max(SCALE_FLOORS[key], value * factor) if value is not None else 1.0
    return scales


class Metrics:
    """Running MAE and RMSE of energy (meV/atom), forces (meV/A) and stress (GPa)."""

    def __init__(self) -> None:
        self.sums = {k: [0.0, 0.0, 0] for k in ("energy", "forces", "stress")}
        self.loss_sum, self.loss_count = 0.0, 0

    def update(self, pred: dict[str, torch.Tensor], batch: AtomicGraph, loss: float) -> None:
        labels = batch.labels
        de = ((pred["energy"] - labels.energy) / batch.counts * 1e3).detach()
        self._add("energy", de)
        df = (pred["forces"] - labels.forces)[labels.force_mask].detach() * 1e3
        self._add("forces", df.reshape(-1))
        if pred.get("virial") is not None and bool(labels.stress_mask.any()):
            ds = (predicted_stress(pred["virial"], _volumes(batch)) - labels.stress)[labels.stress_mask] / GPa
            self._add("stress", ds.detach().reshape(-1))
        self.loss_sum += loss * batch.n_graphs
        self.loss_count += batch.n_graphs

    def _add(self, key: str, diff: torch.Tensor) -> None:
        s = self.sums[key]
        s[0] += float(diff.abs().sum())
        s[1] += float(diff.double().square().sum())
        s[2] += diff.numel()

    def summary(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}loss": self.loss_sum / max(self.loss_count, 1)}
        units = {"energy": "meV_per_atom", "forces": "meV_per_A", "stress": "GPa"}
        for key, (abs_sum, sq_sum, n) in self.sums.items():
            if n:
                out[f"{prefix}{key}_mae_{units[key]}"] = abs_sum / n
                out[f"{prefix}{key}_rmse_{units[key]}"] = (sq_sum / n) ** 0.5
        return out
