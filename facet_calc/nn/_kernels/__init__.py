"""Optional fused kernels: for the CPU, compiled on first use with the system C++ compiler and
loaded by ctypes (``spline_conv.cpp``: the fused convolution; ``component_linear.cpp``: the
per-order linear maps on e3nn's layout; ``s2_grid.cpp``: the S2 mixer's grid step;
``neighbours.cpp``: a cell list for fully periodic cells; one library); for CUDA GPUs, in Triton
(``triton_spline_conv.py``).

The kernels are plain C++ (no torch headers), so compiling takes about a second; the shared
library is cached under ``$FACET_CALC_CACHE`` (default ``~/.cache/facet_calc``), keyed by the
sources, the compiler and the processor. A cached library is loaded only from a directory owned by
this user and closed to others, and only when it matches the sha256 recorded beside it when it was
built; a truncated or planted file is never loaded but rebuilt. Where no compiler is found, or ``FACET_CALC_KERNELS=0``
is set, :func:`spline_conv_library` returns ``None`` and the pure-torch path is used: same
results, slower.

On x86-64 the library is built for one instruction-set level (:data:`ISA_LEVELS`: ``avx512``
= x86-64-v4, ``avx2`` = x86-64-v3, ``generic`` = x86-64, the baseline), chosen at run time as the best one
this CPU has (its /proc/cpuinfo flags); ``FACET_CALC_ISA`` forces one (e.g. to measure the
AVX2 build on an AVX-512 machine), and asking for one the CPU lacks is an error. The level is
part of the cache key and of the file name, and a library is never loaded on a CPU lacking its
level's instructions (it would die of an illegal instruction). Elsewhere (ARM, ...) the level
is ``native`` (``-march=native``, keyed by the processor).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: the CPU library's translation units (fused convolution, per-order linear, S2 grid, periodic
#: neighbour list) and their shared header
_SOURCES = tuple(Path(__file__).with_name(name)
                 for name in ("spline_conv.cpp", "component_linear.cpp", "s2_grid.cpp", "neighbours.cpp"))
_HEADERS = (Path(__file__).with_name("vectors.h"),)
# No -ffast-math: linking with it pulls in crtfastmath, which flushes subnormals to zero in the
# whole process once the library loads (benchmarks/kernel_flags.py: it bought nothing measurable).
_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC"]

#: instruction-set levels of the x86-64 builds, best first: the compiler flags of each and the
#: /proc/cpuinfo flags a CPU needs to run it. The levels are x86-64-v4 and -v3, spelled out as
#: feature flags because compilers before GCC 11 and clang 12 do not know the -march=x86-64-vN
#: names (there the build would fail and the slow torch path run).
_V3 = ["-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf", "-mavx", "-mavx2", "-mfma",
       "-mbmi", "-mbmi2", "-mf16c", "-mmovbe", "-mlzcnt", "-mxsave"]  # fmt: skip
_V3_CPU = frozenset({"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave", "sse4_2", "popcnt"})
ISA_LEVELS: dict[str, tuple[list[str], frozenset[str]]] = {
    # 512-bit vectors preferred: GCC's generic tuning otherwise keeps AVX-512 code at 256 bits
    "avx512": (["-march=x86-64", *_V3, "-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl",
                "-mprefer-vector-width=512"],
               _V3_CPU | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    "avx2": (["-march=x86-64", *_V3], _V3_CPU),
    "generic": (["-march=x86-64"], frozenset()),
}  # fmt: skip
#: the level off x86-64: whatever this processor has (the cache key names the processor)
NATIVE = "native"


@cache
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; ``None`` where there is none (not Linux).
    Read once per process: reading /proc/cpuinfo takes ~1 ms, and the launcher asks per layer."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith("flags")), None)
    return None if line is None else frozenset(line.split(":", 1)[1].split())


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def supported_isas() -> list[str]:
    """The levels this CPU can run, best first (``["native"]`` off x86-64)."""
    if not _is_x86():
        return [NATIVE]
    flags = _cpu_flags()
    if flags is None:  # x86-64 without /proc/cpuinfo: only the baseline is known to be safe
        return ["generic"]
    return [isa for isa, (_, needs) in ISA_LEVELS.items() if needs <= flags]


def kernel_isa() -> str:
    """The level to build and run: ``FACET_CALC_ISA`` if set (``auto`` or empty: the best this
    CPU has), read at every call. ``RuntimeError`` for a level this CPU lacks or an unknown one."""
    choice = os.environ.get("FACET_CALC_ISA", "").strip().lower() or "auto"
    supported = supported_isas()
    if choice == "auto":
        return supported[0]
    known = [*ISA_LEVELS, NATIVE]
    if choice not in known:
        raise RuntimeError(f"FACET_CALC_ISA={choice!r} is not an instruction-set level; choose one of "
                           f"'auto', {', '.join(map(repr, known))} (or unset it)")  # fmt: skip
    if choice not in supported:
        flags = _cpu_flags() or frozenset()
        lacking = sorted(ISA_LEVELS[choice][1] - flags) if choice in ISA_LEVELS else ["an x86-64 CPU"]
        raise RuntimeError(
            f"FACET_CALC_ISA={choice!r} asks for CPU kernels this CPU cannot run (it lacks "
            f"{', '.join(lacking)}): the library would die of an illegal instruction. Set FACET_CALC_ISA to "
            f"one of {', '.join(map(repr, supported))} or 'auto', or unset it"
        )  # fmt: skip
    return choice


def isa_flags(isa: str) -> list[str]:
    """Compiler flags of one level."""
    return ["-march=native"] if isa == NATIVE else list(ISA_LEVELS[isa][0])


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        model = next((line for line in text.splitlines() if line.startswith("model name")), "")
        return model + flags
    except OSError:
        return platform.processor()


#: the functions the CPU library must export; a library lacking any is not used
_SYMBOLS = (*(f"spline_conv_{pass_}_{t}" for pass_ in ("forward", "backward") for t in ("f32", "f64")),
            "component_linear_f32", "component_linear_f64", "s2_grid_silu_f32", "s2_grid_silu_f64",
            "periodic_neighbour_pairs")


def _cache_dir() -> Path | None:
    """``$FACET_CALC_CACHE`` if set and not empty, else ``$XDG_CACHE_HOME/facet_calc`` or
    ``~/.cache/facet_calc``; ``None`` when there is no home directory to put it in."""
    configured = os.environ.get("FACET_CALC_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "facet_calc"
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None
    if not home.is_absolute():
        return None
    return home / ".cache" / "facet_calc"


def _is_private(path: Path) -> bool:
    """True when ``path`` (not a symlink) is owned by this user and nobody else may write it."""
    try:
        info = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return False
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return owner_ok and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _private_cache_dir() -> Path | None:
    """The cache directory, created private (0700) if missing; ``None`` (with a warning) when
    it exists but is not private (others could plant a library there), or cannot be created."""
    folder = _cache_dir()
    if folder is None:
        logger.warning("no home directory and FACET_CALC_CACHE is not set: the CPU kernels are built in "
                       "a private temporary directory for this process only")  # fmt: skip
        return None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        logger.warning("cannot create the kernel cache %s (%s): building in a private temporary directory",
                       folder, err)  # fmt: skip
        return None
    if not _is_private(folder):
        logger.warning(
            "the kernel cache %s is not a directory owned by you and closed to others (another user could "
            "plant a library there): building in a private temporary directory instead; fix it with "
            "'chmod 700 %s' or set FACET_CALC_CACHE", folder, folder,
        )  # fmt: skip
        return None
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_file(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _compile(compiler: str, target: Path, isa: str) -> None:
    """Compile into a temporary file, record its sha256 beside it, then move both into place
    (os.replace is atomic: concurrent processes never load a partial library)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_lib = Path(tmp) / target.name
        cmd = [compiler, *isa_flags(isa), *_FLAGS, *map(str, _SOURCES), "-o", str(tmp_lib)]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        tmp_digest = Path(tmp) / (target.name + ".sha256")
        tmp_digest.write_text(_digest(tmp_lib) + "\n")
        os.replace(tmp_lib, target)
        os.replace(tmp_digest, _digest_file(target))


