"""Many structures in one call: ``FacetCalculator.calculate_many`` against one call per structure."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from facet_calc import FacetCalculator
from facet_calc.graph import group_by_edge_budget


def _mixed_structures():
    rng = np.random.default_rng(0)
    frames = [
        bulk("Si", "diamond", a=5.43),
        bulk("NaCl", "rocksalt", a=5.6).repeat((2, 1, 1)),
        bulk("Cu", "fcc", a=3.6, cubic=True),
        bulk("Fe", "bcc", a=2.87),  # one atom
        Atoms(cell=np.eye(3) * 4.0, pbc=True),  # empty
        bulk("MgO", "rocksalt", a=4.2, cubic=True),
        bulk("Al", "fcc", a=4.05) * (2, 2, 2),
    ]
    cell = np.diag([4.0, 4.4, 3.1]) + rng.normal(0, 0.3, (3, 3))
    triclinic = Atoms("TiO2Ti", scaled_positions=rng.uniform(0, 1, (4, 3)), cell=cell, pbc=True)
    frames.append(triclinic)
    for atoms in frames:
        atoms.rattle(0.05, seed=int(rng.integers(1000)))
    return frames


def _one_by_one(potential, frames):
    out = []
    for atoms in frames:
        calc = FacetCalculator(potential)
        calc.calculate(atoms.copy(), ["energy", "forces"] + (["stress"] if atoms.cell.rank == 3 else []))
        out.append(dict(calc.results))
    return out


def _assert_same(batched, single, rtol):
    assert len(batched) == len(single)
    for b, s in zip(batched, single):
        assert sorted(b) == sorted(s)
        for key in s:
            scale = max(1.0, float(np.abs(s[key]).max(initial=0.0)))
            np.testing.assert_allclose(b[key], s[key], rtol=0, atol=rtol * scale, err_msg=key)


@pytest.mark.parametrize("max_edges", [10**9, 300])
def test_calculate_many_matches_one_by_one_float64(potential64, max_edges):
    frames = _mixed_structures()
    single = _one_by_one(potential64, frames)
    batched = FacetCalculator(potential64).calculate_many(frames, ["energy", "forces", "stress"], max_edges=max_edges)
    # measured: 7e-15 relative (summation order); the promise to users is 1e-6
    _assert_same(batched, single, 1e-13)
    assert batched[4]["energy"] == 0.0 and batched[4]["forces"].shape == (0, 3)


def test_calculate_many_float32_and_energy_only(potential32):
    frames = _mixed_structures()
    calc = FacetCalculator(potential32)
    single = _one_by_one(potential32, frames)
    batched = calc.calculate_many(frames)
    _assert_same(batched, single, 4e-5)  # measured 4e-6 (float32 summation order)
    energies = calc.calculate_many(frames, ["energy"])
    assert all("forces" not in r for r in energies)
    np.testing.assert_allclose([r["energy"] for r in energies], [r["energy"] for r in single], rtol=4e-6)


def test_molecule_without_cell_in_a_batch(potential64):
    frames = [molecule("H2O"), bulk("Si", "diamond", a=5.43)]
    calc = FacetCalculator(potential64)
    results = calc.calculate_many(frames)
    assert "stress" not in results[0] and results[1]["stress"].shape == (6,)
    _assert_same(results, _one_by_one(potential64, frames), 1e-13)
    with pytest.raises(PropertyNotImplementedError, match="structure 0: stress needs a cell"):
        calc.calculate_many(frames, ["energy", "stress"])


def test_bad_structures_are_named_by_index(potential64):
    calc = FacetCalculator(potential64)
    frames = [bulk("Si", "diamond", a=5.43), Atoms("Fm", positions=[(0, 0, 0)])]
    with pytest.raises(ValueError, match=r"structure 1: .*element\(s\) Fm"):
        calc.calculate_many(frames)
    with pytest.raises(TypeError, match="structure 0: expected ase.Atoms"):
        calc.calculate_many(["Si"])
    with pytest.raises(PropertyNotImplementedError, match="unknown properties"):
        calc.calculate_many(frames[:1], ["magmoms"])


def test_edge_budget_groups_are_consecutive_and_bounded():
    counts = [5, 5, 5, 20, 1, 1]
    groups = group_by_edge_budget(counts, 10)
    assert [list(g) for g in groups] == [[0, 1], [2], [3], [4, 5]]
    assert [i for g in groups for i in g] == list(range(len(counts)))
    with pytest.raises(ValueError, match="max_edges"):
        group_by_edge_budget(counts, 0)


class _OneByOne(Calculator):
    """A plain ASE calculator (no calculate_many) that delegates to a FacetCalculator."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        self.inner.calculate(self.atoms.copy(), properties)
        self.results = dict(self.inner.results)


def test_workflows_give_the_same_numbers_batched_and_one_by_one(calc64):
    from facet_calc.workflows import elastic_constants, eos

    atoms = bulk("Cu", "fcc", a=3.62)
    batched = eos(atoms, calc64, progress=False)
    plain = eos(atoms, _OneByOne(calc64), progress=False)
    np.testing.assert_allclose(batched.energies_ev, plain.energies_ev, rtol=1e-13)
    assert batched.b0_gpa == pytest.approx(plain.b0_gpa, rel=1e-6)  # the fit amplifies round-off: 6e-9
    clamped = elastic_constants(atoms, calc64, relax_internal=False, progress=False)
    clamped_plain = elastic_constants(atoms, _OneByOne(calc64), relax_internal=False, progress=False)
    np.testing.assert_allclose(clamped.c_gpa, clamped_plain.c_gpa, atol=1e-8)
    assert clamped.c_gpa[0, 0] > clamped.c_gpa[0, 1] > 0  # a stable cubic metal
