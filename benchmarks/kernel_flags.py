"""What -ffast-math buys inside the CPU kernel: one step timed with the kernel compiled each way.

    python benchmarks/kernel_flags.py --atoms 216 --repeats 10

Each variant runs in its own process with its own kernel cache, so the flags are the only
difference. Prints ms/step and the ratio (plain / fast-math; > 1 means fast-math is faster),
and whether subnormal floats survive in the process after the kernel has loaded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time, numpy as np
import facet_calc.nn._kernels as k
k._FLAGS = sys.argv[1].split()
assert k.spline_conv_library() is not None, "the kernel did not compile"
from ase.build import bulk
from facet_calc import FacetCalculator
n, repeats = int(sys.argv[2]), int(sys.argv[3])
atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(max(1, round((n / 8) ** (1 / 3))))
atoms.rattle(0.05, seed=0)
atoms.calc = FacetCalculator("7net-0-spline", dtype=sys.argv[4])
atoms.get_stress()
times = []
for _ in range(repeats):
    atoms.positions[0, 0] += 1e-4
    t = time.perf_counter(); atoms.get_forces(); atoms.get_stress(); times.append(time.perf_counter() - t)
print(1e3 * float(np.median(times)), bool(np.float64(1e-310) * 1.0 != 0.0))
"""

PLAIN = "-O3 -std=c++17 -fopenmp -shared -fPIC"  # (the ISA level's -march flags come first)
FAST = "-O3 -std=c++17 -ffast-math -fno-finite-math-only -fopenmp -shared -fPIC"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=216)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    results = {}
    for name, flags in (("plain", PLAIN), ("fast-math", FAST)):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, FACET_CALC_CACHE=cache)
            cmd = [sys.executable, "-c", CHILD, flags, str(args.atoms), str(args.repeats), args.dtype]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
        results[name] = float(out[0])
        print(f"{name:10s} {results[name]:8.1f} ms/step   subnormals survive: {out[1]}")
    print(f"plain / fast-math: {results['plain'] / results['fast-math']:.3f}")


if __name__ == "__main__":
    main()
