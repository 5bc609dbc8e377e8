"""Every script in examples/ runs to completion, and the figure it exists to show is checked
against an independent reference: the source model (sevenn), a symmetry, a second method, or
all-electron PBE data shipped with ASE.

Each script runs once, in a fresh process, through a wrapper that hands its global variables
(numbers, arrays, result objects and ASE Atoms) back as JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))

WRAPPER = r"""
import json, runpy, sys
import numpy as np
from ase import Atoms

def plain(v, depth=0):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.size <= 10000:
        return v.tolist()
    if isinstance(v, Atoms):
        return {"numbers": v.numbers.tolist(), "positions": v.positions.tolist(), "cell": v.cell.array.tolist(),
                "pbc": v.pbc.tolist()}
    if depth == 0 and hasattr(v, "__dataclass_fields__") and not isinstance(v, type):
        fields = {}
        for k in v.__dataclass_fields__:
            try:
                fields[k] = plain(getattr(v, k), 1)
            except TypeError:  # a field that is no plain data (a phonopy object): left out
                pass
        return fields
    raise TypeError

out = {}
for name, value in runpy.run_path(sys.argv[1], run_name="__main__").items():
    try:
        if not name.startswith("_"):
            out[name] = plain(value)
    except TypeError:
        pass
print("EXAMPLE-GLOBALS " + json.dumps(out))
"""


def _atoms(d):
    return Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])


def check_single_point(g, tmp_path, sevenn):
    """Energy, forces and stress of the rattled crystal agree with sevenn (float64 source model)."""
    atoms = _atoms(g["atoms"])
    atoms.calc = sevenn
    n = len(atoms)
    assert abs(g["energy"] - atoms.get_potential_energy()) / n < 2e-4  # float32 vs source: measured 1e-5 eV/atom
    assert np.abs(np.array(g["forces"]) - atoms.get_forces()).max() < 2e-3  # measured 1e-4 eV/A
    assert np.abs(np.array(g["stress"]) - atoms.get_stress()).max() / units.GPa < 0.02  # measured 1e-3 GPa


def check_pymatgen(g, tmp_path, sevenn):
    """The pymatgen route gives what the same crystal built by ASE gives; forces vanish by symmetry."""
    from ase.build import bulk

    from facet_calc import FacetCalculator

    atoms = _atoms(g["atoms"])
    reference = bulk("MgO", "rocksalt", a=4.21, cubic=True)
    reference.calc = FacetCalculator()
    assert len(atoms) == len(reference) == 8
    mine = FacetCalculator()
    atoms.calc = mine
    assert abs(atoms.get_potential_energy() - reference.get_potential_energy()) < 1e-4
    assert np.abs(atoms.get_forces()).max() < 1e-4  # zero by symmetry, float32
    stress = atoms.get_stress()
    assert np.ptp(stress[:3]) < 1e-5 and np.abs(stress[3:]).max() < 1e-5  # cubic: isotropic


def check_relax(g, tmp_path, sevenn):
    """Converged by the optimiser's own criterion, and the lattice constant is PBE's."""
    result = g["result"]
    assert result["converged"]
    relaxed = _atoms(result["atoms"])
    a_start = 5.43 * 1.04
    a = np.cbrt(relaxed.get_volume())
    # FrechetCellFilter measures atomic forces in the starting cell's frame (scaled by a / a_start)
    # and the cell's generalised force as stress * volume / n_atoms: both below fmax = 0.005
    assert result["max_force_ev_per_a"] * a / a_start < 0.005
    assert result["max_stress_gpa"] * units.GPa * relaxed.get_volume() / len(relaxed) < 0.005
    assert abs(a - 5.47) < 0.03  # PBE about 5.47 A; measured 5.464
    assert (tmp_path / "si_relaxed.extxyz").is_file()


def check_nvt(g, tmp_path, sevenn):
    """The thermostat holds 600 K: 64 atoms fluctuate by 600 sqrt(2 / 192) = 61 K per sample;
    the mean of 21 correlated samples is within 100 K (about 3.5 sigma); measured 576 K."""
    assert abs(np.mean(g["late"]) - 600) < 100
    assert (tmp_path / "si_nvt.png").stat().st_size > 1000 and (tmp_path / "si_nvt.traj").stat().st_size > 1000


def check_nve(g, tmp_path, sevenn):
    """Energy conservation: the drift the example prints, measured 0.002 meV/atom over 250 fs."""
    assert abs(g["drift"]) < 2e-5  # eV/atom
    assert g["spread"] < 3e-4  # eV/atom, measured 2.6e-5
    kinetic = np.array(g["result"]["kinetic_energy_ev"])
    assert kinetic.min() > 0.3  # the atoms really moved (64 atoms at 300 K: about 2.5 eV at the start)


def check_phonons(g, tmp_path, sevenn):
    """Gamma frequencies: three acoustic zeros, a triply degenerate optical mode at the source
    model's frequency (sevenn, same supercell and displacement). SevenNet-0 puts it at 12.5 THz,
    below experiment's 15.5 THz: the known softening of MPtrj-trained models, reproduced exactly."""
    from facet_calc.workflows import phonons

    freqs = np.sort(np.array(g["result"]["gamma_frequencies_thz"]))
    assert np.abs(freqs[:3]).max() < 1e-4  # measured 2e-7 THz
    assert np.ptp(freqs[3:]) < 1e-6  # degenerate by symmetry
    primitive = _atoms(g["primitive"])
    reference = phonons(primitive, sevenn, supercell=(3, 3, 3), mesh=(2, 2, 2), progress=False)
    assert abs(freqs[3:].mean() - np.sort(reference.gamma_frequencies_thz)[3:].mean()) < 0.01  # THz
    assert not g["result"]["min_frequency_thz"] < -1e-3
    assert (tmp_path / "si_phonons.png").stat().st_size > 1000


