"""The report of a distillation: the student measured against the teacher, written as
``report.json`` and PNGs (matplotlib ``Figure`` objects: the global backend is never touched).

* errors on held-out teacher MD (its own seeds) at the asked temperatures (inside the trained
  range) and at 1.25x the highest sampled one (outside it): energy MAE (meV/atom) and force
  MAE (meV/A) of the best student and of the committee mean;
* calibration: Spearman rank correlation of the committee's per-atom ``forces_std`` with the
  committee mean's per-atom force error against the teacher, over the held-out frames;
* phonons (crystals): frequencies at Gamma and at the special points of the band path
  (zone boundary), each potential at its own relaxed cell; EOS ``V0``, ``B0``;
* RDF (and mean squared displacement) from short student and teacher MD at the middle
  temperature;
* speed: seconds per step, student / teacher and committee / one student, at about
  ``speed_atoms`` atoms, one thread, alternated in the same run (medians).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.neighborlist import neighbor_list

from ..workflows.md import thermalize_momenta
from .teacher import KEYS, Teacher, label

DEFAULTS = {
    "held_frames": 12,  # held-out frames per temperature
    "held_interval": 10,  # MD steps between them
    "outside_factor": 1.25,  # the temperature outside the trained range: x the highest sampled
    "rdf_steps": 300,
    "rdf_rmax": 6.0,
    "speed_atoms": 1000,
    "speed_repeats": 3,
    "phonons": True,
    "eos": True,
    "supercell_length": 9.0,  # phonon supercell edges at least this long (A)
    "timestep_fs": 1.5,
}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties): Pearson's r of the ranks."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def teacher_md(structure: Atoms, calc, temperature: float, frames: int, interval: int, seed: int,
               timestep_fs: float) -> list[Atoms]:  # fmt: skip
    """Frames of Langevin MD of ``calc`` (seeded), every ``interval`` steps."""
    rng = np.random.default_rng(seed)
    atoms = structure.copy()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                   fixcm=False, rng=rng)  # fmt: skip
    out = []
    for _ in range(frames):
        try:
            dyn.run(interval)
        except Exception:  # the run exploded: the frames before it are the data
            break
        frame = atoms.copy()
        frame.calc = None
        out.append(frame)
    return out


def held_out_errors(student, committee, teacher: Teacher, frames: list[Atoms]) -> dict[str, Any]:
    """Student and committee errors against the teacher on ``frames``, and the per-atom
    (spread, error) pairs of the committee."""
    e_s, f_s, e_c, f_c, spread, error = [], [], [], [], [], []
    for atoms in frames:
        ref, why = label(atoms, teacher)
        if ref is None:
            continue
        n = len(atoms)
        fs = student.get_forces(atoms)
        es = student.get_potential_energy(atoms)
        com = committee.calculate_many([atoms], ["energy", "forces"])[0]
        f_ref, e_ref = ref.arrays[KEYS.forces], ref.info[KEYS.energy]
        e_s.append(abs(es - e_ref) / n * 1e3)
        f_s.append(np.abs(fs - f_ref).ravel() * 1e3)
        e_c.append(abs(com["energy"] - e_ref) / n * 1e3)
        f_c.append(np.abs(com["forces"] - f_ref).ravel() * 1e3)
        spread.append(com["forces_std"])
        error.append(np.linalg.norm(com["forces"] - f_ref, axis=1))
    if not e_s:
        return {"frames": 0}
    return {
        "frames": len(e_s),
        "student_energy_mae_meV_per_atom": float(np.mean(e_s)),
        "student_forces_mae_meV_per_A": float(np.mean(np.concatenate(f_s))),
        "committee_energy_mae_meV_per_atom": float(np.mean(e_c)),
        "committee_forces_mae_meV_per_A": float(np.mean(np.concatenate(f_c))),
        "_spread": np.concatenate(spread),
        "_error": np.concatenate(error),
    }


def rdf(frames: Sequence[Atoms], rmax: float, bins: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) (all pairs) averaged over ``frames``."""
    edges = np.linspace(0, rmax, bins + 1)
    hist = np.zeros(bins)
    for atoms in frames:
        d = neighbor_list("d", atoms, rmax)
        hist += np.histogram(d, edges)[0]
    atoms = frames[0]
    n, volume = len(atoms), atoms.get_volume()
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = hist / len(frames) / n / (shell * n / volume)
    return 0.5 * (edges[1:] + edges[:-1]), g


