"""Potential files: index, sha256 checks, no code execution, clear errors."""

import json
import shutil

import pytest
import torch

from facet_calc import list_potentials, load_potential
from facet_calc.potential import INDEX_FILE, WEIGHTS_FILE, potentials_dir, sha256_of


def test_shipped_potentials_are_listed():
    assert {"7net-0-spline", "7net-l3i5-spline"} <= set(list_potentials())


def test_index_digests_match_every_shipped_file():
    folder = potentials_dir()
    index = json.loads((folder / INDEX_FILE).read_text())
    for name, entry in index.items():
        for fname, digest in entry["sha256"].items():
            assert sha256_of(folder / name / fname) == digest, f"{name}/{fname}"


def test_weights_are_safetensors_not_pickles():
    for name in list_potentials():
        head = (potentials_dir() / name / WEIGHTS_FILE).read_bytes()[:16]
        assert not head.startswith(b"\x80"), "pickle protocol header found"
        header_len = int.from_bytes(head[:8], "little")
        header = json.loads((potentials_dir() / name / WEIGHTS_FILE).read_bytes()[8 : 8 + header_len])
        assert all("dtype" in v for k, v in header.items() if k != "__metadata__")


def _copy(tmp_path, name="7net-0-spline"):
    src = potentials_dir()
    shutil.copytree(src / name, tmp_path / name)
    index = json.loads((src / INDEX_FILE).read_text())
    (tmp_path / INDEX_FILE).write_text(json.dumps({name: index[name]}))
    return tmp_path / name


def test_a_copied_folder_loads_and_is_verified(tmp_path):
    folder = _copy(tmp_path)
    potential = load_potential(folder, dtype="float32")
    assert potential.cutoff == 5.0 and potential.dtype == torch.float32


def test_modified_weights_are_refused(tmp_path):
    folder = _copy(tmp_path)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last tensor
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted or was modified"):
        load_potential(folder)


def test_truncated_file_without_index_gives_a_clear_error(tmp_path):
    folder = _copy(tmp_path)
    (tmp_path / INDEX_FILE).unlink()
    with pytest.raises(ValueError, match="not listed in an index.json"):
        load_potential(folder)
    (folder / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_potential(folder, verify=False)


def test_missing_file_is_named(tmp_path):
    folder = _copy(tmp_path)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        load_potential(folder)


def test_unknown_name_lists_known_potentials():
    with pytest.raises(ValueError, match="known potentials are 7net-0-spline, 7net-l3i5-spline"):
        load_potential("mace-mp-0")