def check_eos(g, tmp_path, sevenn):
    """V0 and B0 of Al against all-electron PBE (WIEN2k, shipped with ASE): measured 0.2 % and 3 %."""
    from ase.collections import dcdft

    ref = dcdft.data["Al"]
    assert abs(g["result"]["v0_per_atom_a3"] / ref["wien2k_volume"] - 1) < 0.03
    assert abs(g["result"]["b0_gpa"] / ref["wien2k_B"] - 1) < 0.15
    assert (tmp_path / "al_eos.png").stat().st_size > 1000


def check_elastic(g, tmp_path, sevenn):
    """Cubic symmetry of C, and the bulk modulus (C11 + 2 C12) / 3 equals the one an energy-volume
    fit gives for the same crystal (a second, independent method)."""
    from facet_calc import FacetCalculator
    from facet_calc.workflows import eos

    c = np.array(g["c"])
    assert np.ptp(np.diag(c)[:3]) < 1e-6 * c[0, 0] and np.ptp(np.diag(c)[3:]) < 1e-6 * c[3, 3]
    assert np.ptp(c[[0, 0, 1], [1, 2, 2]]) < 1e-6 * c[0, 1] and np.abs(c[:3, 3:]).max() < 1e-6
    crystal = _atoms(g["crystal"])
    b_eos = eos(crystal, FacetCalculator(dtype="float64"), max_strain=0.01, progress=False).b0_gpa
    assert abs(g["result"]["bulk_modulus_gpa"] / b_eos - 1) < 0.01  # measured difference: below 0.1 %


def check_npt(g, tmp_path, sevenn):
    """The barostat moves the volume from 2.5 % too large towards the potential's own zero-pressure
    volume (a cell relaxation of the same crystal with the same potential). 400 fs is shorter than
    the barostat's 500 fs time constant: measured, it covers 48 % of the way (12.66 -> 12.24
    A^3/atom, equilibrium 11.79 at 0 K); the check asks for a third, and no overshoot."""
    from ase.build import bulk

    from facet_calc import FacetCalculator
    from facet_calc.workflows import relax

    n = 32
    v_eq = relax(bulk("Cu", "fcc", a=3.62, cubic=True), FacetCalculator(dtype="float64"), fmax=1e-3,
                 progress=False).atoms.get_volume() / 4  # fmt: skip
    v0, v1 = g["v0"] / n, g["v1"] / n
    assert v1 < v0 - 0.33 * (v0 - v_eq)
    assert v1 > 0.99 * v_eq  # and not through it (300 K expands Cu by about 0.6 %)
    assert abs(g["result"]["temperature_k"][-1] - 300) < 150


