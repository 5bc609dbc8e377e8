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


#: Refuse a structure whose estimated neighbour count exceeds this many per atom. The densest
#: solids (diamond, 0.18 atoms/A^3) have about 90 neighbours within 5 A; 1000 means a local
#: density ten times that, or a cell so thin that every atom meets hundreds of its own images.
MAX_NEIGHBOURS_PER_ATOM = 1000

#: A pair closer than this fraction of the sum of the two covalent radii (ASE's table) is an
#: error: no training structure comes near it and the models' energies there are arbitrary
#: (7net-0-spline: Si2 at 0.1 A gives -7.6e7 eV, Cu2 at 0.6 A -106 eV). Si-Si 0.56 A, H-H 0.16 A.
COINCIDENT_FRACTION = 0.25
#: Closer than this fraction (Si-Si 1.11 A, H-H 0.31 A, O-O 0.66 A) gives one warning: the
#: structure is far outside the training data and its energy is not to be trusted.
CLOSE_FRACTION = 0.5


class GeometryError(ValueError):
    """A structure that cannot be physical, refused before any number is computed."""


def validate_geometry(atoms: Atoms) -> None:
    """Raise ``GeometryError`` for non-finite positions or cell, or a cell that is singular
    along a periodic direction."""
    positions = atoms.positions
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise GeometryError(
            f"atoms {bad[:10].tolist()} have NaN or infinite positions; fix the structure "
            "(a diverged MD run or optimisation usually causes this)"
        )
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise GeometryError(f"the cell contains NaN or infinite entries: {cell.tolist()}")
    pbc = atoms.pbc
    if pbc.any():
        periodic_vectors = cell[pbc]
        # the periodic lattice vectors must be linearly independent and non-zero; the tolerance
        # is relative, so a vector of 1e-12 A next to ones of 3 A counts as zero
        sv = np.linalg.svd(periodic_vectors, compute_uv=False)
        if sv[-1] <= 1e-10 * max(sv[0], 1e-300) or sv[0] == 0.0:
            raise GeometryError(
                f"the cell is singular along periodic directions {np.nonzero(pbc)[0].tolist()} "
                f"(cell = {np.round(cell, 6).tolist()}); give every periodic direction a "
                "non-zero, independent lattice vector, or set pbc=False there"
            )


def _periodic_lattice(atoms: Atoms, reduce: bool = True) -> np.ndarray:
    """``(d, 3)`` periodic lattice vectors, Minkowski-reduced where ASE can (shortest first)
    and ``reduce`` is on."""
    cell, pbc = atoms.cell.array, atoms.pbc
    if not reduce:
        return cell[pbc]
    try:
        from ase.geometry import minkowski_reduce

        reduced, _ = minkowski_reduce(cell, pbc=pbc)
        return np.asarray(reduced)[pbc]
    except Exception:  # reduction is an optimisation of the estimate, never required
        return cell[pbc]


def estimate_edges(atoms: Atoms, cutoff: float, reduce_cell: bool = True) -> tuple[float, float]:
    """Estimated number of directed edges within ``cutoff`` and the image factor, computed in
    O(n) before any neighbour list is built.

    Atoms (wrapped into the cell along periodic directions) are binned into cubes of side
    ``cutoff``; each atom is taken to have ``4/3 pi cutoff^3`` times its bin's density of
    neighbours. Along a periodic direction whose plane spacing ``h`` is below the cutoff the
    bin is only ``h`` thick and each atom meets ``cutoff / h`` layers of images: the image
    factor is the product of those ratios. Exact to within a factor of about 2 for bulk
    matter; what matters is that it is finite and grows with the real edge count.
    ``reduce_cell``: take the plane spacings of the Minkowski-reduced cell (a skewed cell's own
    spacings overestimate the images; the reduction costs ~0.1 ms, much of a small step).
    """
    positions = atoms.positions
    n = len(atoms)
    if n == 0:
        return 0.0, 1.0
    wrapped = positions
    image_factor = 1.0
    if atoms.pbc.any():
        lattice = _periodic_lattice(atoms, reduce_cell)
        dual = np.linalg.pinv(lattice)  # (3, d): positions @ dual = fractional coordinates
        frac = positions @ dual
        wrapped = positions - np.floor(frac) @ lattice
        spacing = 1.0 / np.linalg.norm(dual, axis=0)  # plane spacing of each periodic direction
        image_factor = float(np.prod(np.maximum(1.0, cutoff / spacing)))
    keys = np.floor((wrapped - wrapped.min(axis=0)) / cutoff).astype(np.int64)
    span = keys.max(axis=0) + 1
    if float(np.prod(span.astype(np.float64))) < 2.0**62:  # one integer per bin: a fast 1-D unique
        _, counts = np.unique(np.ravel_multi_index(keys.T, span), return_counts=True)
    else:  # pragma: no cover - a structure spanning more than 2**62 bins
        _, counts = np.unique(keys, axis=0, return_counts=True)
    per_bin = counts.astype(np.float64)
    edges = 4.0 / 3.0 * np.pi * float(np.sum(per_bin**2)) * image_factor
    return edges, image_factor


