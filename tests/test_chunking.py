"""Spatial chunks (facet_calc.chunking) against the whole-system evaluation they replace.

The reference is the same calculator evaluating the system in one piece; the chunked path must
agree to rounding (float64), since it is the same sum of atomic energies split differently."""

import numpy as np
import pytest
from ase.build import bulk

from facet_calc import calculator as calculator_module
from facet_calc.chunking import MemoryPlan, estimate_step_bytes, evaluate_in_chunks, plan_chunks
from facet_calc.graph import Structure, neighbour_list

#: float64, chunked vs whole: sums in a different order. Measured on the rod: energy 1.6e-16
#: relative, per-atom energies identical, forces 7.2e-14 eV/A, stress 1.2e-16 eV/A^3.
TOL_ENERGY = 2e-15  # relative
TOL_FORCES = 5e-13  # eV/A
TOL_STRESS = 2e-15  # eV/A^3
TOL_ATOM = 1e-14  # eV, per-atom energies


def si_ge_rod(periodic: bool = True):
    """96 atoms, 65 A long: longer than twice 7net-0's receptive field (5 layers x 5 A), so
    a chunk's halo covers only part of it."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((1, 1, 12))
    atoms.numbers[::7] = 32  # Ge: two species, so a wrong species lookup in a chunk would show
    atoms.rattle(0.05, seed=3)
    atoms.pbc = periodic
    return atoms


def whole(calc, atoms):
    calc.set(max_region_atoms=None)
    a = atoms.copy()
    a.calc = calc
    out = a.get_potential_energy(), a.get_potential_energies(), a.get_forces(), a.get_stress() if a.pbc.all() else None
    calc.reset()  # else the next call on the same geometry returns these results again
    return out


@pytest.fixture()
def chunk_calls(monkeypatch):
    """The chunk bounds the calculator evaluated with, one entry per chunked structure."""
    calls = []
    real = calculator_module.evaluate_in_chunks
    monkeypatch.setattr(calculator_module, "evaluate_in_chunks", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    return calls


def test_chunks_are_partial_and_cover_every_atom_once(potential64):
    atoms = si_ge_rod()
    graph = neighbour_list(Structure.from_atoms(atoms), potential64.cutoff)
    chunks = plan_chunks(graph, len(potential64.model.layers), max_region_atoms=70)
    owned = np.concatenate([c.region[c.owned] for c in chunks])
    assert len(chunks) >= 3
    assert np.array_equal(np.sort(owned), np.arange(len(atoms)))  # each atom owned exactly once
    assert max(len(c.region) for c in chunks) <= 70 < len(atoms)  # halos are real and partial


@pytest.mark.parametrize("periodic", [True, False])
def test_chunked_equals_whole_system(calc64, periodic, chunk_calls):
    atoms = si_ge_rod(periodic)
    e, energies, forces, stress = whole(calc64, atoms)
    calc64.set(max_region_atoms=70)
    chunked = atoms.copy()
    chunked.calc = calc64
    assert chunked.get_potential_energy() == pytest.approx(e, rel=TOL_ENERGY)
    np.testing.assert_allclose(chunked.get_potential_energies(), energies, rtol=0, atol=TOL_ATOM)
    np.testing.assert_allclose(chunked.get_forces(), forces, rtol=0, atol=TOL_FORCES)
    if periodic:
        np.testing.assert_allclose(chunked.get_stress(), stress, rtol=0, atol=TOL_STRESS)
    assert chunk_calls == [70]
    calc64.set(max_region_atoms=None)


def test_energy_only_chunks(potential64):
    atoms = si_ge_rod()
    graph = potential64.graph(atoms)
    full = evaluate_in_chunks(potential64.model, graph, max_region_atoms=10**9)
    part = evaluate_in_chunks(
        potential64.model, graph, max_region_atoms=70, compute_forces=False, compute_virial=False
    )
    assert part["forces"] is None and part["virial"] is None
    assert float(part["energy"]) == pytest.approx(float(full["energy"]), rel=TOL_ENERGY)


def test_too_large_for_memory_is_chunked_not_refused(calc64, monkeypatch, chunk_calls):
    """When the estimate exceeds what is free, the calculator chunks instead of refusing; with
    far too little memory for even a small chunk, it refuses with a sentence."""
    atoms = si_ge_rod()
    e, _, forces, _ = whole(calc64, atoms)
    chunk_calls.clear()
    per_atom = estimate_step_bytes(calc64.potential.model, 1, 30)
    model = calc64.potential.model
    monkeypatch.setattr(calc64, "memory_plan", MemoryPlan(model, free_bytes=int(60 * per_atom), min_region_atoms=20))
    chunked = atoms.copy()
    chunked.calc = calc64
    assert chunked.get_potential_energy() == pytest.approx(e, rel=TOL_ENERGY)
    np.testing.assert_allclose(chunked.get_forces(), forces, rtol=0, atol=TOL_FORCES)
    assert len(chunk_calls) == 1 and chunk_calls[0] < len(atoms)
    # calculate_many: the large structure alone, in chunks, between batched small ones
    small = bulk("Si", "diamond", a=5.43)
    results = calc64.calculate_many([small, atoms, small])
    assert results[1]["energy"] == pytest.approx(e, rel=TOL_ENERGY)
    assert results[0]["energy"] == pytest.approx(results[2]["energy"], rel=1e-14)
    assert len(chunk_calls) == 2  # the small ones went the batched way
    monkeypatch.setattr(calc64, "memory_plan", MemoryPlan(model, free_bytes=int(per_atom), min_region_atoms=20))
    calc64.reset()
    with pytest.raises(MemoryError, match="too little even for spatial chunks"):
        chunked.get_potential_energy()


def test_step_estimate_covers_the_measured_step(potential32):
    """The estimate does not fall short of a measured step (issue 23: 79.7 KiB/atom measured
    at 20,000 atoms of rattled Si, float32, 28 edges per atom, against 77.6 estimated)."""
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat(3)
    si.rattle(0.05, seed=0)
    edges_per_atom = len(neighbour_list(Structure.from_atoms(si), potential32.cutoff).senders) / len(si)
    assert 27 < edges_per_atom < 29  # the measured system's 28
    per_atom_kib = estimate_step_bytes(potential32.model, 20000, 20000 * edges_per_atom) / 20000 / 1024
    assert per_atom_kib >= 79.7
    assert per_atom_kib < 1.2 * 79.7  # a margin, not a blanket over-estimate
