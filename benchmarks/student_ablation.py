"""Ablations of the students: the residual norm and the per-atom-energy target, measured by how
fast a student learns and whether it is smooth at a symmetric site.

    nice python benchmarks/student_ablation.py --run runs/distill-si --epochs 26 --variants joint layer none
    nice python benchmarks/student_ablation.py --run runs/distill-si --epochs 26 --variants joint joint,ae=0

A variant is a residual norm (``joint``, ``layer``, ``none``), optionally with ``,ae=W``: the
weight of the teacher's per-atom energies in the loss (default: the run's, 0.1; 0 drops them),
``,cut=R``: the student's cutoff in A (default: the run's; the convolution's neighbour count
is then recounted on the training frames), and ``,near=W``: the loss weight of the frames near
equilibrium (origin ``near``; default 1, as every frame). After training, each student's
phonons (Gamma and zone boundary) are compared with the teacher's as the distill report does.
Trains one ``small`` student (seed 0, the settings of ``distill``'s member 0) per variant on the
training frames of a finished ``benchmarks/distill.py`` run (``RUN/data/train.extxyz``,
validated on ``RUN/data/valid.extxyz``), side by side in worker processes of one torch thread.
It prints each variant's validation errors per epoch, then the trained student's
restoring force constant on one atom of perfect diamond Si displaced by 1e-4 ... 1e-2 A: a smooth
energy gives the same constant at every displacement, a cusp a constant that grows as the
displacement shrinks. Silicon only (the check's crystal); the run's cutoff and neighbour count.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

DISPLACEMENTS = (1e-4, 1e-3, 3e-3, 1e-2)


def train_one(run: Path, variant: str, epochs: int, out: Path) -> dict:
    from ase.build import bulk
    from ase.io import read

    from facet_calc import FacetCalculator
    from facet_calc.distill.pipeline import _configs
    from facet_calc.distill.students import (
        SIZES,
        MemberJob,
        load_weights,
        mean_neighbours,
        new_student,
        run_job,
        student_config,
    )
    from facet_calc.potential import Potential
    from facet_calc.train import LossWeights, TrainSettings

    torch.set_num_threads(1)
    norm, *extra = variant.split(",")
    near_weight = 1.0
    options = json.loads((run / "run.json").read_text())
    atom_energy = float(options["atom_energy_weight"])
    cutoff = float(options["cutoff_A"])
    for item in extra:
        key, _, value = item.partition("=")
        if key not in ("ae", "cut", "near"):
            raise SystemExit(f"unknown variant option {item!r} (ae=W, cut=R or near=W)")
        if key == "ae":
            atom_energy = float(value)
        elif key == "cut":
            cutoff = float(value)
        else:
            near_weight = float(value)
    plan = json.loads((run / "plan.json").read_text())
    frames = read(run / "data" / "train.extxyz", ":")
    for atoms in frames:
        if atoms.info.get("origin") == "near":
            atoms.info["config_weight"] = near_weight
    train = _configs(frames, [14], cutoff)
    valid = _configs(read(run / "data" / "valid.extxyz", ":"), [14], cutoff)
    neighbours = plan["avg_num_neighbors"] if cutoff == float(options["cutoff_A"]) else mean_neighbours(train)
    config = student_config([14], {**SIZES["small"], "residual_norm": norm}, cutoff, neighbours)
    loss = LossWeights(energy=1.0, forces=1.0, stress=1.0, atom_energy=atom_energy)
    settings = TrainSettings(epochs=epochs, batch_size=int(options["batch_size"]), lr=float(options["lr"]), seed=0,
                             loss=loss, guard=False, warmup_epochs=min(1.0, epochs / 4))  # fmt: skip
    job = MemberJob(config, 0, train, valid, settings, out / variant.replace(",", "_").replace("=", ""))
    Path(job.folder).mkdir(parents=True, exist_ok=True)
    history = run_job(job, 1)
    model, _ = new_student(config, 0, train, "float64")
    load_weights(job.final, model)
    calc = FacetCalculator(Potential("student", config, model.requires_grad_(False).eval(), None))
    constants = []
    for d in DISPLACEMENTS:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
        atoms.positions[0, 0] += d
        atoms.calc = calc
        constants.append(float(-atoms.get_forces()[0, 0] / d))
    from facet_calc.distill.report import _phonons_and_eos
    from facet_calc.distill.teacher import resolve_teacher

    teacher = resolve_teacher(options["teacher"], "cpu")
    phonon_options = {"phonons": True, "eos": False, "supercell_length": 9.0}
    ph = _phonons_and_eos(calc, teacher, bulk("Si", "diamond", a=5.43), phonon_options)["phonons"]
    return {"variant": variant, "constants": constants, "gamma_thz": ph["gamma_max_abs_diff_thz"],
            "zone_boundary_thz": ph["zone_boundary_max_abs_diff_thz"], "config": config, "weights": str(job.final),
            "valid_forces": [h["valid_forces_mae_meV_per_A"] for h in history],
            "valid_energy": [h["valid_energy_mae_meV_per_atom"] for h in history]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished distill run of Si (its data/)")
    parser.add_argument("--epochs", type=int, default=26)
    parser.add_argument("--variants", nargs="+", default=["joint", "layer", "none"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/student-ablation"))
    args = parser.parse_args()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(train_one, *zip(*[(args.run, v, args.epochs, args.out) for v in args.variants])))
    print("validation force MAE (meV/A) | energy MAE (meV/atom) by epoch:")
    print("epoch " + " ".join(f"{r['variant']:>17}" for r in results))
    for epoch in range(args.epochs):
        print(f"{epoch + 1:5d} " + " ".join(f"{r['valid_forces'][epoch]:8.1f} | {r['valid_energy'][epoch]:6.2f}"
                                            for r in results))  # fmt: skip
    print("restoring force constant on one atom of perfect diamond Si (eV/A^2) by displacement (A):")
    print(f"{'variant':17s} " + " ".join(f"{d:>9g}" for d in DISPLACEMENTS))
    for r in results:
        print(f"{r['variant']:17s} " + " ".join(f"{k:9.3f}" for k in r["constants"]))
    print("phonons, max |student - teacher| (THz): Gamma, zone boundary")
    for r in results:
        print(f"{r['variant']:17s} {r['gamma_thz']:9.3f} {r['zone_boundary_thz']:9.3f}")
    print("seconds per force call of the float32 student, 1024 Si atoms, one thread (medians, alternated):")
    for r, seconds in zip(results, step_seconds(results)):
        r["seconds_1024"] = seconds
        print(f"{r['variant']:17s} {seconds * 1e3:8.1f} ms")
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))


def step_seconds(results: list[dict], rounds: int = 5) -> list[float]:
    """Median seconds per ``get_forces`` of each trained variant at 1024 Si atoms, alternated."""
    import time

    import numpy as np
    from ase.build import bulk

    from facet_calc import FacetCalculator
    from facet_calc.distill.students import load_weights
    from facet_calc.nn import build_model
    from facet_calc.potential import Potential

    torch.set_num_threads(1)
    calcs = []
    for r in results:
        model = build_model(r["config"], torch.float32)
        load_weights(Path(r["weights"]), model)
        potential = Potential(r["variant"], r["config"], model.requires_grad_(False), None)
        calcs.append(FacetCalculator(potential, threads=1))
    big = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 4, 8))
    rng = np.random.default_rng(0)
    times: list[list[float]] = [[] for _ in calcs]
    for round_ in range(rounds + 1):
        for k, calc in enumerate(calcs):
            atoms = big.copy()
            atoms.positions += rng.normal(0, 0.01, atoms.positions.shape)
            atoms.calc = calc
            start = time.perf_counter()
            atoms.get_forces()
            if round_:
                times[k].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


if __name__ == "__main__":
    main()