def kernel_threads() -> int:
    """Threads for one CPU kernel launch: torch's setting (``torch.set_num_threads``, which
    follows ``OMP_NUM_THREADS``), but never more than the CPUs this process may run on (its
    affinity mask: ``taskset``, containers, batch schedulers). More threads than CPUs make
    OpenMP's barriers wait on threads that are not running."""
    import torch

    return max(1, min(torch.get_num_threads(), _allowed_cpus()))


#: how long (s) a read of the affinity mask is reused: a step launches ~70 kernels, and the
#: system call each time cost ~0.3 ms of a 10 ms step of 16 atoms
_AFFINITY_TTL = 1.0
_affinity: tuple[float, int] = (-_AFFINITY_TTL, 1)


def _allowed_cpus() -> int:
    """CPUs in this process's affinity mask, re-read at most every :data:`_AFFINITY_TTL` s."""
    global _affinity
    now = time.monotonic()
    if now - _affinity[0] >= _AFFINITY_TTL:
        try:
            allowed = len(os.sched_getaffinity(0))
        except AttributeError:  # no affinity masks on this platform
            allowed = os.cpu_count() or 1
        _affinity = (now, allowed)
    return _affinity[1]


def _trusted(target: Path) -> bool:
    """A library we built: a private file whose sha256 matches the digest recorded when it was
    built (a truncated, corrupted or replaced file fails this and is rebuilt, never loaded)."""
    record = _digest_file(target)
    if not (_is_private(target) and _is_private(record)):
        return False
    try:
        return record.read_text().strip() == _digest(target)
    except OSError:
        return False


