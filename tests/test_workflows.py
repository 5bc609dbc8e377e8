"""Workflows against independent references: all-electron PBE data shipped with ASE, published
PBE elastic constants, the source model (sevenn), symmetry, conservation laws.

Each physical property of the workflows is checked here and only here: the equation of state
(Al, Cu, Si), Si phonons, NVE energy conservation (float64 in the slow selection, float32 in the
default one) and Si elastic constants. The example and command-line tests check that their
scripts and commands run these workflows and report their results, not the physics again."""

import numpy as np
import pytest
from ase.build import bulk
from ase.collections import dcdft

from facet_calc.workflows import elastic_constants, eos, phonons, relax, run_md


@pytest.fixture(scope="module")
def relaxed_si(potential64):
    from facet_calc import FacetCalculator

    return relax(bulk("Si", "diamond", a=5.43), FacetCalculator(potential64), fmax=1e-4, progress=False).atoms


# SevenNet-0's own deviations from all-electron PBE (the spline conversion reproduces them to
# 1e-6): measured V0 -0.14 % (Al), -1.38 % (Cu), -0.32 % (Si); B0 +2.8 %, +1.3 %, +7.7 %. The
# bounds sit a little above each: the numerical noise of the fit is far below them.
@pytest.mark.parametrize("element, tol_v0, tol_b0", [("Al", 0.005, 0.04), ("Cu", 0.02, 0.03), ("Si", 0.01, 0.10)])
def test_eos_against_wien2k_pbe(calc64, element, tol_v0, tol_b0):
    reference = dcdft.data[element]  # WIEN2k all-electron PBE, shipped with ASE
    relaxed = relax(dcdft[element], calc64, fmax=1e-3, progress=False).atoms
    result = eos(relaxed, calc64, progress=False)
    assert abs(result.v0_per_atom_a3 / reference["wien2k_volume"] - 1) < tol_v0
    assert abs(result.b0_gpa / reference["wien2k_B"] - 1) < tol_b0


def test_si_phonons_against_sevenn_and_symmetry(calc64, relaxed_si, sevenn_reference64):
    """Gamma frequencies: three acoustic zeros, a triply degenerate optical mode at the source
    model's frequency (sevenn, same supercell and displacement), and no imaginary mode anywhere
    on the mesh. SevenNet-0 puts the optical mode at 12.5 THz, below experiment's 15.5 THz: the
    known softening of MPtrj-trained models, reproduced exactly."""
    result = phonons(relaxed_si, calc64, supercell=(3, 3, 3), mesh=(8, 8, 8), progress=False)
    reference = phonons(relaxed_si, sevenn_reference64, supercell=(3, 3, 3), mesh=(2, 2, 2), progress=False)
    freqs = np.sort(result.gamma_frequencies_thz)
    # measured (THz): acoustic 2.2e-7 (sevenn's: -2.5e-7, the sign is noise), optical spread
    # 5.3e-15, optical against sevenn 1.4e-4 (12.49392 and 12.49377), lowest on mesh and path 9.8e-8
    assert np.abs(freqs[:3]).max() < 2e-6
    assert np.ptp(freqs[3:]) < 5e-14  # degenerate by symmetry
    assert abs(freqs[3:].mean() - np.sort(reference.gamma_frequencies_thz)[3:].mean()) < 1.5e-3
    assert result.min_frequency_thz > -2e-6  # no imaginary mode


@pytest.mark.slow  # 500 steps of 64 atoms in float64: 1-2 minutes on 2 cores
def test_nve_in_float64_conserves_energy_over_1_ps(calc64):
    # the same 1 ps of the same 64 atoms in 500 steps of 2 fs: half the evaluations of 1 fs
    # steps, and a harder test of the integration (drift grows with the step)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms
    result = run_md(atoms, calc64, ensemble="nve", temperature_k=300, timestep_fs=2.0, steps=500,
                    log_interval=5, progress=False)  # fmt: skip
    assert result.time_fs[-1] == pytest.approx(1000.0)
    # measured: drift 1.1e-6 eV/atom, spread of the total energy 1.06e-4 eV/atom
    assert abs(result.energy_drift_ev_per_atom()) < 1e-5
    assert np.ptp(result.total_energy_ev) / len(atoms) < 1e-3
    assert result.temperature_k.mean() > 50  # it really moved


def test_nve_in_float32_conserves_energy(calc32):
    """The precision MD runs in: 8 atoms, 300 fs. Measured drift 0.0007 and 0.0021 meV/atom
    (float32 rounding varies between runs), spread of the total energy 0.024 meV/atom."""
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
    # cubic symmetry, to rounding: relative spreads measured 1.0e-14, 1.2e-14, 4.4e-14, and
    # cubic-forbidden couplings 1.2e-12 GPa (C14-type) and 1.2e-13 GPa (C45)
    assert np.ptp(diag) < 1e-13 * diag.mean()
    assert np.ptp(off) < 1.2e-13 * abs(off.mean())
    assert np.ptp(shear) < 5e-13 * shear.mean()
    assert np.abs(c[:3, 3:]).max() < 1.2e-11 and abs(c[3, 4]) < 1.2e-12
    # against DFT-PBE: C11 153.1, C12 57.0, C44 74.3 GPa (npj Comput. Mater. 10, 218 (2024),
    # Table 2). SevenNet-0 measured 152.6, 69.6, 57.9 GPa: -0.5, +12.6, -16.4 GPa, its own
    # deviations (the conversion reproduces the source); the bounds sit a little above each.
    assert abs(diag.mean() - 153.1) < 3
    assert abs(off.mean() - 57.0) < 15
    assert abs(shear.mean() - 74.3) < 20


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
