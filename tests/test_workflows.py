"""Workflows against independent references: all-electron PBE data shipped with ASE, symmetry,
conservation laws."""

import numpy as np
import pytest
from ase.build import bulk
from ase.collections import dcdft

from facet_calc.workflows import elastic_constants, eos, phonons, relax, run_md


@pytest.fixture(scope="module")
def relaxed_si(potential64):
    from facet_calc import FacetCalculator

    return relax(bulk("Si", "diamond", a=5.43), FacetCalculator(potential64), fmax=1e-4, progress=False).atoms


@pytest.mark.parametrize("element", ["Al", "Cu", "Si"])
def test_eos_against_wien2k_pbe(calc64, element):
    reference = dcdft.data[element]  # WIEN2k all-electron PBE, shipped with ASE
    relaxed = relax(dcdft[element], calc64, fmax=1e-3, progress=False).atoms
    result = eos(relaxed, calc64, progress=False)
    assert abs(result.v0_per_atom_a3 / reference["wien2k_volume"] - 1) < 0.03  # measured 0.1-1.4 %
    assert abs(result.b0_gpa / reference["wien2k_B"] - 1) < 0.15  # measured 1-8 %


def test_si_phonons_are_stable_with_zero_acoustic_modes(calc64, relaxed_si):
    result = phonons(relaxed_si, calc64, supercell=(2, 2, 2), mesh=(8, 8, 8), progress=False)
    acoustic = np.sort(np.abs(result.gamma_frequencies_thz))[:3]
    assert np.all(acoustic < 0.05)
    assert not result.has_imaginary_modes(tolerance_thz=0.05)
    assert result.gamma_frequencies_thz.max() > 10  # the optical mode of Si is near 15 THz


@pytest.mark.slow  # 500 steps of 64 atoms in float64: about a minute on 2 cores
def test_nve_energy_drift_below_1_mev_per_atom_over_1_ps(calc64):
    # the same 1 ps of the same 64 atoms in 500 steps of 2 fs: half the evaluations of 1 fs
    # steps, and a harder test of the integration (drift grows with the step)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms
    result = run_md(atoms, calc64, ensemble="nve", temperature_k=300, timestep_fs=2.0, steps=500,
                    log_interval=5, progress=False)  # fmt: skip
    assert result.time_fs[-1] == pytest.approx(1000.0)
    assert abs(result.energy_drift_ev_per_atom()) < 1e-3
    assert result.temperature_k.mean() > 50  # it really moved


def test_nve_in_float32_conserves_energy(calc32):
    """The precision MD runs in: 8 atoms, 300 fs. Measured drift 0.0007 meV/atom, spread of the
    total energy 0.025 meV/atom (float64: 0.002 and 0.026 over 250 fs for 64 atoms)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    result = run_md(atoms, calc32, ensemble="nve", temperature_k=300, timestep_fs=1.0, steps=300,
                    log_interval=5, progress=False)  # fmt: skip
    spread = np.ptp(result.total_energy_ev) / len(atoms)
    assert abs(result.energy_drift_ev_per_atom()) < 1e-5
    assert spread < 3e-4
    assert np.ptp(result.potential_energy_ev) / len(atoms) > 10 * spread  # energy really flowed


def test_si_elastic_constants_have_cubic_symmetry(calc64, relaxed_si):
    cubic = relaxed_si.copy()
    cubic = bulk("Si", "diamond", a=np.cbrt(4 * cubic.get_volume()), cubic=True)
    result = elastic_constants(cubic, calc64, progress=False)
    c = result.c_gpa
    assert np.all(result.c_err_gpa >= 0) and result.c_err_gpa[0, 0] < 5  # regression errors (measured 1.2)
    diag, off, shear = np.diag(c)[:3], c[[0, 0, 1], [1, 2, 2]], np.diag(c)[3:]
    assert np.ptp(diag) < 0.02 * diag.mean()
    assert np.ptp(off) < 0.02 * abs(off.mean())
    assert np.ptp(shear) < 0.02 * shear.mean()
    assert np.abs(c[:3, 3:]).max() < 1.0 and abs(c[3, 4]) < 1.0  # no cubic-forbidden couplings
    assert 120 < diag.mean() < 190 and 40 < off.mean() < 80  # PBE: C11 ~ 153, C12 ~ 57


def test_inputs_are_not_modified_and_pymatgen_is_accepted(calc32):
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = bulk("Cu", "fcc", a=3.7)
    before = atoms.positions.copy(), atoms.cell.array.copy()
    relax(atoms, calc32, progress=False)
    run_md(atoms * (2, 2, 2), calc32, steps=5, log_interval=1, progress=False)
    with pytest.raises(ValueError, match="at least 2 atoms"):
        run_md(atoms, calc32, steps=5)
    np.testing.assert_array_equal(atoms.positions, before[0])
    np.testing.assert_array_equal(atoms.cell.array, before[1])
    assert atoms.calc is None
    structure = AseAtomsAdaptor.get_structure(atoms)
    result = relax(structure, calc32, progress=False)
    assert result.converged and abs(np.cbrt(4 * result.atoms.get_volume()) - 3.63) < 0.05


def test_bad_workflow_input_is_explained(calc32):
    with pytest.raises(TypeError, match="expected ase.Atoms or a pymatgen Structure"):
        relax("POSCAR", calc32)
    with pytest.raises(ValueError, match="unknown ensemble"):
        run_md(bulk("Cu"), calc32, ensemble="nph")
    from ase.build import molecule

    with pytest.raises(ValueError, match="needs a periodic cell"):
        eos(molecule("H2O"), calc32)