def library_name(compiler: str, isa: str | None = None) -> str:
    """File name of the library: keyed by the sources, the compiler, its flags, the instruction
    -set level (``None``: :func:`kernel_isa`, also named in the file name) and the processor."""
    isa = kernel_isa() if isa is None else isa
    flags = " ".join([*isa_flags(isa), *_FLAGS])
    sources = b"".join(path.read_bytes() for path in (*_SOURCES, *_HEADERS))
    key = hashlib.sha256(sources + compiler.encode() + flags.encode() + _cpu_signature().encode())
    return f"spline_conv_{isa}_{key.hexdigest()[:16]}.so"


def find_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def load_spline_conv(cache_dir: Path | None, isa: str | None = None) -> ctypes.CDLL | None:
    """Build (or reuse) and load the CPU library of level ``isa`` (``None``: :func:`kernel_isa`)
    in ``cache_dir`` (``None``: a fresh private temporary directory). Every failure returns
    ``None`` with a warning: the pure-torch path then gives the same numbers. A level this CPU
    cannot run is refused (``RuntimeError``) before anything is built or loaded."""
    isa = kernel_isa() if isa is None else isa
    if isa not in supported_isas():
        raise RuntimeError(f"the {isa} build of the CPU kernels cannot run on this CPU "
                           f"(it runs {', '.join(supported_isas())}); refusing to load it")  # fmt: skip
    compiler = find_compiler()
    if compiler is None:
        logger.info("no C++ compiler found: facet_calc uses its pure-torch convolution")
        return None
    missing = [path for path in (*_SOURCES, *_HEADERS) if not path.is_file()]
    if missing:
        logger.warning("the kernel sources %s are missing; using the pure-torch path", missing)
        return None
    if cache_dir is None:
        cache_dir = Path(tempfile.mkdtemp(prefix="facet_calc_kernels_"))  # mode 0700, ours alone
    target = cache_dir / library_name(compiler, isa)
    if not _trusted(target):
        try:
            _compile(compiler, target, isa)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            logger.warning("compiling the CPU kernels failed, using the pure-torch path: %s", detail)
            return None
        if not _trusted(target):
            logger.warning("the CPU kernels just built in %s fail their digest check; using the pure-torch path",
                           cache_dir)  # fmt: skip
            return None
    try:
        library = ctypes.CDLL(str(target))
    except OSError as err:
        logger.warning("loading the CPU kernels failed (%s); using the pure-torch path", err)
        return None
    missing = [symbol for symbol in _SYMBOLS if not hasattr(library, symbol)]
    if missing:
        logger.warning("the CPU kernel library %s lacks %s; using the pure-torch path", target, missing)
        return None
    return library


def kernels_enabled() -> bool:
    """False when the environment sets ``FACET_CALC_KERNELS=0``; read at every call, so a
    change takes effect at the next evaluation (nothing is frozen at the first one)."""
    return os.environ.get("FACET_CALC_KERNELS", "1") != "0"


def spline_conv_library(isa: str | None = None) -> ctypes.CDLL | None:
    """The compiled fused-convolution library of level ``isa`` (``None``: :func:`kernel_isa`,
    which reads ``FACET_CALC_ISA``), or ``None`` when it cannot be had here.

    Loaded only from a private cache directory (owned by this user, closed to others) and only
    when its sha256 matches the digest recorded when it was built; otherwise it is rebuilt (in a
    private temporary directory when the cache is not private). Loaded once per process and
    level (:func:`reset_kernels` forgets them)."""
    return _library_of(kernel_isa() if isa is None else isa)


@cache
def _library_of(isa: str) -> ctypes.CDLL | None:
    library = load_spline_conv(_private_cache_dir(), isa)
    if library is not None:
        library.isa = isa
    return library


@cache
def triton_backend():
    """The Triton kernels for CUDA devices, or ``None`` without Triton."""
    try:
        from .triton_spline_conv import TritonBackend
    except ImportError:
        logger.info("Triton is not installed: facet_calc uses its pure-torch convolution on the GPU")
        return None
    return TritonBackend()


def kernel_launcher(device: torch.device):
    """The fused-kernel launcher for ``device`` (CPU: compiled C++; CUDA: Triton), or ``None``
    when none can serve it here or ``FACET_CALC_KERNELS=0`` (then the pure-torch path runs)."""
    if not kernels_enabled():
        return None
    if device.type == "cpu":
        library = spline_conv_library()
        return None if library is None else _cpu_backend(library)
    if device.type == "cuda":
        return triton_backend()
    return None


def cpu_launcher_for(x: torch.Tensor):
    """The compiled CPU launcher for work on ``x``: a CPU tensor of float32 or float64 where the
    library is loaded and switched on (:func:`kernel_launcher`), else ``None`` (then torch)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return kernel_launcher(x.device)


@cache
def _cpu_backend(library: ctypes.CDLL):
    """One launcher per loaded library (it declares the functions' signatures once)."""
    from .cpu import CpuBackend

    return CpuBackend(library, library.isa)


def reset_kernels() -> None:
    """Forget the loaded kernels (tests that rebuild or switch them off call this)."""
    _library_of.cache_clear()
    _cpu_backend.cache_clear()
    triton_backend.cache_clear()