def check_finetune(g, tmp_path, sevenn):
    """Held-out errors against GPAW-PBE halve, the Gamma optical phonon lands within 0.3 THz of
    GPAW's (the reference value recomputed here from its stored phonon forces), and the saved
    potential reproduces the example's own test-set figure when loaded again."""
    import importlib.util

    data = Path(__file__).resolve().parent.parent / "models" / "datasets" / "si_pbe_gpaw"
    spec = importlib.util.spec_from_file_location("si_generate", data / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    from ase.io import read

    phonon = read(data / "phonon.extxyz", ":")
    gpaw = generate.gamma_phonons(g["a0"], [a.arrays["REF_forces"] for a in phonon])["gamma_optical_thz"]
    assert gpaw == pytest.approx(g["gpaw_gamma"], abs=1e-6)
    assert g["tuned_f"] < 0.5 * g["base_f"]  # measured 148.8 -> 71.8 meV/A
    assert g["tuned_e"] < 0.5 * g["base_e"]  # measured 26.8 -> 4.5 meV/atom
    assert abs(g["tuned_gamma"] - gpaw) < 0.3  # measured 15.33 against 15.09 THz (base 12.40)
    from facet_calc import FacetCalculator

    test = read(data / "test.extxyz", ":")
    calc = FacetCalculator(tmp_path / "si_finetune" / "potential", dtype="float64")
    errors = []
    for frame in test:
        atoms = frame.copy()
        atoms.calc = calc
        errors.append(np.abs(atoms.get_forces() - frame.arrays["REF_forces"]).ravel())
    assert 1e3 * np.mean(np.concatenate(errors)) == pytest.approx(g["tuned_f"], rel=1e-9)


def check_torchsim(g, tmp_path, sevenn):
    """The batched torch-sim run agrees with FacetCalculator structure by structure."""
    assert g["worst"] < 1e-4  # eV/atom, float32


CHECKS = {
    "01_single_point.py": check_single_point,
    "02_single_point_pymatgen.py": check_pymatgen,
    "03_relax.py": check_relax,
    "04_md_nvt.py": check_nvt,
    "05_md_nve.py": check_nve,
    "06_phonons.py": check_phonons,
    "07_eos.py": check_eos,
    "08_elastic.py": check_elastic,
    "09_md_npt.py": check_npt,
    "10_finetune_si_gpaw.py": check_finetune,
    "11_torchsim_batch.py": check_torchsim,
}


def test_every_example_has_a_check():
    assert sorted(CHECKS) == [p.name for p in EXAMPLES]


#: examples that take minutes (a fine-tuning run): in the slow selection, which CI also runs
SLOW_EXAMPLES = {"10_finetune_si_gpaw.py"}


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_EXAMPLES else p for p in EXAMPLES],
    ids=[p.name for p in EXAMPLES],
)
def test_example_shows_what_it_claims(script, tmp_path, request):
    env = dict(os.environ, MPLBACKEND="Agg")
    # no timeout: on a busy machine a correct example may take long, and a test must not pass
    # or fail on the clock (conftest makes OpenMP threads wait passively, which keeps it short)
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) > 1, "an example should report what it computed"
    g = json.loads(next(line for line in lines if line.startswith("EXAMPLE-GLOBALS "))[16:])
    sevenn = request.getfixturevalue("sevenn_reference64") if script.name in ("01_single_point.py", "06_phonons.py") \
        else None  # fmt: skip
    CHECKS[script.name](g, tmp_path, sevenn)
