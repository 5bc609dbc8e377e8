"""Atoms -> graph: validated arrays and the directed edges within the cutoff.

The neighbour list comes from ``vesin`` (measured about 2.5x faster than matscipy on a
216-atom Si cell here, and it accepts mixed and absent periodicity); tests compare it with
ASE's ``primitive_neighbor_list``. Cells shorter than the cutoff, skewed triclinic cells,
atoms outside the cell and molecules far from the origin are all handled by vesin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from vesin import NeighborList


@dataclass(frozen=True)
class Graph:
    """Directed edges ``(receiver i, sender j)`` with ``r_ij = pos[j] - pos[i] + shift @ cell``,
    sorted by receiver.

    Attributes:
        positions: ``(n_atoms, 3)`` float64, Angstrom.
        cell: ``(3, 3)`` float64, rows are lattice vectors (rows of non-periodic directions
            may be zero).
        receivers, senders: ``(n_edges,)`` int64.
        shifts: ``(n_edges, 3)`` float64 integer cell shifts of the sender image.
    """

    positions: np.ndarray
    cell: np.ndarray
    receivers: np.ndarray
    senders: np.ndarray
    shifts: np.ndarray

    @property
    def edge_vectors(self) -> np.ndarray:
        """``(n_edges, 3)`` float64 ``pos[sender] - pos[receiver] + shift @ cell`` in Angstrom."""
        return self.positions[self.senders] - self.positions[self.receivers] + self.shifts @ self.cell


def validate_geometry(atoms: Atoms) -> None:
    """Raise ``ValueError`` for non-finite positions or cell, or a cell that is singular along a
    periodic direction."""
    positions = atoms.positions
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise ValueError(
            f"atoms {bad[:10].tolist()} have NaN or infinite positions; fix the structure "
            "(a diverged MD run or optimisation usually causes this)"
        )
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"the cell contains NaN or infinite entries: {cell.tolist()}")
    pbc = atoms.pbc
    if pbc.any():
        periodic_vectors = cell[pbc]
        # the periodic lattice vectors must be linearly independent and non-zero
        if np.linalg.matrix_rank(periodic_vectors, tol=1e-8) < int(pbc.sum()):
            raise ValueError(
                f"the cell is singular along periodic directions {np.nonzero(pbc)[0].tolist()} "
                f"(cell = {np.round(cell, 6).tolist()}); give every periodic direction a "
                "non-zero, independent lattice vector, or set pbc=False there"
            )


def build_graph(atoms: Atoms, cutoff: float) -> Graph:
    """All directed pairs with distance < ``cutoff`` (Angstrom), including periodic images."""
    validate_geometry(atoms)
    positions = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    cell = np.ascontiguousarray(atoms.cell.array, dtype=np.float64)
    pbc = atoms.pbc
    if len(atoms) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Graph(positions, cell, empty, empty, np.zeros((0, 3)))
    box = cell.copy()
    box[~pbc] = 0.0  # vesin ignores the box along non-periodic directions
    nl = NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts = nl.compute(positions, box, [bool(p) for p in pbc], "ijS")
    # edges sorted by receiver: the fused CPU convolution needs it, and it keeps memory access local
    order = np.argsort(i, kind="stable")
    return Graph(
        positions=positions,
        cell=cell,
        receivers=i[order].astype(np.int64),
        senders=j[order].astype(np.int64),
        shifts=shifts[order].astype(np.float64),
    )
