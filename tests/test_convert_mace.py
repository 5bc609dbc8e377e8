"""MACE conversions against mace-torch itself (needs mace-torch; skipped without it).

Random-weight models built by mace-torch with the layouts of ``facet_calc.convert.random_mace``
are converted and compared with mace-torch's ``MACECalculator`` in float64 on a periodic cell
with three species, a molecule and a strained cell. Measured over these layouts and the
published ones (slow): energy <= 2.1e-6 meV/atom, forces <= 2.1e-7 eV/A, stress <= 2.9e-6 GPa;
the bounds are about 10x that (the issue's bounds: 1e-3 meV/atom, 1e-3 eV/A, 1e-4 GPa). Run with the mace venv:
``PYTHONPATH=$PWD /work/venvs/mace/bin/python -m pytest tests/test_convert_mace.py``.
"""

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk

pytest.importorskip("mace.modules")

from facet_calc.convert.fidelity import converted_calculator  # noqa: E402
from facet_calc.convert.mace import UnsupportedMaceLayout, convert_mace, mace_reference  # noqa: E402
from facet_calc.convert.random_mace import random_mace_model  # noqa: E402

ELEMENTS = [1, 8, 14]
#: float64 bounds: meV/atom, eV/A, GPa
BOUNDS = (2e-5, 2e-6, 3e-5)


def _structures():
    cell = bulk("Si", "diamond", a=5.43) * (2, 2, 1)
    cell.numbers[[1, 5]] = [8, 1]
    cell.rattle(0.05, seed=1)
    molecule = Atoms("OH2Si", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [1.2, 1.4, 1.1]])
    strained = bulk("Si", "diamond", a=5.2)
    strained.numbers[0] = 8
    strained.set_cell(strained.cell.array @ (np.eye(3) + [[0.03, 0.01, 0], [0.01, -0.02, 0.0], [0, 0, 0.04]]),
                      scale_atoms=True)  # fmt: skip
    return [("bulk", cell), ("molecule", molecule), ("strained", strained)]


def _deviations(config, tensors, source, dtype="float64", head=None, source_head=None):
    calc = converted_calculator(config, tensors, dtype, head)
    ref = mace_reference(source, dtype, source_head)
    worst = np.zeros(3)
    for _, atoms in _structures():
        x, y = atoms.copy(), atoms.copy()
        x.calc, y.calc = calc, ref
        de = abs(x.get_potential_energy() - y.get_potential_energy()) / len(atoms) * 1e3
        df = np.abs(x.get_forces() - y.get_forces()).max()
        ds = np.abs(x.get_stress() - y.get_stress()).max() / units.GPa if atoms.pbc.all() else 0.0
        worst = np.maximum(worst, [de, df, ds])
    return worst


@pytest.mark.parametrize("layout", ["tiny-residual", "tiny-plain-L2-3layers", "tiny-correlation-2"])
def test_tiny_layouts_match_mace(layout):
    source = random_mace_model(layout, ELEMENTS, seed=3)
    config, tensors = convert_mace(source)
    assert config["wigner_convention"] in ("e3nn-0.4", "e3nn-0.5")
    worst = _deviations(config, tensors, source)
    assert (worst < BOUNDS).all(), worst


def test_every_head_matches_mace():
    source = random_mace_model("tiny-two-heads", ELEMENTS, seed=4)
    config, tensors = convert_mace(source)
    assert config["heads"] == ["pt_head", "default"] and config["default_head"] == "default"
    energies = []
    for head, source_head in zip(config["heads"], config["source_heads"]):
        worst = _deviations(config, tensors, source, head=head, source_head=source_head)
        assert (worst < BOUNDS).all(), (head, worst)
        atoms = _structures()[0][1]
        atoms.calc = converted_calculator(config, tensors, "float64", head)
        energies.append(atoms.get_potential_energy())
    assert abs(energies[0] - energies[1]) > 1e-3  # the heads differ: the check can tell them apart


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["mace-mp-0-small", "mace-mp-0-medium", "mace-mp-0-large", "mace-mpa-0-medium",
                                    "mace-omat-0-medium", "mace-off-small"])  # fmt: skip
def test_published_layouts_match_mace(layout):
    source = random_mace_model(layout, ELEMENTS, seed=5)
    config, tensors = convert_mace(source)
    worst = _deviations(config, tensors, source)
    assert (worst < BOUNDS).all(), worst


@pytest.mark.parametrize(
    ("overrides", "piece"),
    [({"interaction": "RealAgnosticDensityResidualInteractionBlock"}, "RealAgnosticDensityResidualInteractionBlock"),
     ({"pair_repulsion": True}, "pair_repulsion"),
     ({"distance_transform": "Agnesi"}, "AgnesiTransform")],
)  # fmt: skip
def test_unsupported_layouts_are_refused_by_name(overrides, piece):
    source = random_mace_model("tiny-residual", ELEMENTS, seed=1, **overrides)
    with pytest.raises(UnsupportedMaceLayout, match=piece):
        convert_mace(source)


def test_convert_command_writes_a_loadable_potential(tmp_path):
    from facet_calc import FacetCalculator
    from facet_calc.convert import convert, detect_source

    path = tmp_path / "tiny.model"
    source = random_mace_model("tiny-residual", ELEMENTS, seed=2, path=str(path))
    assert detect_source(path) == "mace"
    done = convert(path, tmp_path / "tiny-spline")
    assert done.fidelity["float64"]["max_abs_energy_mev_per_atom"] < 1e-3
    atoms = _structures()[0][1]
    atoms.calc = FacetCalculator(str(done.path), dtype="float64")
    reference = atoms.copy()
    reference.calc = mace_reference(source, "float64")
    assert abs(atoms.get_potential_energy() - reference.get_potential_energy()) < 1e-8
    assert "MACE model `tiny.model`" in (done.path / "card.md").read_text()


def test_a_pickle_with_foreign_code_is_refused_unread(tmp_path):
    import collections

    import torch

    from facet_calc.convert.mace import load_mace_model

    path = tmp_path / "odd.model"
    torch.save({"model": collections.OrderedDict(), "hook": pytest.approx}, path)
    with pytest.raises(ValueError, match="pickles code beyond mace-torch"):
        load_mace_model(str(path))
    (tmp_path / "cut.model").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a PyTorch model file|cannot be read"):
        load_mace_model(str(tmp_path / "cut.model"))
