"""Measure a distilled student (facet-s-7net0) for its card: every figure the card quotes.

    python models/facet-s-7net0/evaluate.py --student potentials/facet-s-7net0 \
        --test models/facet-s-7net0/data/test.extxyz --out models/facet-s-7net0/figures.json

1. Against the teacher on the held-out test set (structures training never saw): energy,
   force and stress mean absolute errors, overall, per configuration type and per element.
2. The Delta test: V0 and B0 of the 71 elemental crystals of ``ase.collections.dcdft``
   (relaxed, then ``facet_calc.workflows.eos``) against WIEN2k all-electron PBE, for the
   student and the teacher, as mean absolute relative errors.
3. Rotation: the energy change of test structures under random rotations (the spherical-grid
   mixer is equivariant only to the grid's resolution).
4. Size: parameters and matrix-product FLOPs per atom of one energy + forces evaluation
   (the torch profiler's count on the plain torch path, 216-atom Si), student and teacher.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from ase.io import read
from ase.units import GPa

from facet_calc import FacetCalculator, load_potential


def held_out_errors(student, frames) -> dict:
    """MAE of energy (meV/atom), forces (meV/A) and stress (GPa) against the REF_* labels."""
    de, df, ds = [], [], []
    by_type: dict[str, list] = defaultdict(lambda: [[], []])
    by_element: dict[str, list] = defaultdict(list)
    for atoms in frames:
        ref_e, ref_f = atoms.info["REF_energy"], atoms.arrays["REF_forces"]
        ref_s = atoms.info.get("REF_stress")
        probe = atoms.copy()
        probe.calc = student
        e = probe.get_potential_energy()
        f = probe.get_forces()
        de.append(abs(e - ref_e) / len(atoms) * 1e3)
        errors_f = np.abs(f - ref_f) * 1e3
        df.append(errors_f.ravel())
        kind = atoms.info.get("config_type", "?")
        by_type[kind][0].append(de[-1])
        by_type[kind][1].append(errors_f.mean())
        for z in set(atoms.numbers):
            by_element[chemical_symbols[z]].append(errors_f[atoms.numbers == z].mean())
        if ref_s is not None and atoms.cell.rank == 3 and all(atoms.pbc):
            ds.append(np.abs(probe.get_stress() - np.asarray(ref_s)).mean() / GPa)
    return {
        "n_structures": len(frames),
        "n_atoms": int(sum(len(a) for a in frames)),
        "n_elements": len(by_element),
        "energy_mae_meV_per_atom": float(np.mean(de)),
        "force_mae_meV_per_A": float(np.concatenate(df).mean()),
        "stress_mae_GPa": float(np.mean(ds)) if ds else None,
        "n_with_stress": len(ds),
        "by_config_type": {
            kind: {
                "n": len(e),
                "energy_mae_meV_per_atom": float(np.mean(e)),
                "force_mae_meV_per_A": float(np.mean(f)),
            }
            for kind, (e, f) in sorted(by_type.items())
        },
        "force_mae_by_element_meV_per_A": {k: float(np.mean(v)) for k, v in sorted(by_element.items())},
    }


def delta_test(calc) -> dict:
    """V0 (A^3/atom) and B0 (GPa) of the dcdft crystals and their relative errors vs WIEN2k."""
    from ase.collections import dcdft

    from facet_calc.workflows import eos, relax

    rows = {}
    for element in dcdft.names:
        ref = dcdft.data[element]
        try:
            relaxed = relax(dcdft[element], calc, fmax=1e-3, max_steps=300, progress=False).atoms
            result = eos(relaxed, calc, progress=False)
            v0, b0 = float(result.v0_per_atom_a3), float(result.b0_gpa)
        except Exception as err:  # an element whose EOS fails is reported, not hidden
            rows[element] = {"error": f"{type(err).__name__}: {err}"}
            continue
        rows[element] = {
            "v0": v0,
            "b0": b0,
            "v0_rel_err_pct": 100 * (v0 - ref["wien2k_volume"]) / ref["wien2k_volume"],
            "b0_rel_err_pct": 100 * (b0 - ref["wien2k_B"]) / ref["wien2k_B"],
        }
    ok = [r for r in rows.values() if "error" not in r]
    return {
        "n_elements": len(rows),
        "n_failed": len(rows) - len(ok),
        "v0_mare_pct": float(np.mean([abs(r["v0_rel_err_pct"]) for r in ok])),
        "b0_mare_pct": float(np.mean([abs(r["b0_rel_err_pct"]) for r in ok])),
        "per_element": rows,
    }


def rotation_error(calc, frames, n: int = 20, seed: int = 0) -> dict:
    """Largest |E(R x) - E(x)| (meV/atom) and force error (meV/A) over random rotations."""
    from scipy.spatial.transform import Rotation

    worst_e = worst_f = 0.0
    for k, atoms in enumerate(frames[:n]):
        rot = Rotation.random(random_state=seed + k).as_matrix()
        a = atoms.copy()
        a.calc = calc
        e0, f0 = a.get_potential_energy(), a.get_forces()
        b = atoms.copy()
        b.positions = atoms.positions @ rot.T
        b.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        b.calc = calc
        worst_e = max(worst_e, abs(b.get_potential_energy() - e0) / len(a) * 1e3)
        worst_f = max(worst_f, np.abs(b.get_forces() - f0 @ rot.T).max() * 1e3)
    return {"n_structures": min(n, len(frames)), "max_energy_meV_per_atom": worst_e, "max_force_meV_per_A": worst_f}


def size(potential) -> dict:
    """Parameters and matrix-product FLOPs per atom (energy + forces, torch path, 216-atom Si)."""
    from ase.build import bulk
    from torch.profiler import profile

    from facet_calc.nn import evaluate

    model = potential.model
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=0)
    graph = potential.graph(atoms)
    backend = model.layers[0].backend
    model.set_backend("torch")
    try:
        with profile(with_flops=True) as prof:
            evaluate(model, graph, compute_virial=False)
    finally:
        model.set_backend(backend)
    flops = sum(event.flops or 0 for event in prof.key_averages())
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "matmul_gflop_per_atom_energy_forces": flops / len(atoms) / 1e9,
        "edges_per_atom": len(graph.senders) / len(atoms),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="potential folder or name")
    parser.add_argument("--teacher", default="7net-0-spline")
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip-delta", action="store_true")
    parser.add_argument("--teacher-delta", type=Path, help="figures.json of an earlier run with the same "
                        "teacher: reuse its teacher Delta figures instead of measuring them again")
    parser.add_argument("--no-verify", action="store_true", help="load a student folder without an index")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    kwargs = {"verify": False} if args.no_verify else {}
    student = load_potential(args.student, dtype="float64", **kwargs)
    teacher = load_potential(args.teacher, dtype="float64")
    frames = read(args.test, index=":")
    figures: dict = {"student": str(args.student), "teacher": args.teacher, "test_file": str(args.test)}
    start = time.perf_counter()
    figures["held_out"] = held_out_errors(FacetCalculator(student), frames)
    summary = {k: v for k, v in figures["held_out"].items() if not isinstance(v, dict)}
    print("held-out:", json.dumps(summary), flush=True)
    figures["rotation"] = rotation_error(FacetCalculator(student), frames)
    print("rotation:", json.dumps(figures["rotation"]), flush=True)
    figures["size"] = {"student": size(student), "teacher": size(teacher)}
    print("size:", json.dumps(figures["size"]), flush=True)
    if not args.skip_delta:
        if args.teacher_delta:  # the teacher is fixed, so its figures are too
            earlier = json.loads(args.teacher_delta.read_text())
            if earlier.get("teacher") != args.teacher or "delta" not in earlier:
                raise SystemExit(f"{args.teacher_delta} holds no Delta figures of teacher {args.teacher!r}")
            teacher_delta = earlier["delta"]["teacher"]
        else:
            teacher_delta = delta_test(FacetCalculator(teacher))
        figures["delta"] = {"student": delta_test(FacetCalculator(student)), "teacher": teacher_delta}
        for who in ("student", "teacher"):
            d = figures["delta"][who]
            print(f"delta {who}: V0 MARE {d['v0_mare_pct']:.2f} %, B0 MARE {d['b0_mare_pct']:.2f} % "
                  f"({d['n_failed']} failed)", flush=True)  # fmt: skip
    figures["seconds"] = time.perf_counter() - start
    args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
