"""Peak memory per atom and per edge of one energy + forces + stress step, 10^3 to 10^6 atoms,
beside sevenn's where it runs. Where the step would not fit in memory the calculator evaluates
it in spatial chunks (``facet_calc.chunking``); the last columns say how many, and how many
atom evaluations they took per atom (the halo's overhead).

    python benchmarks/memory_scaling.py --sizes 1000 8000 27000 64000 125000 --sevenn-max 2000
    python benchmarks/memory_scaling.py --sizes 1000000 --kinds crystal          # once, at the end

Each (calculator, structure, size) runs in a fresh process. The step's own memory is the peak
resident set size during the step minus the resident set size just before it: the kernel's
high-water mark (VmHWM) is reset just before the step through /proc/self/clear_refs, so nothing
from loading or building the structure counts. Structures: ``crystal``, rattled diamond Si
(28 edges per atom within 5 A); ``gas``, Si atoms on a simple-cubic grid of 5.3 A, rattled by
0.4 A (about 0.5 edges per atom). Reported: MiB, bytes per atom and bytes per edge (the step's
memory divided by the atom or edge count, each as if it alone caused it). float32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from ase import Atoms
from ase.build import bulk
which, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def structure(kind, n):
    rng = np.random.default_rng(0)
    if kind == "crystal":
        reps = max(1, round((n / 8) ** (1 / 3)))
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    else:
        reps = max(1, round(n ** (1 / 3)))
        atoms = Atoms("Si", cell=np.eye(3) * 5.3, pbc=True).repeat(reps)
    atoms.positions += rng.normal(0.0, 0.05 if kind == "crystal" else 0.4, atoms.positions.shape)
    return atoms

def rss():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

plans = []  # the chunk plans of each step the calculator evaluated in spatial chunks
if which == "facet":
    from facet_calc import FacetCalculator, chunking
    calc = FacetCalculator("7net-0-spline", dtype="float32")
    plan = chunking.plan_chunks
    chunking.plan_chunks = lambda *a, **k: plans.append(plan(*a, **k)) or plans[-1]
else:
    from sevenn.calculator import SevenNetCalculator
    calc = SevenNetCalculator("7net-0", device="cpu")
small = structure(kind, 8)
small.calc = calc
small.get_stress()  # lazy initialisation (kernels, codegen) outside the measured step
atoms = structure(kind, n)
from ase.neighborlist import neighbor_list
n_edges = len(neighbor_list("i", atoms, 5.0)) if len(atoms) <= 130000 else None
atoms.calc = calc
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
before, _ = rss()
t0 = time.perf_counter()
energy = atoms.get_potential_energy(); forces = atoms.get_forces(); stress = atoms.get_stress()
seconds = time.perf_counter() - t0
_, peak = rss()
if n_edges is None:  # big crystals: the model's own graph, counted after the step
    from facet_calc.graph import Structure, neighbour_list

    n_edges = len(neighbour_list(Structure.from_atoms(atoms), 5.0).receivers)
print(json.dumps({"atoms": len(atoms), "edges": n_edges, "step_bytes": peak - before, "peak_bytes": peak,
                  "seconds": seconds, "energy_per_atom": energy / len(atoms),
                  "chunks": sum(len(p) for p in plans),
                  "chunk_atoms": sum(len(c.region) for p in plans for c in p)}))
"""


def measure(which: str, kind: str, n: int) -> dict | None:
    out = subprocess.run([sys.executable, "-c", CHILD, which, kind, str(n)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"# {which} {kind} {n}: failed ({out.stderr.strip().splitlines()[-1][:200]})", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 27000, 64000, 125000])
    parser.add_argument("--kinds", nargs="+", choices=["crystal", "gas"], default=["crystal", "gas"])
    parser.add_argument("--sevenn-max", type=int, default=2000, help="largest size given to sevenn (its memory)")
    args = parser.parse_args(argv)
    print("# CPU float32, one energy+forces+stress step; step memory = peak RSS in the step - RSS before it")
    print(f"{'kind':>8} {'code':>7} {'atoms':>8} {'edges':>10} {'step MiB':>9} {'B/atom':>8} {'B/edge':>8} "
          f"{'peak MiB':>9} {'s':>7} {'chunks':>6} {'halo x':>6}")  # fmt: skip
    for kind in args.kinds:
        for n in args.sizes:
            for which in ("facet", "sevenn"):
                if which == "sevenn" and n > args.sevenn_max:
                    continue
                r = measure(which, kind, n)
                if r is None:
                    continue
                step = r["step_bytes"]
                per_edge = step / r["edges"] if r["edges"] else float("nan")
                halo = r["chunk_atoms"] / r["atoms"] if r["chunks"] else 1.0  # atom evaluations per atom
                print(f"{kind:>8} {which:>7} {r['atoms']:>8} {r['edges']:>10} {step / 2**20:>9.0f} "
                      f"{step / r['atoms']:>8.0f} {per_edge:>8.0f} {r['peak_bytes'] / 2**20:>9.0f} "
                      f"{r['seconds']:>7.1f} {r['chunks']:>6} {halo:>6.2f}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
