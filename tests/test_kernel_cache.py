"""The CPU kernel cache is trusted only when it deserves it: a library is loaded only from a
private directory and only when it matches the digest recorded when it was built; every failure
falls back to the pure-torch path, which gives the same numbers.

Hostile cases run in a subprocess that imports only the (stdlib-only) loader module, so a wrong
behaviour (SIGBUS on a truncated file, a planted constructor running) cannot take pytest down."""

import json
import os
import stat
import sys
from pathlib import Path

import processes
import pytest

from facet_calc.nn import _kernels
from facet_calc.nn._kernels import _cache_dir, find_compiler, library_name

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="needs a C++ compiler")

LOADER = Path(_kernels.__file__)

# load the loader module alone (no torch import: about 50 ms) and report what it did
PROBE = f"""
import importlib.util, json, logging, os, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING, format="%(message)s")
spec = importlib.util.spec_from_file_location("kernels", {str(LOADER)!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
mode = sys.argv[1]
lib = mod.spline_conv_library() if mode == "default" else mod.load_spline_conv(Path(sys.argv[2]))
print(json.dumps({{"loaded": lib is not None, "path": None if lib is None else lib._name}}))
"""

# a library whose constructor leaves a marker: what an attacker would plant
PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("PLANT_MARKER"), "w"); if (f) { fputs("ran", f); fclose(f); }
}
"""


def _probe(tmp_path, mode, folder="", **env):
    run = processes.run(
        [sys.executable, "-c", PROBE, mode, str(folder)],
        what=f"the kernel loader probe ({mode} {folder})",
        timeout=50,  # measured 0.3-3.6 s, 4.7 s with a build
        env={**os.environ, "PLANT_MARKER": str(tmp_path / "marker"), **env},
    )
    assert run.returncode == 0, f"the loader crashed (status {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A library built once by the loader itself, with its recorded digest."""
    folder = tmp_path_factory.mktemp("kernels")
    folder.chmod(0o700)
    assert _kernels.load_spline_conv(folder) is not None
    name = library_name(find_compiler())
    return folder / name, folder / (name + ".sha256")


def _private_copy(built, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    for f in built:
        (folder / f.name).write_bytes(f.read_bytes())
    return folder, folder / built[0].name


def _compile(source, target):
    cmd = [find_compiler(), "-x", "c", "-shared", "-fPIC", str(source), "-o", str(target)]
    done = processes.run(cmd, what=f"the C compiler on {source.name}", timeout=10)  # measured 0.1-0.5 s: a floor
    assert done.returncode == 0, done.stderr[-2000:]


def _plant(tmp_path, target):
    source = tmp_path / "planted.c"
    source.write_text(PLANTED)
    _compile(source, target)


def test_a_fresh_build_records_its_digest(built):
    library, record = built
    assert record.read_text().strip() == _kernels._digest(library)


@pytest.mark.integration
def test_a_truncated_library_is_rebuilt_not_loaded(built, tmp_path):
    folder, target = _private_copy(built, tmp_path)
    target.write_bytes(target.read_bytes()[:4096])  # loading this would SIGBUS
    result, _ = _probe(tmp_path, "load", folder)
    assert result["loaded"]
    assert target.read_bytes() == built[0].read_bytes()  # rebuilt in place


@pytest.mark.integration
def test_a_library_without_a_recorded_digest_is_never_loaded(built, tmp_path):
    folder, target = _private_copy(built, tmp_path)
    (folder / (target.name + ".sha256")).unlink()
    _plant(tmp_path, target)
    result, _ = _probe(tmp_path, "load", folder)
    assert result["loaded"]
    assert not (tmp_path / "marker").exists(), "a library nobody vouched for ran its constructor"


@pytest.mark.integration
def test_a_cache_others_can_write_is_not_used(built, tmp_path):
    folder, target = _private_copy(built, tmp_path)
    _plant(tmp_path, target)
    (folder / (target.name + ".sha256")).write_text(_kernels._digest(target) + "\n")  # even with a digest
    folder.chmod(0o777)
    result, stderr = _probe(tmp_path, "default", FACET_CALC_CACHE=str(folder))
    assert not (tmp_path / "marker").exists(), "a library planted in a world-writable cache ran"
    assert "not a directory owned by you and closed to others" in stderr
    assert result["loaded"] and not result["path"].startswith(str(folder))


@pytest.mark.integration
def test_a_library_lacking_the_kernels_falls_back(built, tmp_path):
    folder, target = _private_copy(built, tmp_path)
    source = tmp_path / "empty.c"
    source.write_text("int unrelated(void) { return 0; }\n")
    _compile(source, target)
    (folder / (target.name + ".sha256")).write_text(_kernels._digest(target) + "\n")
    result, stderr = _probe(tmp_path, "load", folder)
    assert not result["loaded"] and "lacks" in stderr


def test_empty_cache_variable_means_the_default_not_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("FACET_CALC_CACHE", "")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _cache_dir() == tmp_path / ".cache" / "facet_calc"


def test_no_home_directory_builds_in_a_private_temporary_directory(monkeypatch):
    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("FACET_CALC_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert _cache_dir() is None
    assert _kernels._private_cache_dir() is None
    library = _kernels.load_spline_conv(None)
    assert library is not None
    folder = Path(library._name).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