def msd(frames: Sequence[Atoms]) -> float:
    """Mean squared displacement (A^2) between the first and last frame (positions unwrapped)."""
    return float(np.mean(np.sum((frames[-1].positions - frames[0].positions) ** 2, axis=1)))


def _supercell_for(atoms: Atoms, length: float) -> Atoms:
    lengths = atoms.cell.lengths()
    reps = [max(1, int(np.ceil(length / l))) for l in lengths]
    return atoms.repeat(reps)


def repeats_for(atoms: Atoms, n_atoms: int, most: int = 8) -> tuple[int, int, int]:
    """The repeats of ``atoms`` whose atom count is nearest ``n_atoms`` (ties: the most cubic)."""
    lengths = atoms.cell.lengths() if atoms.cell.rank == 3 else np.ones(3)
    best = None
    for a in range(1, most + 1):
        for b in range(1, most + 1):
            for c in range(1, most + 1):
                edges = lengths * (a, b, c)
                key = (abs(len(atoms) * a * b * c - n_atoms), edges.max() / edges.min())
                if best is None or key < best[0]:
                    best = (key, (a, b, c))
    return best[1]


def speed(student, committee, teacher: Teacher, structure: Atoms, n_atoms: int, repeats: int) -> dict[str, Any]:
    """Seconds per force call at about ``n_atoms`` atoms, one thread, alternated: teacher,
    student, committee; medians and ratios."""
    big = structure.repeat(repeats_for(structure, n_atoms))
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"teacher": [], "student": [], "committee": []}
    calcs = {"teacher": teacher.calc, "student": student, "committee": committee}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in range(repeats + 1):
            for name, calc in calcs.items():
                atoms = big.copy()
                atoms.positions += rng.normal(0, 0.01, atoms.positions.shape)
                atoms.calc = calc
                start = time.perf_counter()
                atoms.get_forces()
                if r > 0:  # the first round warms up (kernels, caches)
                    times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "n_atoms": len(big), "seconds_per_step": med,
        "student_speedup_vs_teacher": med["teacher"] / med["student"],
        "committee_cost_vs_student": med["committee"] / med["student"],
        "committee_members": len(committee.potential.members),
    }


def _phonons_and_eos(student, teacher: Teacher, structure: Atoms, options: dict) -> dict[str, Any]:
    import warnings

    from ..workflows import eos as run_eos
    from ..workflows import phonons as run_phonons
    from ..workflows.phonons import primitive_cell

    out: dict[str, Any] = {}
    prim = primitive_cell(structure)
    supercell = tuple(max(1, int(np.ceil(options["supercell_length"] / l))) for l in prim.cell.lengths())
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # relaxed first; the workflow's advice is for users
        for name, calc in (("teacher", teacher.calc), ("student", student)):
            entry: dict[str, Any] = {}
            if options["phonons"]:
                ph = run_phonons(prim, calc, supercell=supercell, progress=False, relax_first=True, mesh=(8, 8, 8))
                special = sorted({i for a, b in ph.band_segments for i in (a, b - 1)})
                entry["phonons"] = ph
                entry["gamma_thz"] = np.asarray(ph.gamma_frequencies_thz)
                entry["special_thz"] = ph.band_frequencies_thz[special]
            if options["eos"]:
                e = run_eos(prim, calc, progress=False, relax_first=True)
                entry["v0_per_atom_a3"], entry["b0_gpa"] = e.v0_per_atom_a3, e.b0_gpa
            results[name] = entry
    t, s = results["teacher"], results["student"]
    if options["phonons"]:
        out["phonons"] = {
            "supercell": list(supercell),
            "gamma_thz": {"teacher": t["gamma_thz"].tolist(), "student": s["gamma_thz"].tolist()},
            "gamma_max_abs_diff_thz": float(np.abs(t["gamma_thz"] - s["gamma_thz"]).max()),
            "zone_boundary_max_abs_diff_thz": float(np.abs(t["special_thz"] - s["special_thz"]).max()),
            "band_labels": [lab for _, lab in t["phonons"].band_labels],
        }
        out["_bands"] = (t["phonons"], s["phonons"])
    if options["eos"]:
        out["eos"] = {
            "v0_per_atom_a3": {"teacher": t["v0_per_atom_a3"], "student": s["v0_per_atom_a3"]},
            "b0_gpa": {"teacher": t["b0_gpa"], "student": s["b0_gpa"]},
            "v0_rel_diff_percent": 100 * (s["v0_per_atom_a3"] / t["v0_per_atom_a3"] - 1),
            "b0_rel_diff_percent": 100 * (s["b0_gpa"] / t["b0_gpa"] - 1),
        }
    return out


