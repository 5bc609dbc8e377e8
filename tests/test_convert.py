"""facet-calc convert / facet_calc.convert.convert: SevenNet checkpoints -> potential folders.

The references are sevenn's own models: random-weight checkpoints that sevenn builds from its
presets (facet_calc.convert.random_sevennet), compared in float64 with sevenn evaluating the
same checkpoint. Bad input is refused with nothing written.
"""

from __future__ import annotations

import json
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk

from facet_calc.cli import main
from facet_calc.index import check_user_name, list_user_potentials, user_potentials_dir

sevenn = pytest.importorskip("sevenn")

from facet_calc.convert import FidelityError, UnsupportedLayout, convert  # noqa: E402
from facet_calc.convert.random_sevennet import random_sevennet_checkpoint  # noqa: E402

TINY = {"elements": ("C", "O"), "shrink": 8}


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    """Every test gets its own user potential directory."""
    folder = tmp_path / "user-potentials"
    monkeypatch.setenv("FACET_CALC_POTENTIALS", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight SevenNet checkpoint (sevenn's base preset, 4 channels; self-connections
    linear, per species ('nequip', as in SevenNet-MF-ompa), linear)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return random_sevennet_checkpoint("base-mixed-sc", tmp_path_factory.mktemp("cp") / "tiny.pth", **TINY)


def test_user_dir_from_environment(user_dir):
    assert user_potentials_dir() == user_dir
    assert list_user_potentials() == []


@pytest.mark.parametrize("bad", ["7net-0-spline", "../evil", "a/b", ".hidden", "", "x" * 101])
def test_bad_names_refused(bad):
    with pytest.raises(ValueError, match="shadow|cannot name"):
        check_user_name(bad)


def test_missing_truncated_and_foreign_files_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert(tmp_path / "nope.pth", tmp_path / "out")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        convert(text, tmp_path / "out")
    whole = tmp_path / "whole.pth"
    torch.save({"config": {}, "model_state_dict": {"w": torch.zeros(1000)}}, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a PyTorch checkpoint|cannot be read|truncated"):
        convert(cut, tmp_path / "out")
    plain = tmp_path / "plain.pth"
    torch.save({"model": {"w": torch.zeros(3)}}, plain)
    with pytest.raises(ValueError, match="not a SevenNet checkpoint"):
        convert(plain, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickled_code_and_mace_refused_without_unpickling(tmp_path, monkeypatch):
    module = torch.nn.Linear(2, 2)
    code = tmp_path / "module.pth"
    torch.save(module, code)  # a whole pickled object: needs torch.nn classes to load
    with pytest.raises(ValueError, match="pickles code.*torch.nn.modules.linear.Linear"):
        convert(code, tmp_path / "out")
    # a MACE .model file pickles mace.modules.models.<class>; a stand-in module of that name
    fake = types.ModuleType("mace.modules.models")

    ScaleShiftMACE = type("ScaleShiftMACE", (), {"__module__": "mace.modules.models"})
    ScaleShiftMACE.__qualname__ = "ScaleShiftMACE"
    fake.ScaleShiftMACE = ScaleShiftMACE
    for name in ("mace", "mace.modules"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mace.modules.models", fake)
    mace = tmp_path / "mace-mp-0.model"
    torch.save(ScaleShiftMACE(), mace)
    for name in ("mace", "mace.modules", "mace.modules.models"):
        monkeypatch.delitem(sys.modules, name)
    # recognised as MACE without unpickling; converting it needs mace-torch (without it: the
    # install hint), and the stand-in class is no model mace-torch can load
    with pytest.raises((ValueError, ImportError), match="needs mace-torch|cannot be loaded as a MACE model"):
        convert(mace, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keyword", ["7net-0", "7net-l3i5", "7net-mf-0"])
def test_bundled_checkpoints_read_weights_only(keyword):
    """sevenn's own checkpoints (written with numpy 1: numpy.core.*) pass the weights-only reader."""
    from sevenn.util import pretrained_name_to_path

    from facet_calc.convert.sevennet import load_checkpoint_dict

    data = load_checkpoint_dict(pretrained_name_to_path(keyword))
    assert data["config"]["cutoff"] == 5.0 and data["model_state_dict"]


def test_existing_folder_and_shipped_name_refused_before_reading(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="exists.*overwrite"):
        convert(tmp_path / "any.pth", out)
    with pytest.raises(ValueError, match="shipped potential"):
        convert(tmp_path / "any.pth", name="7net-0-spline")
    with pytest.raises(ValueError, match="not both"):
        convert(tmp_path / "any.pth", out, name="mine")


def test_cli_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --out and --name exclude each other
        main(["convert", "x.pth", "--out", "o", "--name", "n"])


def _sevenn_energy_forces_stress(checkpoint, atoms):
    from facet_calc.convert.reference import SevenNetReference

    atoms = atoms.copy()
    atoms.calc = SevenNetReference(str(checkpoint), "float64")
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


def test_convert_writes_a_loadable_potential_equal_to_sevenn(tiny_checkpoint, tmp_path, capsys):
    from facet_calc import FacetCalculator

    out = tmp_path / "tiny-spline"
    assert main(["convert", str(tiny_checkpoint), "--out", str(out)]) == 0
    assert "float64: max |dE|" in capsys.readouterr().out
    index = json.loads((tmp_path / "index.json").read_text())
    assert set(index["tiny-spline"]["sha256"]) == {"config.json", "weights.safetensors", "card.md"}
    card = (out / "card.md").read_text()
    assert "sha256" in card and "Licence of the source" in card and "tiny.pth" in card
    # an independent structure (not one of the fidelity set), float64, against sevenn
    atoms = bulk("C", "diamond", a=3.6).repeat((2, 2, 1))
    atoms.numbers[::3] = 8
    atoms.rattle(0.05, seed=7)
    atoms.calc = FacetCalculator(str(out), dtype="float64", device="cpu")
    e_ref, f_ref, s_ref = _sevenn_energy_forces_stress(tiny_checkpoint, atoms)
    assert abs(atoms.get_potential_energy() - e_ref) / len(atoms) < 1e-5  # eV/atom (measured ~1e-8)
    np.testing.assert_allclose(atoms.get_forces(), f_ref, atol=1e-4)
    np.testing.assert_allclose(atoms.get_stress(), s_ref, atol=1e-6)
    # refused the second time, replaced with --overwrite
    assert main(["convert", str(tiny_checkpoint), "--out", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_convert_by_name_installs_and_lists_apart(tiny_checkpoint, user_dir, capsys):
    from facet_calc import FacetCalculator

    assert main(["convert", str(tiny_checkpoint), "--name", "my-tiny"]) == 0
    capsys.readouterr()
    assert (user_dir / "my-tiny" / "weights.safetensors").is_file()
    assert main(["list"]) == 0
    shipped, _, mine = capsys.readouterr().out.partition("# yours")
    assert "7net-0-spline" in shipped and "my-tiny" not in shipped and "my-tiny" in mine
    atoms = bulk("C", "diamond", a=3.6)
    atoms.calc = FacetCalculator("my-tiny", dtype="float64", device="cpu")
    assert np.isfinite(atoms.get_potential_energy())


@pytest.mark.slow
def test_fidelity_gate_refuses_and_writes_nothing(tiny_checkpoint, tmp_path):
    tight = {"float64": (1e-12, 1e-12, 1e-12), "float32": (1e-12, 1e-12, 1e-12)}
    with pytest.raises(FidelityError, match="nothing was written.*float64 energy"):
        convert(tiny_checkpoint, tmp_path / "out", bounds=tight)
    assert not (tmp_path / "out").exists() and not (tmp_path / "index.json").exists()


def test_unsupported_layout_named(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = random_sevennet_checkpoint("base-bias", tmp_path / "bias.pth", **TINY)
    with pytest.raises(UnsupportedLayout, match=r"use_bias_in_linear=True \(biases in the linear layers\)"):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


SUPPORTED = ["sevennet-0", "sevennet-l3i5", "fine_tune_le", "MF_0", "multi_modal", "base-linear-sc",
             "base-parity-linear-sc", "base-xplor-lmax3-l4", "base-lmax_edge", "base-act-radial-tanh",
             "base-train-denominator", "base", "mf_ompa", "omat", "base-mixed-sc"]  # fmt: skip
REFUSED = {"base-bias": "use_bias_in_linear", "base-unnormalised-sh": "_normalize_sph=False",
           "MF_0-modal-embedding": "use_modal_node_embedding", "MF_0-modal-scale": "use_modal_wise_scale"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("layout", SUPPORTED)
def test_every_supported_layout_converts_within_the_bound(layout, tmp_path):
    """sevenn builds a random model of the layout; the conversion passes its own float64/float32
    fidelity gate (convert raises otherwise) and loads."""
    from facet_calc import FacetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = random_sevennet_checkpoint(layout, tmp_path / f"{layout}.pth", elements=("H", "C", "O"))
        done = convert(path, tmp_path / "out")
    assert done.fidelity["float64"]["max_abs_energy_mev_per_atom"] < 1e-3  # measured <= 2e-5
    atoms = bulk("C", "diamond", a=3.6)
    atoms.calc = FacetCalculator(str(done.path), dtype="float64", device="cpu")
    assert np.isfinite(atoms.get_potential_energy())


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(REFUSED))
def test_unsupported_layouts_refused_by_name(layout, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = random_sevennet_checkpoint(layout, tmp_path / f"{layout}.pth", elements=("H", "C", "O"))
    with pytest.raises(UnsupportedLayout, match=REFUSED[layout].replace("(", r"\(")):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_heads_kept_and_default_chosen(tmp_path):
    """A multi-fidelity checkpoint keeps every head; --head sets the default; each head equals
    sevenn's model with that modality (float64)."""
    from facet_calc import FacetCalculator
    from facet_calc.convert.reference import SevenNetReference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = random_sevennet_checkpoint("multi_modal", tmp_path / "mm.pth", elements=("C", "O"), shrink=16)
    with pytest.raises(ValueError, match="no head 'hse'"):
        convert(path, tmp_path / "bad", head="hse")
    done = convert(path, tmp_path / "mm", head="r2scan")
    assert done.heads == ["pbe", "r2scan"]
    assert json.loads((done.path / "config.json").read_text())["default_head"] == "r2scan"
    atoms = bulk("C", "diamond", a=3.6).repeat((2, 1, 1))
    atoms.numbers[0] = 8
    atoms.rattle(0.05, seed=1)
    energies = {}
    for head, modal in (("pbe", "pbe"), ("r2scan", "r2scan"), (None, "r2scan")):
        ours, ref = atoms.copy(), atoms.copy()
        ours.calc = FacetCalculator(str(done.path), dtype="float64", device="cpu", head=head)
        ref.calc = SevenNetReference(str(path), "float64", modal=modal)
        energies[head] = ours.get_potential_energy()
        assert abs(energies[head] - ref.get_potential_energy()) / len(atoms) < 1e-5
        np.testing.assert_allclose(ours.get_forces(), ref.get_forces(), atol=1e-4)
    assert energies[None] == energies["r2scan"] != energies["pbe"]
