"""Cost of a committee per MD step against one student, same run, one thread, alternated.

    python benchmarks/committee_cost.py                      # small students, Si, ~1000 and 64 atoms
    python benchmarks/committee_cost.py --members 4 --repeats 7

Students: the ``small`` distillation size (2 layers, 32x0e+16x1o+8x2e, cutoff 5 A), weights
random (cost does not depend on their values). Three ways per structure, timed in turns:
``one``: a FacetCalculator on one student; ``committee``: FacetCalculator on the K students
(the edge work shared, :func:`facet_calc.nn.committee.evaluate_committee`); ``separate``: K
calculators called one after the other (what a committee costs without sharing). Each call is a
full force + stress evaluation of a freshly rattled structure (graph included). Prints medians
and the ratios committee/one and separate/one. Then, on one prebuilt graph (model work only, CPU
time of the thread), :func:`facet_calc.nn.committee.evaluate_committee` with ``how="stacked"``
(the members batched into one evaluation, what the calculator runs) and ``how="shared"`` (member
by member on the shared edge work) against one member's :func:`~facet_calc.nn.forward.evaluate`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.committee import save_committee
from facet_calc.distill.students import student_config
from facet_calc.graph import graph_from_atoms
from facet_calc.nn import build_model, initialise_for_training
from facet_calc.nn.committee import evaluate_committee
from facet_calc.nn.forward import evaluate


def members(k: int, folder: Path) -> Path:
    config = student_config([14], "small", 5.0, 30.0)
    config["description"] = "random small student (timing only)"
    base = build_model(config, torch.float32)
    out = []
    for seed in range(k):
        initialise_for_training(base, seed)
        with torch.no_grad():
            for name, p in base.named_parameters():
                if name.endswith("residual.norm.weight"):
                    p.fill_(0.1)  # the layers do their work (zero would make them the identity)
        out.append((config, {n: v.detach().clone() for n, v in base.named_parameters()}, "# timing\n"))
    return save_committee(folder / "committee", out)


def rattled(atoms0, rng):
    """A fresh copy of ``atoms0`` with every atom moved by N(0, 0.02 A)."""
    atoms = atoms0.copy()
    atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
    return atoms


def alternated_medians(ways, repeats: int, clock, setup=lambda: None) -> dict[str, float]:
    """Median seconds (``clock``) of each way over ``repeats`` rounds after a warm-up round, the
    ways run in turns, reversed every other round. ``ways[name](arg)`` is timed on ``arg =
    setup()``, made before the clock starts."""
    times: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(repeats + 1):
        for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
            arg = setup()
            start = clock()
            ways[name](arg)
            if r:
                times[name].append(clock() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 2], help="cubic repeats of the 8-atom Si cell")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = members(args.members, Path(tmp))
        calcs = {
            "one": [FacetCalculator(folder / "member-0", threads=1)],
            "committee": [FacetCalculator(folder, threads=1)],
            "separate": [FacetCalculator(folder / f"member-{k}", threads=1) for k in range(args.members)],
        }
        rng = np.random.default_rng(0)
        for n in args.sizes:
            atoms0 = bulk("Si", "diamond", a=5.43, cubic=True).repeat(n)
            full_steps = {name: lambda atoms, group=group: [c.calculate(atoms, ["energy", "forces", "stress"])
                                                            for c in group]
                          for name, group in calcs.items()}  # fmt: skip
            med = alternated_medians(full_steps, args.repeats, time.perf_counter,
                                     setup=lambda a=atoms0: rattled(a, rng))
            print(f"{len(atoms0)} atoms, K={args.members}: one {med['one'] * 1e3:.1f} ms, committee "
                  f"{med['committee'] * 1e3:.1f} ms ({med['committee'] / med['one']:.2f}x), separate "
                  f"{med['separate'] * 1e3:.1f} ms ({med['separate'] / med['one']:.2f}x)")  # fmt: skip
            committee = calcs["committee"][0].potential
            graph = graph_from_atoms(atoms0, committee.cutoff, committee.species)
            ways = {
                "one": lambda _, c=committee, g=graph: evaluate(c.models[0], g),
                "stacked": lambda _, c=committee, g=graph: evaluate_committee(c.models, g, how="stacked"),
                "shared": lambda _, c=committee, g=graph: evaluate_committee(c.models, g, how="shared"),
            }
            med = alternated_medians(ways, args.repeats, time.thread_time)
            print(f"  model work only (CPU time): one {med['one'] * 1e3:.1f} ms, stacked {med['stacked'] * 1e3:.1f} ms "
                  f"({med['stacked'] / med['one']:.2f}x), shared {med['shared'] * 1e3:.1f} ms "
                  f"({med['shared'] / med['one']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
