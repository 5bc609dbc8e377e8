"""The neighbour list against ASE's primitive_neighbor_list, and geometry validation."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule, nanotube
from ase.neighborlist import primitive_neighbor_list

from facet_calc.graph import Structure, build_graph, neighbour_list
from facet_calc.species import SpeciesTable


def _skewed():
    cell = np.array([[3.0, 0.0, 0.0], [2.9, 1.2, 0.0], [-2.5, 1.9, 1.4]])  # angles far from 90
    rng = np.random.default_rng(0)
    return Atoms("Si3", scaled_positions=rng.uniform(0, 1, (3, 3)), cell=cell, pbc=True)


def _outside():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += [7.3, -11.1, 25.0]  # far outside the cell
    return atoms


CASES = {
    "one-atom fcc (cell shorter than cutoff)": bulk("Al", "fcc", a=4.05),
    "skewed triclinic": _skewed(),
    "atoms outside the cell": _outside(),
    "slab, pbc=(T,T,F)": fcc111("Pt", size=(2, 2, 3), vacuum=5.0),
    "wire, pbc=(F,F,T)": nanotube(3, 3, length=2, bond=1.42, symbol="C"),
    "molecule far from origin": molecule("C6H6").copy(),
    "mixed pbc (T,F,T)": Atoms(
        "Cu2", positions=[(0, 0, 0), (1.3, 1.1, 0.4)], cell=[2.6, 0, 2.6], pbc=(True, False, True)
    ),
}
CASES["molecule far from origin"].positions += 5000.0


@pytest.mark.parametrize("name", list(CASES))
def test_edges_match_ase(name):
    atoms = CASES[name]
    cutoff = 5.0
    graph = neighbour_list(Structure.from_atoms(atoms), cutoff)
    i, j, shifts = primitive_neighbor_list(
        "ijS", atoms.pbc, atoms.cell.array, atoms.positions, cutoff, self_interaction=False
    )
    ours = sorted(zip(graph.receivers, graph.senders, map(tuple, graph.shifts.astype(int))))
    ref = sorted(zip(i, j, map(tuple, shifts)))
    assert ours == ref
    distances = np.linalg.norm(graph.edge_vectors, axis=1)
    assert distances.max() < cutoff and distances.min() > 0


def test_empty_atoms_give_empty_graph():
    graph = build_graph(Structure.from_atoms(Atoms()), 5.0, SpeciesTable([1]))
    assert graph.receivers.shape == (0,) and graph.edge_vectors.shape == (0, 3) and graph.n_graphs == 1


@pytest.mark.parametrize(
    "atoms, message",
    [
        (Atoms("H2", positions=[(0, 0, 0), (np.nan, 0, 0)]), "NaN or infinite positions"),
        (Atoms("H2", positions=[(0, 0, 0), (np.inf, 0, 0)]), "NaN or infinite positions"),
        (Atoms("H", cell=[[np.nan, 0, 0], [0, 3, 0], [0, 0, 3]], pbc=True), "cell contains NaN"),
        (Atoms("H", cell=[3, 3, 0], pbc=True), "singular along periodic directions"),
        (Atoms("H", cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True), "singular along periodic directions"),
    ],
)
def test_bad_geometry_is_rejected_with_a_reason(atoms, message):
    with pytest.raises(ValueError, match=message):
        build_graph(Structure.from_atoms(atoms), 5.0, SpeciesTable([1]))