#: structures up to this many atoms estimate their edges from the cell as given (see
#: :func:`check_neighbour_count`)
REDUCE_CELL_ABOVE_ATOMS = 1000


def check_neighbour_count(atoms: Atoms, cutoff: float) -> float:
    """Refuse (``GeometryError``) a structure with more than :data:`MAX_NEIGHBOURS_PER_ATOM`
    estimated neighbours per atom; return the estimated edge count otherwise. Validates the
    geometry first (:func:`validate_geometry`)."""
    validate_geometry(atoms)
    n = len(atoms)
    # reduced, the estimate only falls; small structures, where the reduction is a noticeable
    # part of a step and the estimate feeds no memory decision, take the cell as given first and
    # are reduced only when that plain estimate would refuse them
    reduce_cell = n > REDUCE_CELL_ABOVE_ATOMS
    edges, image_factor = estimate_edges(atoms, cutoff, reduce_cell=reduce_cell)
    if not reduce_cell and edges / max(n, 1) > MAX_NEIGHBOURS_PER_ATOM:
        edges, image_factor = estimate_edges(atoms, cutoff, reduce_cell=True)
    if n == 0 or edges / n <= MAX_NEIGHBOURS_PER_ATOM:
        return edges
    per_atom = edges / n
    if image_factor > MAX_NEIGHBOURS_PER_ATOM / 10:
        spacing = _periodic_plane_spacings(atoms)
        raise GeometryError(
            f"the cell is near-singular or far smaller than the {cutoff:g} A cutoff: its periodic "
            f"lattice planes are {np.array2string(spacing, precision=3)} A apart, so each atom would "
            f"meet about {per_atom:.3g} neighbours (more than {MAX_NEIGHBOURS_PER_ATOM}, the bound for "
            "matter); check the cell's units and lattice vectors, or build a supercell"
        )
    raise GeometryError(
        f"the atoms are packed far more densely than any solid: about {per_atom:.3g} neighbours "
        f"per atom within {cutoff:g} A (the densest solids have ~90; the bound is "
        f"{MAX_NEIGHBOURS_PER_ATOM}); look for duplicated or coincident atoms, or positions in "
        "the wrong units"
    )


def _periodic_plane_spacings(atoms: Atoms) -> np.ndarray:
    lattice = _periodic_lattice(atoms)
    return 1.0 / np.linalg.norm(np.linalg.pinv(lattice), axis=0)


def check_distances(graph: Graph, numbers: np.ndarray) -> str | None:
    """Refuse (``GeometryError``) pairs closer than :data:`COINCIDENT_FRACTION` of their covalent
    radii sum (an atom and its own periodic image included); return a warning sentence for
    pairs closer than :data:`CLOSE_FRACTION`, else ``None``."""
    if graph.receivers.size == 0:
        return None
    from ase.data import chemical_symbols, covalent_radii

    distances = np.linalg.norm(graph.edge_vectors, axis=1)
    radii = covalent_radii[numbers]
    ratio = distances / (radii[graph.receivers] + radii[graph.senders])
    worst = int(np.argmin(ratio))
    if ratio[worst] >= CLOSE_FRACTION:
        return None
    i, j = int(graph.receivers[worst]), int(graph.senders[worst])
    pair = (
        f"atoms {i} ({chemical_symbols[numbers[i]]}) and {j} ({chemical_symbols[numbers[j]]})"
        if i != j
        else f"atom {i} ({chemical_symbols[numbers[i]]}) and its own periodic image"
    )
    n_close = int(np.sum(ratio < CLOSE_FRACTION)) // 2
    if ratio[worst] < COINCIDENT_FRACTION:
        raise GeometryError(
            f"{pair} are {distances[worst]:.3g} A apart, less than {COINCIDENT_FRACTION:g} x the sum "
            "of their covalent radii: coincident or overlapping atoms, for which the potential's "
            "energy is meaningless; remove duplicated atoms or check the cell and units"
        )
    return (
        f"{n_close or 1} pair(s) closer than {CLOSE_FRACTION:g} x the sum of covalent radii, the "
        f"closest {pair} at {distances[worst]:.3g} A: far outside the training data, so the "
        "energy and forces are not to be trusted"
    )


def build_graph(atoms: Atoms, cutoff: float, checked: bool = False) -> Graph:
    """All directed pairs with distance < ``cutoff`` (Angstrom), including periodic images.

    Raises ``GeometryError`` (a ``ValueError``) before building anything for a geometry that
    cannot be physical (see :func:`validate_geometry`, :func:`check_neighbour_count`);
    ``checked=True`` skips those checks when the caller has just run them."""
    if not checked:
        validate_geometry(atoms)
        check_neighbour_count(atoms, cutoff)
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
