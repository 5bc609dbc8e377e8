"""Where a CPU energy + forces + stress step spends its time and its FLOPs, against the core's peak.

    python benchmarks/roofline.py                                   # 16/216/1000 Si, 3 potentials
    python benchmarks/roofline.py --sizes 216 1000 4096 --potentials 7net-0-spline
    FACET_CALC_ISA=avx2 python benchmarks/roofline.py ...           # the AVX2 build of the kernel

One thread, float32 by default. Per stage: median time over the repeats (ms), FLOPs of one step
and achieved GFLOP/s; then the whole step's FLOPs, GFLOP/s and fraction of the measured peak.

Peak: one core's FP32 FMA throughput, *measured* by a tight loop of independent FMAs (16
accumulators, so the FMA latency is hidden) compiled for AVX-512 and for AVX2, and the nominal
figure ``FMA units x lanes x 2 x clock`` with the clock of /proc/cpuinfo (under a hypervisor that
is often the TSC's rate, not the turbo clock: the measured figure is the one used).

FLOPs (one multiply-add = 2) are computed from shapes, not sampled:

* fused convolution, per edge of each input block (mul channels, order m1 = 2 l1 + 1, cols
  output columns over its n_paths paths, as in ``_kernels/spline_conv.cpp``):
  forward ``2 (cols m1 mul + cols mul + 4 n_paths mul)`` (contraction with the sender's
  features, spline-weight product, cubic spline evaluation from 4 table rows); backward
  ``2 (3 cols m1 mul + 1.5 cols mul + 8 n_paths mul)`` (contraction again, grad A, grad x, the
  spline's products, spline evaluation and grad beta);
  plus the per-edge coupling ``A = Y @ coupling`` that the kernel forms itself, ``2 dim_Y cols
  m1`` forward and twice that backward (A again, and grad Y);
* every matrix product torch runs (linears, the Facet mixer's grid projections, readout):
  ``2 M N K``, counted by a
  ``TorchDispatchMode`` and charged to the stage running; except the frozen FastLinear's
  products, which for narrow orders multiply by ``kron(W_l, I_d)`` (d times the products, most
  of them by zero): those count the useful ``2 N mul_in mul_out d`` per order instead;
* element-wise work (spherical harmonics, spline basis, gates, activations, scatters) is not
  counted (a few hundred FLOPs per edge against ~10^5 for the matrices), so the FLOP rates of
  those stages read 0 and the step's FLOP count is a slight under-count.

Times are CPU time of the (one) thread, ``time.thread_time``: on a machine shared with other
jobs, wall time counts the time the thread waits for a core, CPU time does not (caches disturbed
by the other jobs still slow it). Stages are timed by hooks on the modules (forward, exclusive
of nested stages) and by wrapping the kernels' autograd functions (backward). "other backward +
autograd" is the step's time not in any named stage: the backward of the element-wise stages and
autograd's bookkeeping.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import subprocess
import tempfile
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from e3nn import o3
from speed import silicon
from torch.utils._python_dispatch import TorchDispatchMode

from facet_calc import FacetCalculator
from facet_calc.graph import graph_from_atoms
from facet_calc.nn import evaluate
from facet_calc.nn._kernels import cpu as kernel_cpu
from facet_calc.nn._kernels import kernel_launcher
from facet_calc.nn.blocks import fast_convolution as fc
from facet_calc.nn.blocks import fast_linear as fl
from facet_calc.nn.blocks.fast_gate import FastGate
from facet_calc.nn.blocks.fast_linear import FastLinear

FMA_SOURCE = r"""
#include <immintrin.h>
// independent accumulators in named registers (an array could live in memory at -O2)
#define FMA8(F, T) T a0 = F##_set1_ps(1.f), a1 = F##_set1_ps(2.f), a2 = F##_set1_ps(3.f), a3 = F##_set1_ps(4.f), \
  a4 = F##_set1_ps(5.f), a5 = F##_set1_ps(6.f), a6 = F##_set1_ps(7.f), a7 = F##_set1_ps(8.f), a8 = a0, a9 = a1, \
  a10 = a2, a11 = a3; const T b = F##_set1_ps(0.999999f), c = F##_set1_ps(1e-7f); \
  for (long i = 0; i < n; ++i) { a0 = F##_fmadd_ps(a0, b, c); a1 = F##_fmadd_ps(a1, b, c); \
    a2 = F##_fmadd_ps(a2, b, c); a3 = F##_fmadd_ps(a3, b, c); a4 = F##_fmadd_ps(a4, b, c); \
    a5 = F##_fmadd_ps(a5, b, c); a6 = F##_fmadd_ps(a6, b, c); a7 = F##_fmadd_ps(a7, b, c); \
    a8 = F##_fmadd_ps(a8, b, c); a9 = F##_fmadd_ps(a9, b, c); a10 = F##_fmadd_ps(a10, b, c); \
    a11 = F##_fmadd_ps(a11, b, c); } \
  T s = F##_add_ps(F##_add_ps(F##_add_ps(a0, a1), F##_add_ps(a2, a3)), F##_add_ps(F##_add_ps(a4, a5), \
    F##_add_ps(a6, a7))); s = F##_add_ps(s, F##_add_ps(F##_add_ps(a8, a9), F##_add_ps(a10, a11)));
extern "C" __attribute__((target("avx512f"))) float fma512(long n) {
  FMA8(_mm512, __m512) return _mm512_reduce_add_ps(s);
}
extern "C" __attribute__((target("avx2,fma"))) float fma256(long n) {
  FMA8(_mm256, __m256) float t[8]; _mm256_storeu_ps(t, s); return t[0] + t[7];
}
"""


def cpu_name_and_flags() -> tuple[str, set[str], float | None]:
    text = Path("/proc/cpuinfo").read_text()
    lines = text.splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    mhz = next((float(ln.split(":", 1)[1]) for ln in lines if ln.startswith("cpu MHz")), None)
    return name, flags, mhz


def measured_peak() -> dict[str, float]:
    """GFLOP/s of one core's FMA loop, per ISA the CPU has (best of 20 runs of ~0.05 s, CPU
    time)."""
    _, flags, _ = cpu_name_and_flags()
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = Path(tmp) / "fma.cpp", Path(tmp) / "fma.so"
        src.write_text(FMA_SOURCE)
        subprocess.run(["g++", "-O2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
        dll = ctypes.CDLL(str(lib))
    out = {}
    for isa, fn, lanes, acc, need in (("avx512", "fma512", 16, 12, "avx512f"), ("avx2", "fma256", 8, 12, "avx2")):
        if need not in flags:
            continue
        f = getattr(dll, fn)
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_long]
        n = 500_000
        best = math.inf
        for _ in range(20):
            t0 = time.thread_time()
            f(n)
            best = min(best, time.thread_time() - t0)
        out[isa] = n * acc * lanes * 2 / best / 1e9
    return out


class Stages:
    """Exclusive wall time and FLOPs per named stage; stages nest (a stack)."""

    def __init__(self) -> None:
        self.time = defaultdict(float)
        self.flops = defaultdict(float)
        self.stack: list[list] = []  # [name, start, child time]
        self.uncounted = 0  # > 0: inside a computation whose FLOPs are counted from its shapes

    @contextmanager
    def stage(self, name: str):
        self.push(name)
        try:
            yield
        finally:
            self.pop()

    def push(self, name: str) -> None:
        self.stack.append([name, time.thread_time(), 0.0])

    def pop(self) -> None:
        name, start, child = self.stack.pop()
        spent = time.thread_time() - start
        self.time[name] += spent - child
        if self.stack:
            self.stack[-1][2] += spent

    @property
    def current(self) -> str:
        return self.stack[-1][0] if self.stack else "other backward + autograd"


class MatmulFlops(TorchDispatchMode):
    """2 M N K per matrix product, charged to the running stage."""

    def __init__(self, stages: Stages) -> None:
        super().__init__()
        self.stages = stages

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        flops = 0
        if name in ("mm", "addmm", "addmm_"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        elif name in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
            flops = 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        if not self.stages.uncounted:
            self.stages.flops[self.stages.current] += flops
        return func(*args, **kwargs)


def kernel_flops(n_edges: int, dims, backward: bool, dim_sh: int = 0) -> float:
    """FLOPs of one kernel launch (see the module docstring); ``dim_sh`` > 0 when the kernel also
    forms the coupling A = Y @ coupling (forward) and A and grad Y (backward) itself."""
    mul, m1, cols, n_paths = dims
    coupling = 2.0 * n_edges * dim_sh * cols * m1
    if backward:
        return 2.0 * n_edges * (3 * cols * m1 * mul + 1.5 * cols * mul + 8 * n_paths * mul) + 2 * coupling
    return 2.0 * n_edges * (cols * m1 * mul + cols * mul + 4 * n_paths * mul) + coupling


@contextmanager
def instrumented(model: torch.nn.Module, stages: Stages):
    """Hooks on the model's modules and wrappers on the kernels, removed on exit."""
    handles, restore = [], []

    def hook(module, name):
        handles.append(module.register_forward_pre_hook(lambda *_: stages.push(name)))
        handles.append(module.register_forward_hook(lambda *_: stages.pop()))

    for qual, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, o3.SphericalHarmonics):
            hook(module, "spherical harmonics")
        elif isinstance(module, fc.FastSplineConvolution):
            hook(module, "convolution fwd (torch part)")
        elif isinstance(module, FastLinear) and not kind.startswith("_"):
            hook(module, "linears fwd")
        elif isinstance(module, FastGate) or kind in ("S2Mixer", "ScalarMLP", "ScaledResidual"):
            hook(module, "gates / mixer fwd")
        elif qual.startswith("readout") or qual == "embedding":
            hook(module, "embedding + readout fwd")

    def wrap(owner, attr, name, flops=None, static=False):
        original = owner.__dict__[attr]
        fn = original.__func__ if static else original

        def wrapped(*args, **kwargs):
            with stages.stage(name):
                if flops is not None:
                    stages.flops[name] += flops(*args)
                return fn(*args, **kwargs)

        setattr(owner, attr, staticmethod(wrapped) if static else wrapped)
        restore.append((owner, attr, original))

    wrap(fc.EdgeContext, "_make_basis", "spline basis (rows, beta)")
    wrap(kernel_cpu.CpuBackend, "forward_block", "fused kernel fwd",
         lambda self, graph, sh, coupling, xt, rows, beta, table, poc, om, dims, *r:
         kernel_flops(sh.shape[0], dims, False, sh.shape[1]))  # fmt: skip
    wrap(kernel_cpu.CpuBackend, "backward_block", "fused kernel bwd",
         lambda self, graph, sh, coupling, xt, rows, beta, table, poc, dims, *r:
         kernel_flops(sh.shape[0], dims, True, sh.shape[1]))  # fmt: skip
    wrap(fc._FusedConvolution, "backward", "convolution bwd (torch part)", static=True)
    def frozen_linear(owner, attr, name):
        """_FrozenLinear's forward/backward: the useful FLOPs of its plan, not its products'."""
        original = owner.__dict__[attr]
        fn = original.__func__

        def wrapped(ctx, tensor, *rest):
            plan = rest[1] if rest else ctx.plan
            n = tensor.shape[0]
            useful = sum(2 * n * w.shape[0] * w.shape[1] / ((2 * l + 1) if kron else 1 / (2 * l + 1))
                         for l, _, w, kron, _ in plan if w is not None)  # fmt: skip
            stages.flops[stages.current if name is None else name] += useful
            stages.uncounted += 1
            try:
                if name is None:
                    return fn(ctx, tensor, *rest)
                with stages.stage(name):
                    return fn(ctx, tensor, *rest)
            finally:
                stages.uncounted -= 1

        setattr(owner, attr, staticmethod(wrapped))
        restore.append((owner, attr, original))

    frozen_linear(fl._FrozenLinear, "forward", None)
    frozen_linear(fl._FrozenLinear, "backward", "linears bwd")
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for owner, attr, original in restore:
            setattr(owner, attr, original)


ORDER = ["neighbour list", "spherical harmonics", "spline basis (rows, beta)", "convolution fwd (torch part)",
         "fused kernel fwd", "linears fwd", "gates / mixer fwd", "embedding + readout fwd", "fused kernel bwd",
         "convolution bwd (torch part)", "linears bwd", "other backward + autograd"]  # fmt: skip


def silicon_exactly(n_atoms: int, seed: int = 0):
    """Rattled diamond Si of exactly ``n_atoms`` atoms when it is 8 a b c (the 8-atom cubic cell
    repeated a x b x c, as cubic as possible), else :func:`speed.silicon`'s nearest cube."""
    if n_atoms % 8:
        return silicon(n_atoms, seed)
    cells = n_atoms // 8
    best = min(((a, b, cells // (a * b)) for a in range(1, cells + 1) for b in range(1, cells + 1)
                if cells % (a * b) == 0), key=lambda r: max(r) - min(r))  # fmt: skip
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(best)
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


def profile(name: str, n_atoms: int, repeats: int, dtype: str) -> tuple[dict, dict, float, int, int]:
    calc = FacetCalculator(name, dtype=dtype)
    potential = calc.potential
    model = potential.model
    atoms = silicon_exactly(n_atoms)
    rng = np.random.default_rng(0)
    times = defaultdict(list)
    totals = []
    flops = {}
    for k in range(repeats + 2):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        stages = Stages()
        counting = k == 0  # first pass: count FLOPs (the dispatch mode slows it; not timed)
        start = time.thread_time()
        with stages.stage("neighbour list"):
            graph = graph_from_atoms(atoms, potential.cutoff, potential.species).to(calc.device, potential.dtype)
        with instrumented(model, stages):
            if counting:
                with MatmulFlops(stages):
                    evaluate(model, graph)
            else:
                evaluate(model, graph)
        total = time.thread_time() - start
        if counting:
            flops = dict(stages.flops)
            continue
        if k == 1:
            continue  # warm-up
        named = sum(stages.time.values())
        stages.time["other backward + autograd"] += total - named
        for key, value in stages.time.items():
            times[key].append(value)
        totals.append(total)
    median = {key: float(np.median(v)) for key, v in times.items()}
    return median, flops, float(np.median(totals)), len(atoms), graph.n_edges


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 216, 1000])
    parser.add_argument("--potentials", nargs="+", default=["7net-0-spline", "7net-l3i5-spline", "facet-s-7net0"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cpu, flags, mhz = cpu_name_and_flags()
    peaks = measured_peak()
    launcher = kernel_launcher(torch.device("cpu"))
    isa = getattr(launcher, "isa", "?") if launcher is not None else "none (torch path)"
    best_isa = "avx512" if "avx512" in peaks else "avx2"
    peak = peaks[best_isa]
    lanes = 16 if best_isa == "avx512" else 8
    print(f"# CPU: {cpu}; 1 thread; {args.dtype}; kernel build: {isa}")
    print("# measured FP32 peak (FMA loop): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    if mhz:
        print(f"# nominal: 2 FMA units x {lanes} lanes x 2 x {mhz / 1e3:.2f} GHz (/proc/cpuinfo) = "
              f"{2 * lanes * 2 * mhz / 1e3:.1f} GFLOP/s; the measured {best_isa} peak is used below")  # fmt: skip
    for name in args.potentials:
        for n in args.sizes:
            median, flops, total, n_real, n_edges = profile(name, n, args.repeats, args.dtype)
            print(f"\n## {name}, {n_real} Si atoms, {n_edges} edges: {1e3 * total:.1f} ms/step, "
                  f"{1e6 * total / n_real:.0f} us/atom")  # fmt: skip
            print(f"{'stage':>40} {'ms':>9} {'share':>6} {'MFLOP':>10} {'GFLOP/s':>8}")
            all_flops = 0.0
            for stage in ORDER + sorted(set(median) - set(ORDER)):
                t, f = median.get(stage, 0.0), flops.get(stage, 0.0)
                all_flops += f
                rate = f / t / 1e9 if t > 0 else 0.0
                print(f"{stage:>40} {1e3 * t:9.2f} {100 * t / total:5.1f}% {f / 1e6:10.1f} {rate:8.1f}")
            rate = all_flops / total / 1e9
            print(f"{'whole step':>40} {1e3 * total:9.2f} {100:5.0f}% {all_flops / 1e6:10.1f} {rate:8.1f}"
                  f"   = {100 * rate / peak:.1f}% of peak; {all_flops / n_real / 1e6:.2f} MFLOP/atom")  # fmt: skip


if __name__ == "__main__":
    main()