def make_report(
    folder: Path, student, committee, teacher: Teacher, seeds: Sequence[Atoms], temperatures: Sequence[float],
    sampled: Sequence[float], seed: int, options: dict | None = None, progress: bool = True,
    timed: tuple | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measure the student against the teacher and write ``folder/report.json`` and PNGs.
    ``timed``: the ``(student, committee)`` calculators to time (default: those given), e.g.
    float32 copies when the teacher is timed in float32."""
    options = {**DEFAULTS, **(options or {})}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"options": options, "timings_s": {}}
    clock = time.perf_counter()
    # held-out teacher MD: inside the trained range, and outside it
    outside = round(max(sampled) * options["outside_factor"], 1)
    held: dict[str, Any] = {}
    all_spread, all_error = [], []
    for t_index, temperature in enumerate([*temperatures, outside]):
        frames = []
        for s, structure in enumerate(seeds):
            frames += teacher_md(structure, teacher.calc, temperature, options["held_frames"],
                                 options["held_interval"], seed + 10_000 + 100 * t_index + s,
                                 options["timestep_fs"])  # fmt: skip
        errors = held_out_errors(student, committee, teacher, frames)
        if errors.get("frames"):
            all_spread.append(errors.pop("_spread"))
            all_error.append(errors.pop("_error"))
        errors["inside_trained_range"] = temperature <= max(sampled)
        held[f"{temperature:g}K"] = errors
    report["held_out"] = held
    inside = [v for v in held.values() if v.get("inside_trained_range") and v.get("frames")]
    if inside:
        report["held_out_inside_mean"] = {
            k: float(np.mean([v[k] for v in inside]))
            for k in ("student_energy_mae_meV_per_atom", "student_forces_mae_meV_per_A",
                      "committee_energy_mae_meV_per_atom", "committee_forces_mae_meV_per_A")
        }  # fmt: skip
    if all_spread:
        spread, error = np.concatenate(all_spread), np.concatenate(all_error)
        report["calibration"] = {"spearman_forces_std_vs_error": spearman(spread, error), "atoms": len(spread),
                                 "mean_forces_std_eV_per_A": float(spread.mean()),
                                 "mean_force_error_eV_per_A": float(error.mean())}  # fmt: skip
    report["timings_s"]["held_out"] = time.perf_counter() - clock
    # phonons and EOS
    periodic = seeds[0].cell.rank == 3 and seeds[0].pbc.all()
    bands = None
    if periodic and (options["phonons"] or options["eos"]):
        clock = time.perf_counter()
        try:
            extra = _phonons_and_eos(student, teacher, seeds[0], options)
            bands = extra.pop("_bands", None)
            report.update(extra)
        except Exception as err:  # a crystal the workflows refuse: say so, keep the rest
            report["phonons_eos_error"] = f"{type(err).__name__}: {err}"
        report["timings_s"]["phonons_eos"] = time.perf_counter() - clock
    # RDF and MSD from short student and teacher MD
    clock = time.perf_counter()
    middle = float(sorted(temperatures)[len(temperatures) // 2])
    steps = options["rdf_steps"]
    trajectories = {}
    for name, calc in (("teacher", teacher.calc), ("student", student)):
        trajectories[name] = teacher_md(seeds[0], calc, middle, max(2, steps // 10), 10, seed + 20_000,
                                        options["timestep_fs"])  # fmt: skip
    rdfs = {k: rdf(v[len(v) // 2 :], options["rdf_rmax"]) for k, v in trajectories.items() if len(v) >= 2}
    if len(rdfs) == 2:
        r, g_t = rdfs["teacher"]
        g_s = rdfs["student"][1]
        report["rdf"] = {"temperature_K": middle, "steps": steps,
                         "max_abs_diff": float(np.abs(g_t - g_s).max()),
                         "mean_abs_diff": float(np.abs(g_t - g_s).mean()),
                         "msd_A2": {k: msd(v) for k, v in trajectories.items()}}  # fmt: skip
    report["timings_s"]["rdf"] = time.perf_counter() - clock
    # speed
    clock = time.perf_counter()
    timed_student, timed_committee = timed or (student, committee)
    report["speed"] = speed(timed_student, timed_committee, teacher, seeds[0], options["speed_atoms"],
                            options["speed_repeats"])  # fmt: skip
    report["speed"]["dtype"] = str(timed_student.potential.dtype).removeprefix("torch.")
    report["timings_s"]["speed"] = time.perf_counter() - clock
    _write(folder, report)
    _plots(folder, report, rdfs, bands, all_spread, all_error)
    if progress:
        print(f"[distill] report written to {folder}", flush=True)
    return report


def _write(folder: Path, report: dict) -> None:
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not k.startswith("_")}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        return v

    (folder / "report.json").write_text(json.dumps(clean(report), indent=1) + "\n")


def _plots(folder: Path, report: dict, rdfs: dict, bands, spread, error) -> None:
    from matplotlib.figure import Figure

    held = report["held_out"]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    names = list(held)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [held[n].get("student_forces_mae_meV_per_A", np.nan) for n in names], 0.4, label="student")
    ax.bar(x + 0.2, [held[n].get("committee_forces_mae_meV_per_A", np.nan) for n in names], 0.4, label="committee")
    ax.set_xticks(x, [n + ("" if held[n]["inside_trained_range"] else "\n(outside)") for n in names])
    ax.set_ylabel("force MAE vs teacher (meV/Å)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "errors_vs_temperature.png", dpi=120)
    if spread:
        fig = Figure(figsize=(5, 4))
        ax = fig.subplots()
        ax.scatter(np.concatenate(spread), np.concatenate(error), s=3, alpha=0.4)
        ax.set_xlabel("committee forces_std (eV/Å)")
        ax.set_ylabel("|F_committee - F_teacher| (eV/Å)")
        rho = report.get("calibration", {}).get("spearman_forces_std_vs_error", float("nan"))
        ax.set_title(f"Spearman {rho:.2f}")
        fig.tight_layout()
        fig.savefig(folder / "uncertainty_calibration.png", dpi=120)
    if len(rdfs) == 2:
        fig = Figure(figsize=(5, 4))
        ax = fig.subplots()
        for name, (r, g) in rdfs.items():
            ax.plot(r, g, label=name)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "rdf.png", dpi=120)
    if bands is not None:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for ph, style, name in ((bands[0], "-", "teacher"), (bands[1], "--", "student")):
            for j, col in enumerate(ph.band_frequencies_thz.T):
                ax.plot(ph.band_distances, col, style, color="C0" if name == "teacher" else "C1",
                        lw=1, label=name if j == 0 else None)  # fmt: skip
        ticks = bands[0].band_labels
        ax.set_xticks([d for d, _ in ticks], [lab for _, lab in ticks])
        ax.set_ylabel("frequency (THz)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "phonons.png", dpi=120)
