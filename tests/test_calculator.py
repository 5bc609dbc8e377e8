"""FacetCalculator behaviour: properties, bad input, caching, and not touching the caller's Atoms."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError

from facet_calc import FacetCalculator


def test_properties_have_ase_shapes_and_units(calc64):
    atoms = bulk("NaCl", "rocksalt", a=5.6)
    atoms.rattle(0.05, seed=0)
    atoms.calc = calc64
    energy = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == energy  # free_energy
    assert atoms.get_forces().shape == (2, 3)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stress(voigt=False).shape == (3, 3)
    assert atoms.get_potential_energies().shape == (2,)
    assert np.abs(atoms.get_forces().sum(axis=0)).max() < 1e-10  # Newton's third law


def test_float32_agrees_with_float64(calc32, calc64):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    results = {}
    for name, calc in (("32", calc32), ("64", calc64)):
        a = atoms.copy()
        a.calc = calc
        results[name] = (a.get_potential_energy(), a.get_forces(), a.get_stress())
    assert results["32"][0] == pytest.approx(results["64"][0], abs=1e-4 * len(atoms))
    assert np.abs(results["32"][1] - results["64"][1]).max() < 1e-3
    assert np.abs(results["32"][2] - results["64"][2]).max() < 1e-5


def test_unknown_element_is_rejected_on_attach_naming_it(calc64):
    atoms = Atoms("SiPo", positions=[(0, 0, 0), (2, 0, 0)])
    with pytest.raises(ValueError, match=r"element\(s\) Po.*supports: H He Li"):
        atoms.calc = calc64
    mixed = Atoms("Fm", positions=[(0, 0, 0)])
    with pytest.raises(ValueError, match="Fm"):
        calc64.get_potential_energy(mixed)


def test_nan_positions_raise_and_do_not_poison_the_calculator(calc64):
    good = bulk("Si", "diamond", a=5.43)
    good.calc = calc64
    e_good = good.get_potential_energy()
    bad = good.copy()
    bad.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite positions"):
        calc64.get_potential_energy(bad)
    assert calc64.get_potential_energy(good) == pytest.approx(e_good, abs=1e-12)


def test_singular_periodic_cell_raises(calc64):
    atoms = Atoms("Si", cell=[[3, 0, 0], [3, 0, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(ValueError, match="singular along periodic"):
        calc64.get_potential_energy(atoms)


def test_empty_atoms(calc64):
    atoms = Atoms()
    atoms.calc = calc64
    assert atoms.get_potential_energy() == 0.0
    assert atoms.get_forces().shape == (0, 3)


def test_lone_atom_has_its_reference_energy_and_no_force(calc64, potential64):
    atoms = Atoms("Fe", positions=[(3.0, -2.0, 7.0)])
    atoms.calc = calc64
    assert np.all(atoms.get_forces() == 0.0)
    # reference: the model evaluated directly on a graph without edges
    import torch

    species = torch.tensor([potential64.atomic_numbers.index(26)])
    no_edges = torch.zeros(0, dtype=torch.int64)
    e_ref = potential64.model(species, torch.zeros(0, 3, dtype=torch.float64), no_edges, no_edges)
    assert atoms.get_potential_energy() == pytest.approx(e_ref.item(), abs=1e-12)


def test_stress_of_a_molecule_without_cell_is_not_implemented(calc64):
    atoms = molecule("H2O")
    atoms.calc = calc64
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="stress needs a cell"):
        atoms.get_stress()


def test_changes_between_calls_give_fresh_results(calc64, potential64):
    """Changing atom count, species, cell or pbc gives the same as a brand-new calculator."""
    base = bulk("Si", "diamond", a=5.43)
    base.rattle(0.03, seed=2)
    variants = [base, base.repeat((2, 1, 1)), base.copy(), base.copy(), base.copy()]
    variants[2].numbers[0] = 32  # Ge for one Si
    variants[3].set_cell(base.cell.array * 1.03, scale_atoms=True)
    variants[4].pbc = (True, True, False)
    for atoms in variants + [base]:
        atoms = atoms.copy()
        atoms.calc = calc64
        got = (atoms.get_potential_energy(), atoms.get_forces())
        fresh = atoms.copy()
        fresh.calc = FacetCalculator(potential64)
        expected = (fresh.get_potential_energy(), fresh.get_forces())
        assert got[0] == expected[0]
        np.testing.assert_array_equal(got[1], expected[1])


def test_callers_atoms_are_not_modified(calc64):
    atoms = bulk("Al", "fcc", a=4.05) * (2, 1, 1)
    atoms.positions[0] += [9.0, -7.0, 3.0]  # outside the cell; must not be wrapped
    before = (atoms.positions.copy(), atoms.cell.array.copy(), atoms.numbers.copy(), atoms.pbc.copy())
    atoms.calc = calc64
    atoms.get_forces()
    atoms.get_stress()
    np.testing.assert_array_equal(atoms.positions, before[0])
    np.testing.assert_array_equal(atoms.cell.array, before[1])
    np.testing.assert_array_equal(atoms.numbers, before[2])
    np.testing.assert_array_equal(atoms.pbc, before[3])


def test_bad_options_are_explained(potential64):
    with pytest.raises(ValueError, match="dtype must be"):
        FacetCalculator("7net-0-spline", dtype="float16")
    with pytest.raises(ValueError, match="unknown potential 'nope'.*7net-0-spline"):
        FacetCalculator("nope")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            FacetCalculator("7net-0-spline", device="cuda")


def test_settings_are_recorded_and_set_takes_effect(tmp_path):
    """todict() records the potential, so trajectories and databases do; set() reloads."""
    from ase.io import Trajectory

    calc = FacetCalculator("7net-0-spline", dtype="float32")
    assert calc.todict() == {
        "potential": "7net-0-spline",
        "device": "cpu",
        "dtype": "float32",
        "head": None,
        "dispersion": None,
        "memory_check": True,
        "max_region_atoms": None,
        "threads": "auto",
        "arch": "7net-0-spline",  # janus-core keys its results by it
    }
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=4)
    atoms.calc = calc
    e32 = atoms.get_potential_energy()
    calc.set(dtype="float64")
    assert calc.dtype == torch.float64 and calc.parameters["dtype"] == "float64"
    e64 = atoms.get_potential_energy()  # recomputed, not the cached float32 result
    assert e64 != e32 and e64 == pytest.approx(e32, abs=1e-4)
    with Trajectory(tmp_path / "t.traj", "w") as traj:
        traj.write(atoms)
    with Trajectory(tmp_path / "t.traj") as traj:
        recorded = dict(traj.backend.calculator.parameters)
    assert recorded["potential"] == "7net-0-spline" and recorded["dtype"] == "float64"


def test_unknown_or_misspelt_options_raise_naming_the_known_ones(potential64):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['dispersoin'\].*dispersion"):
        FacetCalculator(potential64, dispersoin="d3")
    calc = FacetCalculator(potential64)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['dtyp'\]"):
        calc.set(dtyp="float32")


def test_a_shared_potential_is_never_moved_or_converted(potential64):
    with pytest.raises(ValueError, match="loaded with dtype=torch.float64, not torch.float32"):
        FacetCalculator(potential64, dtype="float32")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            FacetCalculator(potential64, device="cuda")
    calc = FacetCalculator(potential64)
    with pytest.raises(ValueError, match="never converts a Potential"):
        calc.set(dtype="float32")
    assert potential64.dtype == torch.float64 and calc.dtype == torch.float64
    with pytest.raises(ValueError, match="loaded with head=None, not r2scan"):
        FacetCalculator(potential64, head="r2scan")
    with pytest.raises(ValueError, match="single fidelity"):
        FacetCalculator("7net-0-spline", head="r2scan")


def test_switching_potentials_and_heads_with_set():
    calc = FacetCalculator("7net-mf-0-spline", head="r2scan")
    assert calc.todict()["arch"] == "7net-mf-0-spline:r2scan"
    calc.set(head="PBE")
    assert calc.potential.head == "pbe" and calc.parameters["head"] == "pbe"
    calc.set(potential="7net-0-spline")  # the single-fidelity potential takes no head
    assert calc.parameters["head"] is None and calc.parameters["arch"] == "7net-0-spline"


def _threads_seen(monkeypatch) -> list[int]:
    """torch's thread count inside each model call of the calculator."""
    import facet_calc.calculator as module

    seen, evaluate = [], module.evaluate

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate", recording)
    return seen


