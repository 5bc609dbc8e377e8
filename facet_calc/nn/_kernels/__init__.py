"""Optional fused kernels: for the CPU, compiled on first use with the system C++ compiler and
loaded by ctypes; for CUDA GPUs, in Triton (``triton_spline_conv.py``).

The kernels are plain C++ (no torch headers), so compiling takes about a second; the shared
library is cached under ``$FACET_CALC_CACHE`` (default ``~/.cache/facet_calc``), keyed by the
source, the compiler and the processor. Where no compiler is found, or ``FACET_CALC_KERNELS=0``
is set, :func:`spline_conv_library` returns ``None`` and the pure-torch path is used: same
results, slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("spline_conv.cpp")
# No -ffast-math: linking with it pulls in crtfastmath, which flushes subnormals to zero in the
# whole process once the library loads (benchmarks/kernel_flags.py: it bought nothing measurable).
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        model = next((line for line in text.splitlines() if line.startswith("model name")), "")
        return model + flags
    except OSError:
        return platform.processor()


def _cache_dir() -> Path:
    return Path(os.environ.get("FACET_CALC_CACHE", Path.home() / ".cache" / "facet_calc"))


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_lib = Path(tmp) / target.name
        cmd = [compiler, *_FLAGS, str(_SOURCE), "-o", str(tmp_lib)]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        os.replace(tmp_lib, target)  # atomic: concurrent processes never load a partial file


def kernel_threads() -> int:
    """Threads for one CPU kernel launch: torch's setting (``torch.set_num_threads``, which
    follows ``OMP_NUM_THREADS``), but never more than the CPUs this process may run on (its
    affinity mask: ``taskset``, containers, batch schedulers). More threads than CPUs make
    OpenMP's barriers wait on threads that are not running."""
    import torch

    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this platform
        allowed = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), allowed))


@cache
def spline_conv_library() -> ctypes.CDLL | None:
    """The compiled fused-convolution library, or ``None`` when it cannot be had here."""
    if os.environ.get("FACET_CALC_KERNELS", "1") == "0":
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        logger.info("no C++ compiler found: facet_calc uses its pure-torch convolution")
        return None
    if not _SOURCE.is_file():
        logger.warning("the kernel source %s is missing; using the pure-torch path", _SOURCE)
        return None
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + compiler.encode() + " ".join(_FLAGS).encode() + _cpu_signature().encode())
    target = _cache_dir() / f"spline_conv_{key.hexdigest()[:16]}.so"
    if not target.is_file():
        try:
            _compile(compiler, target)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            logger.warning("compiling the CPU kernels failed, using the pure-torch path: %s", detail)
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError as err:
        logger.warning("loading the CPU kernels failed (%s); using the pure-torch path", err)
        return None


@cache
def triton_backend():
    """The Triton kernels for CUDA devices, or ``None`` without Triton (or with
    ``FACET_CALC_KERNELS=0``)."""
    if os.environ.get("FACET_CALC_KERNELS", "1") == "0":
        return None
    try:
        from .triton_spline_conv import TritonBackend
    except ImportError:
        logger.info("Triton is not installed: facet_calc uses its pure-torch convolution on the GPU")
        return None
    return TritonBackend()
