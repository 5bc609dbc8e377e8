"""The neighbour list against ASE's primitive_neighbor_list, and geometry validation."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule, nanotube
from ase.neighborlist import primitive_neighbor_list

from facet_calc.graph import Structure, build_graph, neighbour_list
from facet_calc.nn._kernels import spline_conv_library
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


def _random_triclinic(seed):
    """A random cell (angles far from 90, some lengths below the cutoff) with atoms inside and
    outside it."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.5, 9.0, 3)) + rng.uniform(-2.5, 2.5, (3, 3))
    n = int(rng.integers(1, 30))
    return Atoms(f"Si{n}", positions=rng.uniform(-1.5, 2.5, (n, 3)) @ cell, cell=cell, pbc=True)


for _seed in range(4):
    CASES[f"random triclinic {_seed}"] = _random_triclinic(_seed)
CASES["1000-atom Si, rattled"] = bulk("Si", "diamond", a=5.43, cubic=True).repeat(5)
CASES["1000-atom Si, rattled"].rattle(0.05, seed=1)
COMPILED_NL = [pytest.param(False, id="vesin")]
if spline_conv_library() is not None:
    COMPILED_NL.append(pytest.param(True, id="compiled"))


@pytest.mark.parametrize("compiled", COMPILED_NL)
@pytest.mark.parametrize("name", list(CASES))
def test_edges_match_ase(name, compiled, monkeypatch):
    """Vesin (every case) and the compiled cell list (fully periodic cells) against ASE: the same
    pairs and shifts, receivers ascending, vectors ``pos[j] - pos[i] + S @ cell``."""
    from facet_calc import graph as graph_module

    served = []  # the calls the compiled cell list answered
    original = graph_module._compiled_pairs

    def recorded(*args):
        pairs = original(*args)
        served.append(pairs is not None)
        return pairs

    monkeypatch.setattr(graph_module, "_compiled_pairs", recorded)
    if not compiled:
        monkeypatch.setenv("FACET_CALC_KERNELS", "0")
    atoms = CASES[name]
    cutoff = 5.0
    graph = neighbour_list(Structure.from_atoms(atoms), cutoff)
    i, j, shifts = primitive_neighbor_list(
        "ijS", atoms.pbc, atoms.cell.array, atoms.positions, cutoff, self_interaction=False
    )
    ours = sorted(zip(graph.receivers, graph.senders, map(tuple, graph.shifts.astype(int))))
    ref = sorted(zip(i, j, map(tuple, shifts)))
    assert ours == ref
    assert (np.diff(graph.receivers) >= 0).all()
    if len(ref):
        want = atoms.positions[graph.senders] - atoms.positions[graph.receivers] + graph.shifts @ atoms.cell.array
        assert np.abs(graph.edge_vectors - want).max() < 1e-12 * max(1.0, np.abs(atoms.positions).max())
        distances = np.linalg.norm(graph.edge_vectors, axis=1)
        assert distances.max() < cutoff and distances.min() > 0
    assert any(served) == (compiled and bool(atoms.pbc.all()))


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


def test_the_compiled_cell_list_refuses_what_it_cannot_bin():
    """Non-finite or absurdly far positions and a singular cell: no pairs from the compiled
    path (``None``: the caller falls back to vesin, after validation has refused them)."""
    from facet_calc.graph import _compiled_pairs

    if spline_conv_library() is None:
        pytest.skip("needs the compiled CPU kernels")
    cell = np.eye(3) * 4.0
    good = np.array([[0.0, 0.0, 0.0], [1.0, 1.2, 0.7]])
    assert _compiled_pairs(good, cell, 3.0) is not None
    for bad in (np.nan, np.inf, 1e14):
        positions = good.copy()
        positions[1, 2] = bad
        assert _compiled_pairs(positions, cell, 3.0) is None
    assert _compiled_pairs(good, np.array([[4.0, 0, 0], [8.0, 0, 0], [0, 0, 4.0]]), 3.0) is None
