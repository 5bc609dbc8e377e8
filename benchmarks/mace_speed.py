"""Energy + forces + stress of a MACE-MP-0-medium-shaped model: facet_calc vs mace-torch vs Symmetrix-XL.

    PYTHONPATH=$PWD nice /work/venvs/mace/bin/python benchmarks/mace_speed.py [--sizes 64 216 1000]
        [--dtypes float32 float64] [--repeats 3] [--engines facet mace symmetrix]

One random-weight model built by mace-torch with the MACE-MP-0 medium hyperparameters
(128x0e+128x1o, max_L 1, max_ell 3, correlation 3, r_max 6 A, 2 interactions; elements O and
Si), saved as a .model file, converted by facet_calc (``facet-spline-mace``) and by Symmetrix-XL
(``symmetrix_extract_mace``). Rattled diamond Si cells of 64 / 216 / 1000 atoms, with every
fourth atom O (a binary). One thread each (``torch.set_num_threads(1)``, OMP_NUM_THREADS=1),
the engines alternated within each repeat, the best of ``--repeats`` evaluations (each after a
small displacement, so nothing is cached) reported with the ratios mace-torch / facet_calc and
Symmetrix / facet_calc (> 1: facet_calc faster). Needs mace-torch (and symmetrix-xl[mace] for
the third column; it is skipped with a note when missing).

Measured 2026-12-03 on the 2-core shared CPU machine (best of 2 at 64/216 atoms, 1 at 1000),
mace-torch time / facet_calc time: 64 atoms 6.0x (float32) / 4.7x (float64), 216 atoms 5.0x /
5.5x, 1000 atoms 5.3x / 5.9x (facet_calc 0.18 / 0.70 / 4.0 s in float32). Symmetrix-XL 0.1.1
(x86-64-v3 CPU backend) installed and
``symmetrix_extract_mace`` wrote the model, but its default (JIT) calculator did not finish
constructing within 100 s here, and its compiler-free ``streamed_edges="non-compiled"`` mode
took 26 s per evaluation at 64 atoms (float64, contended): not measured as a comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _atoms(n: int):
    from ase.build import bulk

    reps = {64: 2, 216: 3, 512: 4, 1000: 5}[n]
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    atoms.numbers[::4] = 8
    atoms.rattle(0.03, seed=0)
    return atoms


def _symmetrix(model_path: Path, folder: Path, dtype: str):
    from symmetrix import Symmetrix

    out = folder / "model-symmetrix.json"
    if not out.exists():
        exe = Path(sys.executable).parent / "symmetrix_extract_mace"
        command = [str(exe), "--model", str(model_path), "--atomic-numbers", "8", "14", "--output", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"symmetrix_extract_mace failed: {done.stderr[-800:]}")
    return Symmetrix(str(out), dtype=dtype)


def _time(calc, atoms, repeats: int) -> float:
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy(), a.get_forces(), a.get_stress()  # warm-up
    best = float("inf")
    for k in range(repeats):
        a.positions[k % len(a), 0] += 1e-3
        start = time.perf_counter()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[64, 216, 1000])
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", nargs="*", default=["facet", "mace", "symmetrix"])
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from facet_calc.convert.fidelity import converted_calculator
    from facet_calc.convert.mace import convert_mace, load_mace_model, mace_reference
    from facet_calc.convert.random_mace import random_mace_model

    folder = Path(tempfile.mkdtemp())
    path = folder / "mp0-medium.model"
    random_mace_model("mace-mp-0-medium", [8, 14], seed=0, path=str(path))
    source = load_mace_model(str(path))
    config, tensors = convert_mace(source)
    print("| atoms | dtype | facet_calc s | mace-torch s | Symmetrix-XL s | mace-torch / facet | Symmetrix / facet |")
    print("|---|---|---|---|---|---|---|")
    notes = []
    for dtype in args.dtypes:
        calcs = {}
        if "facet" in args.engines:
            calcs["facet"] = converted_calculator(config, tensors, dtype)
        if "mace" in args.engines:
            calcs["mace"] = mace_reference(source, dtype)
        if "symmetrix" in args.engines:
            try:
                calcs["symmetrix"] = _symmetrix(path, folder, dtype)
            except Exception as err:  # not installed, or no backend for this dtype
                notes.append(f"Symmetrix-XL {dtype}: {type(err).__name__}: {str(err)[:300]}")
        for n in args.sizes:
            atoms = _atoms(n)
            times = {name: float("inf") for name in calcs}
            for _ in range(max(1, args.repeats // 1)):  # alternate engines within each round
                for name, calc in calcs.items():
                    times[name] = min(times[name], _time(calc, atoms, 1))
            f, m, s = times.get("facet"), times.get("mace"), times.get("symmetrix")

            def cell(x):
                return f"{x:.3f}" if x is not None else "-"

            def ratio(x, f=f):
                return f"{x / f:.2f}" if x is not None and f is not None else "-"

            print(f"| {n} | {dtype} | {cell(f)} | {cell(m)} | {cell(s)} | {ratio(m)} | {ratio(s)} |", flush=True)
    for note in notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
