"""Throughput of many small structures, and the per-call cost across system sizes; one run.

    python benchmarks/batched.py                      # 1000 cells, float32, CPU, + size scan
    python benchmarks/batched.py --n 200 --dtype float64 --no-scan

Part 1: 1000 small cells (2-16 atoms, mixed elements, rattled and strained), single point with
energy, forces and stress, timed as
  * one by one: ``FacetCalculator.calculate`` per structure (what an ASE loop does);
  * batched: ``FacetCalculator.calculate_many`` (graphs joined within the edge budget);
  * torch-sim: ``FacetTorchSimModel`` on one SimState of all cells (needs the torchsim extra);
  * sevenn's torch-sim wrapper on the same cells (7net-0; SimStates of 100 cells, since one
    state of 1000 cells needs more than 23 GiB): ``sevenn.torchsim`` where it
    imports (sevenn 0.13 with torch-sim >= 0.4), else torch-sim 0.3's own
    ``torch_sim.models.sevennet`` (given the one name, ``torch_script_type``, that it imports
    from sevenn.calculator and sevenn 0.13 no longer has).
Prints structures/s and the ratios against one by one and against sevenn.

Part 2: time per atom of single calls (``FacetCalculator``, energy + forces + stress) on rattled
diamond Si from 16 to 4096 atoms, and each size's ratio to the smallest per-atom time.

Numbers on a shared machine vary: compare ratios from one run, and note ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from facet_calc import FacetCalculator, load_potential

PROTOTYPES = [
    ("diamond", 5.43, ["Si", "Ge", "C"]),
    ("fcc", 3.8, ["Cu", "Al", "Ni", "Ag", "Pt"]),
    ("bcc", 3.0, ["Fe", "W", "Mo", "Na"]),
    ("rocksalt", 4.8, ["NaCl", "MgO", "LiF", "KBr"]),
    ("zincblende", 5.6, ["GaAs", "ZnS", "InP"]),
]


def small_cells(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` rattled, strained cells of 2-16 atoms with mixed elements."""
    rng = np.random.default_rng(seed)
    cells = []
    while len(cells) < n:
        kind, a, names = PROTOTYPES[rng.integers(len(PROTOTYPES))]
        name = names[rng.integers(len(names))]
        atoms = bulk(name, kind, a=a * rng.uniform(0.95, 1.1))
        reps = [1, 1, 1]
        while len(atoms) * np.prod(reps) < rng.integers(2, 17):
            reps[rng.integers(3)] += 1
        atoms = atoms.repeat(reps)
        if len(atoms) > 16 or len(atoms) < 2:
            continue
        numbers = atoms.numbers.copy()  # swap in a random element on a few sites: mixed chemistry
        swap = rng.random(len(atoms)) < 0.25
        numbers[swap] = rng.choice([3, 8, 11, 12, 13, 14, 26, 29, 31, 33], swap.sum())
        atoms.numbers = numbers
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        cells.append(atoms)
    return cells


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def part1(n: int, dtype: str) -> None:
    cells = small_cells(n)
    n_atoms = sum(len(a) for a in cells)
    potential = load_potential("7net-0-spline", dtype=dtype)
    calc = FacetCalculator(potential)
    print(f"part 1: {n} cells, {n_atoms} atoms ({n_atoms / n:.1f} per cell), {dtype}, E+F+S")

    def one_by_one():
        for atoms in cells:
            calc.calculate(atoms, ["energy", "forces", "stress"])

    calc.calculate_many(cells[:20])  # warm-up
    t_single = timed(one_by_one)
    t_many = timed(lambda: calc.calculate_many(cells), repeats=2)
    rows = [("FacetCalculator one by one", t_single), ("FacetCalculator.calculate_many", t_many)]
    t_sevenn = None
    try:
        import torch_sim as ts

        from facet_calc.torchsim import FacetTorchSimModel

        tdtype = getattr(torch, dtype)
        state = ts.io.atoms_to_state(cells, torch.device("cpu"), tdtype)
        model = FacetTorchSimModel(potential, device="cpu")
        model(state)
        rows.append(("FacetTorchSimModel, one SimState", timed(lambda: model(state), repeats=2)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import sevenn.calculator
                from sevenn.util import load_checkpoint, pretrained_name_to_path

                try:  # sevenn >= 0.13 ships its own wrapper, for torch-sim >= 0.4 (Python >= 3.12)
                    from sevenn.torchsim import SevenNetModel
                except ImportError:  # torch-sim 0.3's wrapper reads a name sevenn 0.13 dropped
                    if not hasattr(sevenn.calculator, "torch_script_type"):
                        sevenn.calculator.torch_script_type = torch.jit.ScriptModule
                    from torch_sim.models.sevennet import SevenNetModel

                sevenn_model = load_checkpoint(pretrained_name_to_path("7net-0")).build_model()
                peer = SevenNetModel(model=sevenn_model, device="cpu", dtype=tdtype)
                peer(ts.io.atoms_to_state(cells[:20], torch.device("cpu"), tdtype))
                # in SimStates of at most 100 cells: sevenn keeps the whole graph's tensor
                # products, and 1000 cells (8,300 atoms) in one state took more than 23 GiB
                states = [
                    ts.io.atoms_to_state(cells[i : i + 100], torch.device("cpu"), tdtype)
                    for i in range(0, len(cells), 100)
                ]
                t_sevenn = timed(lambda: [peer(chunk) for chunk in states])
                rows.append(("sevenn 7net-0, torch-sim SevenNetModel", t_sevenn))
        except Exception as err:  # noqa: BLE001 - report why the peer could not run
            print(f"  sevenn's torch-sim wrapper did not run: {type(err).__name__}: {err}")
    except ImportError as err:
        print(f"  torch-sim not installed ({err}); pip install 'facet_calc[torchsim]'")
    print(f"  {'':40s} {'s':>8} {'struct/s':>9} {'vs one-by-one':>14} {'vs sevenn-ts':>13}")
    for name, t in rows:
        vs_sevenn = f"{t_sevenn / t:13.2f}" if t_sevenn else f"{'-':>13}"
        print(f"  {name:40s} {t:8.2f} {n / t:9.1f} {t_single / t:14.2f} {vs_sevenn}")


def part2(dtype: str, sizes: list[int], repeats: int, budget_s: float) -> None:
    potential = load_potential("7net-0-spline", dtype=dtype)
    calc = FacetCalculator(potential)
    print(
        f"part 2: single calls, rattled diamond Si, {dtype}, E+F+S (each size repeated at least "
        f"{repeats} times and for at least {budget_s:g} s; best and median per call)"
    )
    best_per_atom, median_per_atom = {}, {}
    for n in sizes:
        reps = [1, 1, 1]
        base = bulk("Si", "diamond", a=5.43, cubic=True)
        while len(base) * np.prod(reps) < n:
            reps[int(np.argmin(reps))] += 1
        atoms = base.repeat(reps)
        atoms.rattle(0.05, seed=0)
        calc.calculate(atoms, ["energy", "forces", "stress"])
        # the same statistic for every size (timeit's rule): a small call is repeated until the
        # budget is spent, so that its best is not a best of 2 noisy samples
        times, start = [], time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < budget_s:
            t0 = time.perf_counter()
            calc.calculate(atoms, ["energy", "forces", "stress"])
            times.append(time.perf_counter() - t0)
        best_per_atom[len(atoms)] = min(times) / len(atoms) * 1e6
        median_per_atom[len(atoms)] = float(np.median(times)) / len(atoms) * 1e6
        print(f"    {len(atoms):6d} atoms: {len(times)} calls")
    for label, per_atom in (("best", best_per_atom), ("median", median_per_atom)):
        floor = min(per_atom.values())
        print(f"  {label} per call:")
        for n, us in per_atom.items():
            print(f"  {n:6d} atoms: {us:8.1f} us/atom  ({us / floor:.2f} x the minimum)")
        print(f"  spread max/min ({label}): {max(per_atom.values()) / floor:.2f} (goal <= 2)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="number of small cells")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 216, 512, 1000, 4096])
    parser.add_argument("--repeats", type=int, default=3, help="part 2: at least this many calls per size")
    parser.add_argument("--budget", type=float, default=3.0, help="part 2: and at least this many seconds per size")
    parser.add_argument("--no-scan", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    part1(args.n, args.dtype)
    if not args.no_scan:
        part2(args.dtype, args.sizes, args.repeats, args.budget)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