def test_small_systems_run_on_one_thread_and_torch_s_setting_is_restored(potential32, monkeypatch):
    """threads="auto": one thread per ATOMS_PER_THREAD atoms, at most torch's setting, for the
    call only (issue 22.3: on a busy 2-core machine an 8-atom call took 1.2-2.0 s on 2 threads
    against 40 ms on one)."""
    from facet_calc.calculator import ATOMS_PER_THREAD

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        seen = _threads_seen(monkeypatch)
        small = bulk("NaCl", "rocksalt", a=5.64, cubic=True)  # 8 atoms
        large = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 4, 4))  # 512 atoms
        assert len(large) >= 4 * ATOMS_PER_THREAD
        for atoms in (small, large):
            atoms.rattle(0.02, seed=0)
            atoms.calc = FacetCalculator(potential32)
            atoms.get_forces()
        assert seen == [1, 4] and torch.get_num_threads() == 4  # restored after the small call
        # an explicit count, and None (torch's as it is); the numbers do not depend on it
        reference = small.get_forces()
        for threads, expected in ((2, 2), (None, 4)):
            small.calc = FacetCalculator(potential32, threads=threads)
            np.testing.assert_allclose(small.get_forces(), reference, atol=1e-5)  # float32 sums
            assert seen[-1] == expected and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -2, 1.5, "all", True])
def test_bad_thread_counts_are_refused(potential32, threads):
    with pytest.raises(ValueError, match="threads must be 'auto', a positive number of threads or None"):
        FacetCalculator(potential32, threads=threads)


def test_a_markedly_closer_pair_is_warned_again(potential32):
    """The close-pair warning comes once per calculator (not every MD step), and again for a
    structure whose closest pair is markedly closer than any warned about before."""
    import warnings

    atoms = Atoms("Si2", positions=[(0, 0, 0), (1.0, 0, 0)])  # Si-Si covalent radii sum 2.22 A
    atoms.calc = FacetCalculator(potential32)
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for distance in (1.0, 0.99, 1.05, 0.6, 0.59, 0.8):
            atoms.positions[1, 0] = distance
            atoms.get_potential_energy()
            messages.append([str(w.message) for w in caught if "closer than" in str(w.message)])
            caught.clear()
    assert [len(m) for m in messages] == [1, 0, 0, 1, 0, 0]
    assert "at 0.6 A" in messages[3][0]


def test_facet_calc_never_forks_python_workers():
    """A fork after torch has run on several OpenMP threads can deadlock the children
    (upstream; docs/processes.md): facet_calc starts no worker process but with spawn."""
    import re
    from pathlib import Path

    import facet_calc

    # process creation (not imports): a pool or process started without the spawn context
    forking = re.compile(r"\bos\.fork\b|ProcessPoolExecutor\(|multiprocessing\.(Pool|Process)\(|get_context\(|"
                         r"torch\.multiprocessing")  # fmt: skip
    offenders = []
    for path in Path(facet_calc.__file__).parent.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if forking.search(line) and "spawn" not in line:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders
