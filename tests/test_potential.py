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
    with pytest.warns(UserWarning, match="without checking its files"):
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


def _shifted_copy(tmp_path, name="7net-0-spline", shift_ev=100.0):
    """A folder with the shipped name whose per-species shift is moved by ``shift_ev``, and an
    index.json beside it that vouches for the altered files (what a leftover test folder or a
    planted one looks like)."""
    from safetensors.torch import load_file

    from facet_calc.potential import save_potential

    src = potentials_dir() / name
    tensors = load_file(str(src / WEIGHTS_FILE))
    tensors["shift"] = tensors["shift"] + shift_ev
    config = json.loads((src / "config.json").read_text())
    save_potential(tmp_path / name, config, tensors, (src / "card.md").read_text())
    return tmp_path / name


def test_a_bare_name_never_loads_a_folder_of_that_name(tmp_path, monkeypatch, potential32):
    _shifted_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    shipped = load_potential("7net-0-spline", dtype="float32")
    assert shipped.path.resolve() == (potentials_dir() / "7net-0-spline").resolve()
    assert torch.equal(shipped.model.shift, potential32.model.shift)
    # given as a path, the folder is loaded (its index vouches for it) and really is different
    local = load_potential("./7net-0-spline", dtype="float32")
    assert torch.allclose(local.model.shift, potential32.model.shift + 100.0)


def test_an_unknown_name_that_is_a_local_folder_says_how_to_load_it(tmp_path, monkeypatch):
    _copy(tmp_path)
    (tmp_path / "7net-0-spline").rename(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="pass it as a path: './mine'"):
        load_potential("mine")


def test_a_modified_card_is_refused(tmp_path):
    folder = _copy(tmp_path)
    (folder / "card.md").write_text("# trust me\n")
    with pytest.raises(ValueError, match="card.md is corrupted or was modified"):
        load_potential(folder)


def test_an_index_without_the_card_digest_is_refused(tmp_path):
    folder = _copy(tmp_path)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    del index[folder.name]["sha256"]["card.md"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="lists no sha256 for 7net-0-spline/card.md"):
        load_potential(folder)


def test_an_unlisted_folder_needs_verify_false_and_warns(tmp_path):
    folder = _copy(tmp_path)
    (tmp_path / INDEX_FILE).unlink()
    with pytest.raises(ValueError, match="pass verify=False"):
        load_potential(folder)
    with pytest.warns(UserWarning, match="without checking its files"):
        potential = load_potential(folder, verify=False)
    assert potential.cutoff == 5.0


def test_a_malformed_index_is_named(tmp_path):
    folder = _copy(tmp_path)
    (tmp_path / INDEX_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="index.json is not valid JSON"):
        load_potential(folder)
