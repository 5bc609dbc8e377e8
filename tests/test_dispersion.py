"""D3 dispersion against the reference implementation (simple-dftd3, the ``dftd3`` wheel).

Measured agreement (benchmarks/d3.py): 1e-8 eV/atom, 7e-8 eV/A, 2e-8 eV/A^3 on these four
systems; the tolerances are about 10x that.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from ase.calculators.mixing import SumCalculator
from ase.lattice.hexagonal import Graphite
from ase.units import Bohr, Hartree

from facet_calc import FacetCalculator

pytest.importorskip("torch_dftd", reason="D3 needs the d3 extra (in the test extra): pip install '.[test]'")
dftd3 = pytest.importorskip("dftd3.interface", reason="the D3 reference needs the test extra: pip install '.[test]'")

from facet_calc.dispersion import D3Dispersion  # noqa: E402


def _graphite():
    return Graphite("C", latticeconstant={"a": 2.46, "c": 6.7})


def _slab():
    slab = fcc111("Cu", (2, 2, 3), vacuum=7.5)
    add_adsorbate(slab, "O", 1.5, "fcc")
    slab.rattle(0.02, seed=3)
    return slab


def _triclinic():
    cell = [[4.1, 0.3, 0.2], [1.2, 4.4, -0.3], [0.7, -0.9, 5.0]]
    frac = [[0.1, 0.2, 0.3], [0.4, 0.45, 0.6], [0.7, 0.9, 0.85]]
    return Atoms("SiO2", scaled_positions=frac, cell=cell, pbc=True)


SYSTEMS = {
    "benzene": lambda: molecule("C6H6"),
    "graphite": _graphite,
    "Cu(111) slab with O": _slab,
    "triclinic SiO2": _triclinic,
}


def reference(atoms, damping="bj"):
    """simple-dftd3, two-body only (atm=False), its default cutoffs (60 / 40 bohr)."""
    model = dftd3.DispersionModel(atoms.numbers, atoms.positions / Bohr, atoms.cell.array / Bohr, atoms.pbc)
    model.set_realspace_cutoff(60.0, 40.0, 40.0)
    param = {"bj": dftd3.RationalDampingParam, "zero": dftd3.ZeroDampingParam}[damping](method="pbe", atm=False)
    result = model.get_dispersion(param, grad=True)
    pairs = model.get_pairwise_dispersion(param)["additive pairwise energy"]
    out = {
        "energy": result["energy"] * Hartree,
        "energies": pairs.sum(axis=1) * Hartree,
        "forces": -result["gradient"] * Hartree / Bohr,
    }
    if atoms.cell.rank == 3:
        out["stress"] = (result["virial"] * Hartree / atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
    return out


@pytest.mark.parametrize("damping", ["bj", "zero"])
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_d3_matches_simple_dftd3(name, damping):
    atoms = SYSTEMS[name]()
    ours = D3Dispersion(damping=damping)(atoms)
    ref = reference(atoms, damping)
    assert abs(ours["energy"] - ref["energy"]) / len(atoms) < 1e-7
    assert np.abs(ours["energies"] - ref["energies"]).max() < 2e-7
    assert np.abs(ours["forces"] - ref["forces"]).max() < 1e-6
    assert ("stress" in ours) == ("stress" in ref)
    if "stress" in ref:
        assert np.abs(ours["stress"] - ref["stress"]).max() < 3e-7


def test_calculator_adds_d3_to_the_model(calc64, potential64):
    """FacetCalculator(dispersion="d3") equals ASE's SumCalculator of the model and dftd3's own
    ASE calculator (default D3(BJ)-PBE, with its three-body term switched off)."""
    from dftd3.ase import DFTD3

    atoms = _graphite()
    atoms.rattle(0.03, seed=2)
    ours = atoms.copy()
    ours.calc = FacetCalculator(potential64, dispersion="d3")
    ref = atoms.copy()
    no_atm = {"s6": 1.0, "s8": 0.7875, "a1": 0.4289, "a2": 4.4407, "s9": 0.0}  # PBE D3(BJ), Grimme's table
    d3 = DFTD3(damping="d3bj", params_tweaks=no_atm)  # its default cutoffs: 60 and 40 bohr
    ref.calc = SumCalculator([calc64, d3])
    assert ours.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
    assert np.abs(ours.get_forces() - ref.get_forces()).max() < 1e-6
    assert np.abs(ours.get_stress() - ref.get_stress()).max() < 1e-7
    energies = ours.get_potential_energies()
    assert energies.sum() == pytest.approx(ours.get_potential_energy(), abs=1e-9)
    assert ours.calc.todict()["dispersion"]["damping"] == "bj"


def test_bad_dispersion_options_are_explained(potential64):
    with pytest.raises(ValueError, match="only one is 'd3'"):
        FacetCalculator(potential64, dispersion="d4")
    with pytest.raises(ValueError, match=r"unknown dispersion option\(s\) \['cutof'\]"):
        FacetCalculator(potential64, dispersion={"method": "d3", "cutof": 20})
    with pytest.raises(ValueError, match="damping 'becke' is unknown"):
        FacetCalculator(potential64, dispersion={"damping": "becke"})
    with pytest.raises(ValueError, match="no D3"):
        FacetCalculator(potential64, dispersion={"xc": "not-a-functional"})
