"""How much facet_calc and sevenn slow down when another process competes for a core; one run.

    python benchmarks/contention.py                        # 216-atom Si, float32, all threads
    python benchmarks/contention.py --atoms 512 --threads 2 --repeats 7

Each calculator is timed (median energy + forces + stress step, as in ``speed.py``) alone and
then while competing processes spin (``--competitors``, default one, pinned to the first core this
process may use; more go unpinned), in fresh subprocesses for three OpenMP settings (libgomp
reads them when it loads, so each needs its own process): the default a library user's script
gets (idle threads spin 300,000 times before sleeping), ``GOMP_SPINCOUNT=10000`` (what
``facet-calc`` and the test suite set) and ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at
once). Prints the slowdown of each calculator (contended / alone) and facet_calc's lead over
sevenn alone and contended.

The goal (issue 10): facet_calc degrades under contention no worse than sevenn does. Needs the
test extra (sevenn). Nothing else should run on the machine meanwhile (check ``uptime``).

    python benchmarks/contention.py --thread-default --sizes 8 64 216 --competitors 1

times ``FacetCalculator``'s thread setting instead (issue 22.3), as a library user's script
gets it (libgomp's default spin, torch's default thread count): ``threads=None`` (every thread
torch has: the old default), ``threads="auto"`` (the default: one thread per
``ATOMS_PER_THREAD`` atoms) and ``threads=1``, alone and beside the busy processes, per size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

SPIN = "while True: pass"


def competitor(core: int | None) -> subprocess.Popen:
    """A process that keeps a core busy (pinned to ``core`` unless None)."""
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    return subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=pin)  # noqa: PLW1509 (no threads yet)


def worker(name: str, atoms_n: int, threads: int | None, repeats: int, competitors: int) -> dict:
    """Median ms/step of ``name`` ("facet" or "sevenn") alone and beside a competitor."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from speed import sevenn_calculator, silicon, time_steps

    from facet_calc import FacetCalculator

    warnings.filterwarnings("ignore")
    if threads:
        torch.set_num_threads(threads)
    calc = FacetCalculator("7net-0-spline", dtype="float32") if name == "facet" else sevenn_calculator("float32", "cpu")
    atoms = silicon(atoms_n)
    alone = time_steps(atoms, calc, repeats)
    first = min(os.sched_getaffinity(0))
    spinners = [competitor(first if i == 0 else None) for i in range(competitors)]
    try:
        time.sleep(0.5)  # let them be scheduled
        contended = time_steps(atoms, calc, repeats)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"alone": alone, "contended": contended, "threads": torch.get_num_threads(), "atoms": len(atoms)}


def thread_worker(atoms_n: int, repeats: int, competitors: int) -> dict:
    """Median ms/step of FacetCalculator with threads=None, "auto" and 1, alone and contended."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from speed import silicon, time_steps

    from facet_calc import FacetCalculator

    warnings.filterwarnings("ignore")
    atoms = silicon(atoms_n)
    calcs = {k: FacetCalculator("7net-0-spline", dtype="float32", device="cpu", threads=k) for k in (None, "auto", 1)}
    found = {"atoms": len(atoms), "torch_threads": torch.get_num_threads()}
    for state in ("alone", "contended"):
        first = min(os.sched_getaffinity(0))
        spinners = [competitor(first if i == 0 else None) for i in range(competitors)] if state == "contended" else []
        try:
            time.sleep(0.5 if spinners else 0.0)  # let them be scheduled
            for setting, calc in calcs.items():
                found[f"{setting} {state}"] = time_steps(atoms, calc, repeats)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    return found


def thread_default(args) -> None:
    """The table of ``--thread-default``: one fresh process per size, libgomp's defaults."""
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.competitors} competing "
          f"process(es); float32 E+F+S, median of {args.repeats}; libgomp's default spin")  # fmt: skip
    print(f"{'atoms':>6} {'threads':>8} {'alone ms':>9} {'contended ms':>13} {'vs 1 thread contended':>22}")
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--thread-worker", "--atoms", str(n)]
        cmd += ["--repeats", str(args.repeats), "--competitors", str(args.competitors)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        for setting in ("None", "auto", "1"):
            alone, busy = r[f"{setting} alone"], r[f"{setting} contended"]
            label = {"None": f"None({r['torch_threads']})"}.get(setting, setting)
            ratio = busy / r["1 contended"]
            print(f"{r['atoms']:>6} {label:>8} {alone:>9.1f} {busy:>13.1f} {ratio:>21.2f}x", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=216)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--competitors", type=int, default=1, help="busy processes beside the timed one")
    parser.add_argument("--thread-default", action="store_true",
                        help="time FacetCalculator's threads=None / 'auto' / 1 instead (issue 22.3)")  # fmt: skip
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 216], help="atoms (--thread-default)")
    parser.add_argument("--worker", choices=["facet", "sevenn"], help=argparse.SUPPRESS)
    parser.add_argument("--thread-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.thread_worker:
        print(json.dumps(thread_worker(args.atoms, args.repeats, args.competitors)))
        return
    if args.thread_default:
        thread_default(args)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.atoms, args.threads, args.repeats, args.competitors)))
        return

    print(
        f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.competitors} competing "
        f"process(es); float32 E+F+S, median of {args.repeats}"
    )
    print(f"{'OpenMP':>12} {'calculator':>10} {'threads':>7} {'alone ms':>9} {'contended ms':>13} {'slowdown':>9}")
    settings = {"default": {}, "spin 10000": {"GOMP_SPINCOUNT": "10000"}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
    for policy, setting in settings.items():
        drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
        env = {k: v for k, v in os.environ.items() if k not in drop} | setting
        found = {}
        for name in ("facet", "sevenn"):
            cmd = [sys.executable, __file__, "--worker", name, "--atoms", str(args.atoms)]
            cmd += ["--repeats", str(args.repeats), "--competitors", str(args.competitors)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            found[name] = r = json.loads(out.strip().splitlines()[-1])
            slowdown = r["contended"] / r["alone"]
            times = f"{r['alone']:>9.1f} {r['contended']:>13.1f}"
            print(f"{policy:>12} {name:>10} {r['threads']:>7} {times} {slowdown:>8.2f}x", flush=True)
        f, s = found["facet"], found["sevenn"]
        print(
            f"{policy:>12} facet_calc's lead over sevenn: alone {s['alone'] / f['alone']:.2f}x, "
            f"contended {s['contended'] / f['contended']:.2f}x; slowdown facet / sevenn "
            f"{(f['contended'] / f['alone']) / (s['contended'] / s['alone']):.2f} (goal <= 1)"
        )
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
