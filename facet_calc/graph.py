"""Structures -> AtomicGraph: the one graph type every engine and the trainer evaluate.

A structure (atomic numbers, positions, cell, periodicity; from ASE Atoms, a torch-sim state or
training data) is validated, its directed edges within the cutoff are found by ``vesin``, and
the edge vectors are differenced in float64 before any cast (in float32, differences of
positions far from the origin would lose most of their digits). Several graphs are joined by
:func:`collate` into one disjoint graph; :func:`group_by_edge_budget` bounds a batch's memory.

The neighbour list comes from ``vesin`` (measured about 2.5x faster than matscipy on a
216-atom Si cell here, and it accepts mixed and absent periodicity); tests compare it with
ASE's ``primitive_neighbor_list``. Cells shorter than the cutoff, skewed triclinic cells,
atoms outside the cell and molecules far from the origin are all handled by vesin. Fully
periodic cells take the compiled cell list of the CPU kernels where they are loaded (the same
pairs, receivers already ascending: no sort), tested against vesin; ``FACET_CALC_KERNELS=0``
leaves everything to vesin.

Example::

    >>> from ase.build import bulk
    >>> from facet_calc.species import SpeciesTable
    >>> g = graph_from_atoms(bulk("Si", "diamond", a=5.43), 5.0, SpeciesTable([14]))
    >>> g.n_atoms, g.n_graphs
    (2, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from vesin import NeighborList

from .species import SpeciesTable


@dataclass(frozen=True)
class NeighbourList:
    """Directed edges ``(receiver i, sender j)`` of one structure with ``r_ij = pos[j] - pos[i]
    + shift @ cell``, sorted by receiver (numpy, float64).

    Attributes:
        positions: ``(n_atoms, 3)`` float64, Angstrom.
        cell: ``(3, 3)`` float64, rows are lattice vectors (rows of non-periodic directions
            may be zero).
        receivers, senders: ``(n_edges,)`` int64.
        shifts: ``(n_edges, 3)`` float64 integer cell shifts of the sender image.
        vectors: ``(n_edges, 3)`` float64 edge vectors when the neighbour search gave them
            (vesin differences them in float64 as below), else ``None``.
    """

    positions: np.ndarray
    cell: np.ndarray
    receivers: np.ndarray
    senders: np.ndarray
    shifts: np.ndarray
    vectors: np.ndarray | None = None

    @property
    def edge_vectors(self) -> np.ndarray:
        """``(n_edges, 3)`` float64 ``pos[sender] - pos[receiver] + shift @ cell`` in Angstrom."""
        if self.vectors is not None:
            return self.vectors
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


@dataclass(frozen=True)
class Structure:
    """One structure as plain arrays: what every engine hands to :func:`build_graph`.

    Attributes: ``numbers (n,)`` int64 atomic numbers; ``positions (n, 3)`` float64 A;
    ``cell (3, 3)`` float64 A, rows are lattice vectors; ``pbc (3,)`` bool.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @classmethod
    def from_atoms(cls, atoms) -> Structure:
        """The arrays of an ``ase.Atoms`` (copied in float64)."""
        return cls.from_arrays(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)

    @classmethod
    def from_arrays(cls, numbers, positions, cell, pbc) -> Structure:
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        return cls(
            numbers=np.asarray(numbers, dtype=np.int64).reshape(-1),
            positions=np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3),
            cell=np.ascontiguousarray(cell, dtype=np.float64).reshape(3, 3),
            pbc=pbc,
        )

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def has_volume(self) -> bool:
        """Three non-zero lattice vectors (ASE's ``cell.rank == 3``, its rule for a stress)."""
        return bool(self.cell.any(axis=1).all())


def _structure(atoms) -> Structure:
    """``atoms`` as a :class:`Structure` (an ``ase.Atoms`` is converted)."""
    return atoms if isinstance(atoms, Structure) else Structure.from_atoms(atoms)


