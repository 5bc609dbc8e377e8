"""Energy + forces + stress per step: facet_calc vs sevenn, same weights, same run.

    python benchmarks/speed.py                       # 216-atom Si, float32, CPU
    python benchmarks/speed.py --sizes 64 216 512 --dtype float64 --device cuda
    python benchmarks/speed.py --sizes 216 1000 --potentials 7net-0-spline facet-s-7net0
    python benchmarks/speed.py --sizes 216 1000 --threads 1 --isas avx512 avx2 --rounds 3

Each step moves the atoms slightly (so nothing is cached) and asks for energy, forces and
stress. Prints ms/step of both calculators and their ratio (sevenn time / facet time; > 1
means facet_calc is faster). With more than one ``--potentials``, each further potential (e.g.
the native Facet one) is timed in the same run and its speed-up over the first is printed.
With ``--isas``, the first potential is timed once per instruction-set build of the CPU kernel
(``FACET_CALC_ISA``, see ``facet_calc.nn._kernels``), each against the same sevenn timing. With
``--rounds R`` the whole comparison is repeated R times, alternating facet_calc and sevenn, and
the median of the per-round ratios is printed (on a shared machine, single rounds are noisy).
Needs the test extra (sevenn).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from ase.build import bulk

from facet_calc import FacetCalculator


def silicon(n_atoms: int, seed: int = 0):
    """Rattled diamond Si with about n_atoms atoms (8 n^3 for a cubic n x n x n supercell)."""
    reps = max(1, round((n_atoms / 8) ** (1 / 3)))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


#: the clock of time_steps: wall time, or this process's CPU time (--clock cpu: on a machine
#: shared with other jobs it leaves out the time spent waiting for a core)
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def time_steps(atoms, calc, repeats: int, every: list | None = None) -> float:
    """Median wall time (ms) of one energy+forces+stress evaluation (each one appended to
    ``every`` when given)."""
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(1)
    atoms.get_stress()  # warm-up (graph building, lazy init, allocator)
    atoms.get_forces()
    times = []
    for _ in range(repeats):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = clock()
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(clock() - start)
    if every is not None:
        every.extend(1e3 * t for t in times)
    return 1e3 * float(np.median(times))


def sevenn_calculator(dtype: str, device: str):
    if dtype == "float32":
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator("7net-0", device=device)
    from facet_calc.convert.reference import SevenNetReference

    return SevenNetReference("7net-0", "float64", device=device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[216])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--isas", nargs="+", default=None,
                        help="time the first potential with each of these CPU kernel builds (FACET_CALC_ISA)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the comparison; median of the ratios")
    parser.add_argument("--clock", choices=list(CLOCK), default="wall",
                        help="wall time, or CPU time of the process (on a shared machine; CPU runs only)")
    parser.add_argument(
        "--potentials", nargs="+", default=["7net-0-spline"],
        help="facet_calc potentials to time; the first is compared with sevenn, the others with the first",
    )  # fmt: skip
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    global clock
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)

    facet = FacetCalculator(args.potentials[0], device=args.device, dtype=args.dtype)
    if args.isas:
        _isa_rounds(args, facet)
        return
    others = {name: FacetCalculator(name, device=args.device, dtype=args.dtype) for name in args.potentials[1:]}
    reference = sevenn_calculator(args.dtype, args.device)
    print(f"# device={args.device} dtype={args.dtype} torch threads={torch.get_num_threads()}")
    print(f"# facet = {args.potentials[0]}; sevenn = SevenNet-0 through sevenn's calculator")
    extra = "".join(f" {name + ' ms':>20} {'vs facet':>9}" for name in others)
    print(f"{'atoms':>7} {'facet ms/step':>14} {'sevenn ms/step':>15} {'speed-up':>9} {'facet us/atom':>14}{extra}")
    sevenn_failed = False
    for n in args.sizes:
        atoms = silicon(n)
        t_facet = _attempt(time_steps, atoms, facet, args.repeats)
        t_sevenn = None if sevenn_failed else _attempt(time_steps, atoms, reference, args.repeats)
        sevenn_failed = t_sevenn is None  # larger cells would fail too
        ratio = f"{t_sevenn / t_facet:>8.2f}x" if t_facet and t_sevenn else f"{'-':>9}"
        per_atom = f"{1e3 * t_facet / len(atoms):>14.1f}" if t_facet else f"{'-':>14}"
        columns = ""
        for calc in others.values():  # interleaved with the first, in the same process
            t_other = _attempt(time_steps, atoms, calc, args.repeats)
            speedup = f"{t_facet / t_other:>8.2f}x" if t_facet and t_other else f"{'-':>9}"
            columns += f" {_fmt(t_other):>20} {speedup}"
        print(f"{len(atoms):>7} {_fmt(t_facet):>14} {_fmt(t_sevenn):>15} {ratio} {per_atom}{columns}", flush=True)


def _isa_rounds(args, facet) -> None:
    """Per size, ``--rounds`` rounds of: sevenn, then facet with each kernel build; the median
    of each build's per-round ratio, and the ratio of the fastest steps (on a machine shared
    with other jobs the fastest step is the least disturbed one)."""
    from facet_calc.nn._kernels import kernel_launcher

    reference = sevenn_calculator(args.dtype, args.device)
    print(f"# device={args.device} dtype={args.dtype} torch threads={torch.get_num_threads()} rounds={args.rounds} "
          f"clock={args.clock}")  # fmt: skip
    print(f"# facet = {args.potentials[0]} with each CPU kernel build; sevenn = SevenNet-0 (sevenn's calculator)")
    previous = os.environ.get("FACET_CALC_ISA")
    try:
        for n in args.sizes:
            atoms = silicon(n)
            ratios = {isa: [] for isa in args.isas}
            times = {isa: [] for isa in args.isas}
            sevenn_times, steps = [], {"sevenn": [], **{isa: [] for isa in args.isas}}
            for _ in range(args.rounds):
                t_sevenn = time_steps(atoms, reference, args.repeats, steps["sevenn"])
                sevenn_times.append(t_sevenn)
                for isa in args.isas:
                    os.environ["FACET_CALC_ISA"] = isa
                    assert kernel_launcher(torch.device(args.device)).isa == isa
                    t = time_steps(atoms, facet, args.repeats, steps[isa])
                    times[isa].append(t)
                    ratios[isa].append(t_sevenn / t)
            for isa in args.isas:
                each = " ".join(f"{r:.1f}" for r in ratios[isa])
                t_med, t_ref = np.median(times[isa]), np.median(sevenn_times)
                fast_ref, fast_isa = min(steps["sevenn"]), min(steps[isa])
                print(f"{len(atoms):>7} atoms  {isa:>7}: facet {t_med:8.1f} ms "
                      f"({1e3 * t_med / len(atoms):7.1f} us/atom)  sevenn {t_ref:8.1f} ms"
                      f"  speed-up median {np.median(ratios[isa]):5.2f}x  (rounds: {each}); fastest steps "
                      f"{fast_ref:.1f} / {fast_isa:.1f} ms = {fast_ref / fast_isa:5.2f}x",
                      flush=True)  # fmt: skip
    finally:
        if previous is None:
            os.environ.pop("FACET_CALC_ISA", None)
        else:
            os.environ["FACET_CALC_ISA"] = previous


def _fmt(ms):
    return "out of memory" if ms is None else f"{ms:.1f}"


def _attempt(fn, *args):
    """Run a timing; None when the device runs out of memory."""
    try:
        return fn(*args)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


if __name__ == "__main__":
    main()
