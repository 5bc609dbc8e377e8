"""The whole distillation pipeline on a real system, against the goals of issue 21.

    nice python benchmarks/distill.py --system si --minutes 55 --out runs/distill-si
    python benchmarks/distill.py --system si --out runs/distill-si --table-only   # reprint

Teacher: 7net-0-spline (float32). Systems: ``si`` (64-atom diamond Si, MD at 450 and 1000 K,
sampling up to 1500 K; held-out at 450 and 1000 K and, outside the trained range, 1875 K),
``mgo`` (64-atom rock salt MgO, 300 and 1000 K), ``cspbbr3`` (40-atom cubic halide perovskite,
300 and 600 K: a ternary whose octahedra tilt, soft and anharmonic), ``mgo-amorphous`` (the MgO
crystal and a melt-quenched amorphous MgO cell of 64 atoms made by teacher MD, see
:func:`melt_quenched`; phonons, EOS and speed on the crystal). One torch thread (the machine is shared).
A killed run is resumed by the same command. Prints the goal table of issue 21 from
``OUT/report/report.json`` and the learning curve from ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

def cubic_perovskite(a_site: str, b_site: str, anion: str, a: float) -> Atoms:
    """The 5-atom cubic perovskite ABX3 (A at the corner, B at the centre, X at the face centres)."""
    return Atoms([a_site, b_site, anion, anion, anion], scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0),
                 (0.5, 0, 0.5), (0, 0.5, 0.5)], cell=[a, a, a], pbc=True)  # fmt: skip


def melt_quenched(crystal: Atoms, out: Path, melt_k: float = 8000.0, steps: int = 1200, quench_steps: int = 300,
                  seed: int = 7) -> Atoms:
    """An amorphous copy of ``crystal`` from teacher MD (7net-0-spline, float32, one thread):
    Langevin at ``melt_k`` for ``steps`` steps of 1 fs, cooled linearly to 300 K over
    ``quench_steps`` more (a fast quench: a 64-atom cell recrystallises in a slow one) and
    relaxed (positions, FIRE, 300 steps). 64-atom MgO stays solid at 5000 K in this cell (mean
    displacement levels off at 1.3 A and relaxes back to rock salt); at 8000 K it diffuses
    (2.7 A after 1.2 ps) and relaxes to Mg and O of 5-8 neighbours within 2.6 A. Written beside
    the run's folder (``OUT-seed-amorphous.extxyz``: the run refuses a folder holding other
    files) on first use and read back after, so a resumed run sees the very same seed."""
    from ase import units
    from ase.io import read, write
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import FIRE

    from facet_calc import FacetCalculator

    path = out.with_name(out.name + "-seed-amorphous.extxyz")
    if path.is_file():
        return read(path)
    atoms = crystal.copy()
    atoms.calc = FacetCalculator("7net-0-spline", threads=1)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=melt_k, rng=rng)
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=melt_k, friction=0.02 / units.fs, fixcm=False, rng=rng)
    dyn.run(steps)
    stages = max(1, quench_steps // 50)
    for k in range(stages):
        dyn.set_temperature(temperature_K=melt_k + (300.0 - melt_k) * (k + 1) / stages)
        dyn.run(quench_steps // stages)
    FIRE(atoms, logfile=None).run(fmax=0.05, steps=300)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True))
    return read(path)  # the file's numbers, exactly what a resumed run reads


def mgo_crystal() -> Atoms:
    return bulk("MgO", "rocksalt", a=4.21, cubic=True).repeat(2)


SYSTEMS = {
    "si": (lambda: bulk("Si", "diamond", a=5.43, cubic=True).repeat(2), [450.0, 1000.0]),
    "mgo": (mgo_crystal, [300.0, 1000.0]),
    # the cubic (high-temperature) phase, 40 atoms; its PbBr6 octahedra tilt freely in MD
    "cspbbr3": (lambda: cubic_perovskite("Cs", "Pb", "Br", 5.87).repeat(2), [300.0, 600.0]),
    # the oxide as the issue asks: the crystal and a melt-quenched amorphous cell (both 64 atoms)
    "mgo-amorphous": (lambda out: [mgo_crystal(), melt_quenched(mgo_crystal(), out)], [300.0, 1000.0]),
}
INSIDE = "held_out_inside_mean"
GOALS = [  # (figure, value getter, goal, moonshot, unit)
    ("energy MAE (held-out, inside)", lambda r: r[INSIDE]["student_energy_mae_meV_per_atom"], 1.0, 0.3, "meV/atom"),
    ("force MAE (held-out, inside)", lambda r: r[INSIDE]["student_forces_mae_meV_per_A"], 35.0, 15.0, "meV/A"),
    ("phonons at Gamma, max |diff|", lambda r: r["phonons"]["gamma_max_abs_diff_thz"], 0.3, 0.1, "THz"),
    ("phonons at zone boundary, max |diff|", lambda r: r["phonons"]["zone_boundary_max_abs_diff_thz"], 0.3, 0.1,
     "THz"),
    ("V0 |diff|", lambda r: abs(r["eos"]["v0_rel_diff_percent"]), 0.3, 0.1, "%"),
    ("B0 |diff|", lambda r: abs(r["eos"]["b0_rel_diff_percent"]), 3.0, 1.0, "%"),
    ("speed student/teacher at ~1000 atoms (x)", lambda r: r["speed"]["student_speedup_vs_teacher"], 10.0, 20.0, "x"),
    ("committee of 3 / one student per step (x)", lambda r: r["speed"]["committee_cost_vs_student"], 1.6, None, "x"),
    ("Spearman(forces_std, force error)", lambda r: r["calibration"]["spearman_forces_std_vs_error"], 0.5, None, ""),
]
QUICK_REPORT = {"held_frames": 8, "rdf_steps": 200, "speed_repeats": 2}
HIGHER_IS_BETTER = {"speed student/teacher at ~1000 atoms (x)", "Spearman(forces_std, force error)"}


def table(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    report = summary["report"]
    print(f"\n## {out}: goal table (issue 21)\n")
    print("| figure | measured | goal | moonshot | met |")
    print("|---|---|---|---|---|")
    for name, get, goal, moon, unit in GOALS:
        try:
            value = float(get(report))
        except (KeyError, TypeError):
            print(f"| {name} | not measured | {goal} | {moon or ''} | - |")
            continue
        ok = value >= goal if name in HIGHER_IS_BETTER else value <= goal
        print(f"| {name} | {value:.3g} {unit} | {goal} | {moon or ''} | {'yes' if ok else 'MISSED'} |")
    wall = summary.get("timing", {}).get("total_s")  # summed over a killed call and its resumption
    if wall:
        met = "yes" if wall <= 2700 else "MISSED"
        print(f"| pipeline wall time (2 shared cores) | {wall / 60:.1f} min | 45 | 15 | {met} |")
    else:
        print("| pipeline wall time | not recorded | 45 | 15 | - |")
    print("\nheld-out errors by temperature (student; committee mean):")
    for t, v in report.get("held_out", {}).items():
        if v.get("frames"):
            where = "inside " if v["inside_trained_range"] else "outside"
            print(f"  {t:>8} {where}: E {v['student_energy_mae_meV_per_atom']:.3g} meV/atom, F "
                  f"{v['student_forces_mae_meV_per_A']:.3g} meV/A; committee E "
                  f"{v['committee_energy_mae_meV_per_atom']:.3g}, F {v['committee_forces_mae_meV_per_A']:.3g}")
    print("\nlearning curve (validation, committee mean):")
    for row in summary["learning_curve"]:
        e = row.get("committee_energy_mae_meV_per_atom", float("nan"))
        f = row.get("committee_forces_mae_meV_per_A", float("nan"))
        members = [round(v, 1) for v in row.get("member_forces_mae_meV_per_A", [])]
        print(f"  {row['round']}: {row['n_train']} frames, E {e:.3g} meV/atom, F {f:.3g} meV/A, members F {members}")
    for k in range(16):
        log = out / "students" / "round-0" / f"member-{k}" / "log.csv"
        if log.is_file():
            lines = log.read_text().splitlines()
            head = lines[0].split(",")
            names = ("epoch", "valid_energy_mae_meV_per_atom", "valid_forces_mae_meV_per_A")
            cols = [head.index(c) for c in names if c in head]
            rows = "; ".join(",".join(f"{float(line.split(',')[c]):.3g}" for c in cols) for line in lines[1:])
            print(f"  member {k} (epoch, valid E meV/atom, valid F meV/A): {rows}")
    print(f"\nspeed: {report.get('speed')}")
    print(f"sampling: {summary['sampling']}")
    print(f"active learning: {summary['active']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="si")
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--committee", type=int, default=3)
    parser.add_argument("--size", default="small")
    parser.add_argument("--out", default=None)
    parser.add_argument("--table-only", action="store_true")
    # counts that the budget would otherwise size (fixing them makes runs comparable)
    parser.add_argument("--md-frames", type=int, default=None)
    parser.add_argument("--md-interval", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--active-epochs", type=int, default=None)
    parser.add_argument("--active-frames", type=int, default=None)
    parser.add_argument("--active-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-temperature-factor", type=float, default=1.5,
                        help="sampling adds this x the highest temperature (1: none added)")
    parser.add_argument("--workers", type=int, default=None, help="students trained at once (default: min(K, cores))")
    parser.add_argument("--quick-report", action="store_true", help="fewer held-out frames and RDF steps")
    args = parser.parse_args()
    out = Path(args.out or f"runs/distill-{args.system}")
    if not args.table_only:
        torch.set_num_threads(1)
        from facet_calc.distill import distill

        build, temperatures = SYSTEMS[args.system]
        seeds = build(out) if build.__code__.co_argcount else build()
        sampling = {"md_interval": args.md_interval} if args.md_interval else None
        distill("7net-0-spline", seeds, out, minutes=args.minutes, temperatures=temperatures, size=args.size,
                committee=args.committee, seed=0, md_frames=args.md_frames, epochs=args.epochs,
                active_epochs=args.active_epochs, active_frames=args.active_frames, active_steps=args.active_steps,
                sampling=sampling, max_temperature_factor=args.max_temperature_factor,
                batch_size=args.batch_size, workers=args.workers,
                report=QUICK_REPORT if args.quick_report else True)  # fmt: skip
    table(out)


if __name__ == "__main__":
    main()