def validate_geometry(atoms) -> None:
    """Raise ``GeometryError`` for non-finite positions or cell, or a cell that is singular
    along a periodic direction. ``atoms``: a :class:`Structure` or an ``ase.Atoms``."""
    atoms = _structure(atoms)
    positions = atoms.positions
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise GeometryError(
            f"atoms {bad[:10].tolist()} have NaN or infinite positions; fix the structure "
            "(a diverged MD run or optimisation usually causes this)"
        )
    cell = atoms.cell
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


def _periodic_lattice(atoms: Structure, reduce: bool = True) -> np.ndarray:
    """``(d, 3)`` periodic lattice vectors, Minkowski-reduced where ASE can (shortest first)
    and ``reduce`` is on."""
    cell, pbc = atoms.cell, atoms.pbc
    if not reduce:
        return cell[pbc]
    try:
        from ase.geometry import minkowski_reduce

        reduced, _ = minkowski_reduce(cell, pbc=pbc)
        return np.asarray(reduced)[pbc]
    except Exception:  # reduction is an optimisation of the estimate, never required
        return cell[pbc]


def estimate_edges(atoms, cutoff: float, reduce_cell: bool = True) -> tuple[float, float]:
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
    ``atoms``: a :class:`Structure` or an ``ase.Atoms``.
    """
    atoms = _structure(atoms)
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


def check_neighbour_count(atoms, cutoff: float) -> float:
    """Refuse (``GeometryError``) a structure with more than :data:`MAX_NEIGHBOURS_PER_ATOM`
    estimated neighbours per atom; return the estimated edge count otherwise. Validates the
    geometry first (:func:`validate_geometry`). ``atoms``: a :class:`Structure` or ``ase.Atoms``."""
    atoms = _structure(atoms)
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


def _periodic_plane_spacings(atoms: Structure) -> np.ndarray:
    lattice = _periodic_lattice(atoms)
    return 1.0 / np.linalg.norm(np.linalg.pinv(lattice), axis=0)


def check_distances(graph: NeighbourList, numbers: np.ndarray) -> str | None:
    """Refuse (``GeometryError``) pairs closer than :data:`COINCIDENT_FRACTION` of their covalent
    radii sum (an atom and its own periodic image included); return a warning sentence for
    pairs closer than :data:`CLOSE_FRACTION`, else ``None``."""
    if graph.receivers.size == 0:
        return None
    vectors = graph.edge_vectors
    distances = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    return check_edge_distances(distances, graph.receivers, graph.senders, numbers)


def check_edge_distances(
    distances: np.ndarray,
    receivers: np.ndarray,
    senders: np.ndarray,
    numbers: np.ndarray,
    ids: np.ndarray | None = None,
    noun: str = "atoms",
) -> str | None:
    """:func:`check_distances` on edges given as arrays (engines that build their own
    neighbour lists, e.g. LAMMPS, check here): ``distances`` (n_edges,) in A, ``receivers`` and
    ``senders`` index ``numbers`` (atomic numbers, ghost atoms included); atoms are named by
    ``ids`` (default: their index; a periodic image carries its atom's id) after ``noun``."""
    if len(distances) == 0:
        return None
    from ase.data import chemical_symbols, covalent_radii

    # every pair passes when even the shortest edge is long for the largest radii present: one
    # reduction instead of the per-pair ratios (most steps of most runs end here)
    if float(distances.min()) >= CLOSE_FRACTION * 2.0 * float(covalent_radii[np.unique(numbers)].max()):
        return None
    radii = covalent_radii[numbers]
    ratio = distances / (radii[receivers] + radii[senders])
    worst = int(np.argmin(ratio))
    if ratio[worst] >= CLOSE_FRACTION:
        return None
    i, j = int(receivers[worst]), int(senders[worst])
    id_i, id_j = (i, j) if ids is None else (int(ids[i]), int(ids[j]))
    pair = (
        f"{noun} {id_i} ({chemical_symbols[numbers[i]]}) and {id_j} ({chemical_symbols[numbers[j]]})"
        if id_i != id_j
        else f"atom {id_i} ({chemical_symbols[numbers[i]]}) and its own periodic image"
    )
    n_close = int(np.sum(ratio < CLOSE_FRACTION)) // 2
    if ratio[worst] < COINCIDENT_FRACTION:
        raise GeometryError(
            f"{pair} are {distances[worst]:.3g} A apart, less than {COINCIDENT_FRACTION:g} x the sum "
            "of their covalent radii: coincident or overlapping atoms, for which the potential's "
            "energy is meaningless; remove duplicated atoms or check the cell and units"
        )
    message = CloseContacts(
        f"{n_close or 1} pair(s) closer than {CLOSE_FRACTION:g} x the sum of covalent radii, the "
        f"closest {pair} at {distances[worst]:.3g} A: far outside the training data, so the "
        "energy and forces are not to be trusted"
    )
    message.fraction = float(ratio[worst])
    return message


class CloseContacts(str):
    """The close-pair warning sentence, carrying ``fraction``: the closest pair's distance over
    its covalent radii sum (what a caller rate-limiting the warning compares)."""

    fraction: float


def neighbour_list(structure: Structure, cutoff: float) -> NeighbourList:
    """All directed pairs with distance < ``cutoff`` (Angstrom), periodic images included,
    sorted by receiver (the fused CPU convolution needs it, and it keeps memory access local).
    No checks: :func:`build_graph` validates first."""
    positions, cell, pbc = structure.positions, structure.cell, structure.pbc
    if len(structure) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return NeighbourList(positions, cell, empty, empty, np.zeros((0, 3)))
    if pbc.all():
        pairs = _compiled_pairs(positions, cell, cutoff)
        if pairs is not None:
            receivers, senders, shifts, vectors = pairs
            return NeighbourList(positions=positions, cell=cell, receivers=receivers, senders=senders, shifts=shifts,
                                 vectors=vectors)  # fmt: skip
    box = cell.copy()
    box[~pbc] = 0.0  # vesin ignores the box along non-periodic directions
    # vesin's own threads follow torch's count (its default, 0, is every core)
    nl = NeighborList(cutoff=cutoff, full_list=True, sorted=True, n_threads=torch.get_num_threads())
    i, j, shifts, vectors = nl.compute(positions, box, [bool(p) for p in pbc], "ijSD")
    return NeighbourList(
        positions=positions,
        cell=cell,
        receivers=i.astype(np.int64, copy=False),
        senders=j.astype(np.int64, copy=False),
        shifts=shifts.astype(np.float64, copy=False),
        vectors=np.ascontiguousarray(vectors, dtype=np.float64),
    )


def _compiled_pairs(positions: np.ndarray, cell: np.ndarray, cutoff: float):
    """The pairs of a fully periodic cell from the compiled cell list (``nn/_kernels/
    neighbours.cpp``: receivers ascending as they are found, ~1.2 ms against vesin's ~2-3 ms
    sorted for 1000 Si atoms at 5 A), or ``None`` where the CPU kernels are not loaded or
    switched off (``FACET_CALC_KERNELS=0``): then vesin, the reference it is tested against."""
    from .nn._kernels import kernel_launcher

    backend = kernel_launcher(torch.device("cpu"))
    return None if backend is None else backend.periodic_pairs(positions, cell, cutoff)


@dataclass(frozen=True)
class Labels:
    """Reference values of the graphs of a training batch (ASE units and sign).

    Attributes: ``energy (n_graphs,)`` eV; ``forces (n_atoms, 3)`` eV/A (rows of graphs
    without forces are zero and masked out by ``force_mask (n_atoms,)``); ``stress (n_graphs,
    3, 3)`` eV/A^3, used where ``stress_mask (n_graphs,)``; ``weight (n_graphs,)`` in the loss;
    ``atom_energies (n_atoms,)`` eV, per-atom energies of a teacher (an auxiliary target in
    distillation), used where ``atom_energy_mask (n_atoms,)``.
    """

    energy: torch.Tensor
    forces: torch.Tensor
    force_mask: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor
    weight: torch.Tensor
    atom_energies: torch.Tensor
    atom_energy_mask: torch.Tensor


@dataclass(frozen=True)
class AtomicGraph:
    """One or more structures as a disjoint directed graph of torch tensors, edges sorted by
    receiver within each structure (structure ``k``'s atoms follow structure ``k - 1``'s).

    Attributes:
        species: ``(n_atoms,)`` int64 model species indices.
        edge_vectors: ``(n_edges, 3)`` A, ``pos[sender] - pos[receiver] + shift @ cell``,
            differenced in float64 (and cast by :meth:`to`).
        senders, receivers: ``(n_edges,)`` int64 atom indices.
        batch: ``(n_atoms,)`` int64 structure index of each atom.
        counts: ``(n_graphs,)`` int64 atoms per structure.
        edge_counts: ``(n_graphs,)`` int64 edges per structure.
        positions: ``(n_atoms, 3)`` float64 A; cell ``(n_graphs, 3, 3)`` float64 A (rows);
            shifts ``(n_edges, 3)`` float64 integer cell shifts (spatial chunks and the
            strain reference path use them).
        labels: training targets, or ``None``.
    """

    species: torch.Tensor
    edge_vectors: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    batch: torch.Tensor
    counts: torch.Tensor
    edge_counts: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    shifts: torch.Tensor
    labels: Labels | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.senders.shape[0])

    @property
    def n_graphs(self) -> int:
        return int(self.counts.shape[0])

    @property
    def atom_offsets(self) -> np.ndarray:
        """``(n_graphs + 1,)``: structure ``k`` owns atoms ``atom_offsets[k]:atom_offsets[k + 1]``."""
        return np.concatenate([[0], np.cumsum(self.counts.cpu().numpy())]).astype(np.int64)

    @property
    def volumes(self) -> torch.Tensor:
        """``(n_graphs,)`` float64 cell volumes, A^3 (0 for a cell without full rank)."""
        return torch.linalg.det(self.cell).abs()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> AtomicGraph:
        """On ``device``, with edge vectors and float labels in ``dtype`` (positions, cell and
        shifts stay float64: they are references, not model inputs)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            cast = dtype if (dtype is not None and t.is_floating_point()) else None
            return t.to(device=device, dtype=cast)

        labels = None if self.labels is None else Labels(**{f.name: move(getattr(self.labels, f.name))
                                                            for f in fields(Labels)})  # fmt: skip
        kept = {name: getattr(self, name).to(device) for name in ("positions", "cell", "shifts")}
        return AtomicGraph(
            species=self.species.to(device), edge_vectors=move(self.edge_vectors),
            senders=self.senders.to(device), receivers=self.receivers.to(device), batch=self.batch.to(device),
            counts=self.counts.to(device), edge_counts=self.edge_counts.to(device), labels=labels, **kept,
        )  # fmt: skip

    def with_labels(self, labels: Labels | None) -> AtomicGraph:
        return replace(self, labels=labels)

    def subgraph(self, atoms: np.ndarray, edges: np.ndarray) -> AtomicGraph:
        """One structure's atoms ``atoms`` (sorted global indices) and edges ``edges`` (global
        edge indices whose both ends are in ``atoms``), renumbered; no labels."""
        local = np.full(self.n_atoms, -1, dtype=np.int64)
        local[atoms] = np.arange(len(atoms))
        device = self.species.device
        atoms_t, edges_t = torch.as_tensor(atoms, device=device), torch.as_tensor(edges, device=device)
        to_local = torch.as_tensor(local, device=device)
        return AtomicGraph(
            species=self.species[atoms_t], edge_vectors=self.edge_vectors[edges_t],
            senders=to_local[self.senders[edges_t]], receivers=to_local[self.receivers[edges_t]],
            batch=torch.zeros(len(atoms), dtype=torch.int64, device=device),
            counts=torch.tensor([len(atoms)], device=device), edge_counts=torch.tensor([len(edges)], device=device),
            positions=self.positions[atoms_t], cell=self.cell[:1], shifts=self.shifts[edges_t],
        )  # fmt: skip


def build_graph(
    structure: Structure,
    cutoff: float,
    species: SpeciesTable,
    checked: bool = False,
    on_close_pairs=None,
) -> AtomicGraph:
    """The :class:`AtomicGraph` of one structure (CPU tensors, edge vectors in float64).

    Every engine and the trainer build graphs here, so every one refuses the same things
    (``GeometryError``, a ``ValueError``): non-finite or singular geometry, more neighbours
    than matter can have (:func:`check_neighbour_count`, skipped when ``checked``: the caller
    just ran it), and coincident atoms (:func:`check_distances`); an element the potential
    lacks raises ``UnknownElementError``. Pairs that are close but not coincident call
    ``on_close_pairs(message)`` with a :class:`CloseContacts` (default: ``warnings.warn``).
    """
    index = species.indices(structure.numbers)
    if not checked:
        check_neighbour_count(structure, cutoff)
    nl = neighbour_list(structure, cutoff)
    close = check_distances(nl, structure.numbers)
    if close is not None:
        if on_close_pairs is None:
            import warnings

            warnings.warn(close, UserWarning, stacklevel=2)
        else:
            on_close_pairs(close)
    n, n_edges = len(structure), len(nl.senders)
    return AtomicGraph(
        species=torch.from_numpy(index),
        edge_vectors=torch.from_numpy(nl.edge_vectors),
        senders=torch.from_numpy(nl.senders),
        receivers=torch.from_numpy(nl.receivers),
        batch=torch.zeros(n, dtype=torch.int64),
        counts=torch.tensor([n]),
        edge_counts=torch.tensor([n_edges]),
        positions=torch.from_numpy(structure.positions),
        cell=torch.from_numpy(structure.cell).unsqueeze(0),
        shifts=torch.from_numpy(nl.shifts),
    )


def graph_from_atoms(atoms, cutoff: float, species: SpeciesTable, **options) -> AtomicGraph:
    """:func:`build_graph` of an ``ase.Atoms``."""
    return build_graph(Structure.from_atoms(atoms), cutoff, species, **options)


def collate(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
    """Join graphs into one disjoint graph (atom indices offset per structure; no edge crosses
    structures). All graphs have labels, or none has."""
    if not graphs:
        raise ValueError("collate needs at least one graph")
    if len(graphs) == 1:
        return graphs[0]
    atom_offsets = np.cumsum([0] + [g.n_atoms for g in graphs[:-1]])
    graph_offsets = np.cumsum([0] + [g.n_graphs for g in graphs[:-1]])

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(g, name) for g in graphs])

    labels = None
    if graphs[0].labels is not None:
        if any(g.labels is None for g in graphs):
            raise ValueError("collate: some graphs have labels and some do not")
        labels = Labels(**{f.name: torch.cat([getattr(g.labels, f.name) for g in graphs]) for f in fields(Labels)})
    return AtomicGraph(
        species=cat("species"),
        edge_vectors=cat("edge_vectors"),
        senders=torch.cat([g.senders + int(o) for g, o in zip(graphs, atom_offsets)]),
        receivers=torch.cat([g.receivers + int(o) for g, o in zip(graphs, atom_offsets)]),
        batch=torch.cat([g.batch + int(o) for g, o in zip(graphs, graph_offsets)]),
        counts=cat("counts"),
        edge_counts=cat("edge_counts"),
        positions=cat("positions"),
        cell=cat("cell"),
        shifts=cat("shifts"),
        labels=labels,
    )


def group_by_edge_budget(edge_counts: Sequence[int], max_edges: int) -> list[range]:
    """Consecutive groups of structures whose edges add up to at most ``max_edges`` (a
    structure larger than the budget forms a group of its own), so that a batch's memory
    stays bounded whatever the number of structures."""
    if max_edges < 1:
        raise ValueError(f"max_edges must be a positive number of edges, got {max_edges}")
    groups, start, total = [], 0, 0
    for k, n in enumerate(edge_counts):
        if k > start and total + n > max_edges:
            groups.append(range(start, k))
            start, total = k, 0
        total += int(n)
    if start < len(edge_counts):
        groups.append(range(start, len(edge_counts)))
    return groups


#: Default edge budget of one batched call. Memory of a call grows with its edges: about
#: 10 kB per edge for 7net-0-spline in float64 on the CPU kernel (forward and backward), so
#: this bounds a call to well under a GB.
DEFAULT_MAX_EDGES = 2**16
