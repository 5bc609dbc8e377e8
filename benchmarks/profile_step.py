"""Where one energy + forces + stress step of facet_calc spends its time.

    python benchmarks/profile_step.py --atoms 216 [--device cuda] [--dtype float64]

Prints the neighbour-list share (vesin, plus turning its output into tensors) and the model's
share, then torch.profiler's table of the model step grouped by operator.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from speed import silicon
from torch.profiler import ProfilerActivity, profile

from facet_calc import FacetCalculator
from facet_calc.graph import graph_from_atoms
from facet_calc.nn import evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=216)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    calc = FacetCalculator("7net-0-spline", device=args.device, dtype=args.dtype)
    potential = calc.potential
    atoms = silicon(args.atoms)
    sync = torch.cuda.synchronize if calc.device.type == "cuda" else (lambda: None)

    timings = {"neighbour list": [], "to tensors": [], "model (forward + backward)": []}
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        graph = graph_from_atoms(atoms, potential.cutoff, potential.species)
        t1 = time.perf_counter()
        inputs = graph.to(calc.device, potential.dtype)
        sync()
        t2 = time.perf_counter()
        evaluate(potential.model, inputs)
        sync()
        t3 = time.perf_counter()
        for key, value in zip(timings, (t1 - start, t2 - t1, t3 - t2)):
            timings[key].append(value)
    total = sum(float(np.median(v[1:])) for v in timings.values())
    print(f"# {len(atoms)} atoms, {graph.n_edges} edges, {args.device}, {args.dtype}")
    for key, values in timings.items():
        ms = 1e3 * float(np.median(values[1:]))
        print(f"{key:>28}: {ms:8.1f} ms  ({100 * ms / (1e3 * total):4.1f} %)")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if calc.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        evaluate(potential.model, inputs)
        sync()
    sort = "cuda_time_total" if calc.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=40))


if __name__ == "__main__":
    main()
