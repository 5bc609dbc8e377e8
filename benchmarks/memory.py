"""Peak memory of one energy + forces + stress step: facet_calc vs sevenn, same weights.

    python benchmarks/memory.py --sizes 64 216 512 1000
    python benchmarks/memory.py --sizes 216 1000 --also facet-s-7net0   # the native potential too

Each (calculator, size) runs in a fresh process; reported is the step's own memory (the highest
resident set size sampled every millisecond during the step, minus the resident set size just
before it) and the process's total peak. Needs the test extra (sevenn).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time, warnings
import psutil
warnings.filterwarnings("ignore")
sys.path.insert(0, {bench!r})
from speed import silicon
which, n, dtype = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if which == "facet":
    from facet_calc import FacetCalculator
    calc = FacetCalculator("7net-0-spline", dtype=dtype)
elif which != "sevenn":
    from facet_calc import FacetCalculator
    calc = FacetCalculator(which, dtype=dtype)
elif dtype == "float32":
    from sevenn.calculator import SevenNetCalculator
    calc = SevenNetCalculator("7net-0", device="cpu")
else:
    from facet_calc.convert.reference import SevenNetReference
    calc = SevenNetReference("7net-0", "float64")
atoms = silicon(n)
small = silicon(8)
small.calc = calc
small.get_stress()  # lazy initialisation (kernels, codegen) outside the measured step
process = psutil.Process()
before = process.memory_info().rss
highest = [before]
running = [True]
def sample():
    while running[0]:
        highest[0] = max(highest[0], process.memory_info().rss)
        time.sleep(0.001)
sampler = threading.Thread(target=sample)
sampler.start()
atoms.calc = calc
atoms.get_stress()
running[0] = False
sampler.join()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"atoms": len(atoms), "step_mib": (highest[0] - before) / 2**20, "peak_mib": peak}}))
"""


def measure(which: str, n: int, dtype: str) -> dict:
    code = CHILD.format(bench=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", code, which, str(n), dtype], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 216, 512])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--also", nargs="*", default=[], help="more facet_calc potentials (vs 7net-0-spline)")
    args = parser.parse_args(argv)
    print(f"# CPU, {args.dtype}: memory of one step (MiB above the RSS before it); process peak RSS in brackets")
    extra = "".join(f" {name:>16} {'step vs facet':>14}" for name in args.also)
    print(f"{'atoms':>7} {'facet':>16} {'sevenn':>16} {'peak ratio':>11}{extra}")
    for n in args.sizes:
        f, s = measure("facet", n, args.dtype), measure("sevenn", n, args.dtype)
        ratio = s["peak_mib"] / f["peak_mib"]  # sevenn's process peak over facet_calc's
        columns = ""
        for name in args.also:
            o = measure(name, n, args.dtype)
            columns += f" {o['step_mib']:>7.0f} [{o['peak_mib']:>5.0f}] {o['step_mib'] / f['step_mib']:>13.2f}x"
        print(
            f"{f['atoms']:>7} {f['step_mib']:>7.0f} [{f['peak_mib']:>5.0f}] "
            f"{s['step_mib']:>7.0f} [{s['peak_mib']:>5.0f}] {ratio:>10.1f}x{columns}",
            flush=True,
        )


if __name__ == "__main__":
    main()
