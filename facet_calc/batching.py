"""Many structures in one model call: their graphs joined into one disjoint graph, batches
bounded by an edge budget, per-structure energies, forces and virials out (torch tensors, in
the potential's dtype and on its device).

The engine adapters (the ASE calculator, torch-sim) share it, so a structure gets the same
numbers whichever engine asks and however many structures share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase.data import chemical_symbols

from .graph import Graph
from .nn.model import evaluate
from .potential import Potential


@dataclass(frozen=True)
class GraphBatch:
    """Graphs of several structures joined into one disjoint graph, edges still sorted by
    receiver (each graph's atoms follow the previous graph's).

    Attributes:
        edge_vectors: ``(n_edges, 3)`` float64, A, computed per structure in float64.
        senders, receivers: ``(n_edges,)`` int64 indices into the joined atoms.
        batch: ``(n_atoms,)`` int64 structure index of each atom.
        atom_offsets: ``(n_structures + 1,)`` int64: structure ``k`` owns atoms
            ``atom_offsets[k]:atom_offsets[k + 1]``.
    """

    edge_vectors: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    batch: np.ndarray
    atom_offsets: np.ndarray

    @property
    def n_structures(self) -> int:
        return len(self.atom_offsets) - 1


def join_graphs(graphs: list[Graph]) -> GraphBatch:
    """Join per-structure graphs into one :class:`GraphBatch` (no edge crosses structures)."""
    counts = np.array([len(g.positions) for g in graphs], dtype=np.int64)
    offsets = np.zeros(len(graphs) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    def cat(arrays, shape):
        return np.concatenate(arrays) if arrays else np.zeros(shape)

    return GraphBatch(
        edge_vectors=cat([g.edge_vectors for g in graphs], (0, 3)),
        senders=cat([g.senders + o for g, o in zip(graphs, offsets)], (0,)).astype(np.int64),
        receivers=cat([g.receivers + o for g, o in zip(graphs, offsets)], (0,)).astype(np.int64),
        batch=np.repeat(np.arange(len(graphs), dtype=np.int64), counts),
        atom_offsets=offsets,
    )


def group_by_edge_budget(edge_counts: list[int], max_edges: int) -> list[range]:
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
        total += n
    if start < len(edge_counts):
        groups.append(range(start, len(edge_counts)))
    return groups


def species_lookup(potential: Potential) -> np.ndarray:
    """Table from atomic number to the model's species index (-1: not supported)."""
    numbers = potential.atomic_numbers
    lookup = np.full(max(numbers) + 1, -1, dtype=np.int64)
    lookup[numbers] = np.arange(len(numbers))
    return lookup


def species_indices(potential: Potential, lookup: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """The model's species indices of atomic ``numbers``; ``ValueError`` naming the elements
    the potential does not know and those it does."""
    numbers = np.asarray(numbers, dtype=np.int64)
    known = (numbers >= 0) & (numbers < len(lookup))
    species = np.full(numbers.shape, -1, dtype=np.int64)
    species[known] = lookup[numbers[known]]
    if np.any(species < 0):
        unknown = sorted({int(z) for z in numbers[species < 0]})
        names = [chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z) for z in unknown]
        supported = " ".join(chemical_symbols[z] for z in sorted(potential.atomic_numbers))
        raise ValueError(
            f"potential {potential.name!r} has no parameters for element(s) "
            f"{', '.join(names)}; it supports: {supported}"
        )
    return species


#: Default edge budget of one batched call. Memory of a call grows with its edges: about
#: 10 kB per edge for 7net-0-spline in float64 on the CPU kernel (forward and backward), so
#: this bounds a call to well under a GB.
DEFAULT_MAX_EDGES = 2**16


def evaluate_batch(
    potential: Potential,
    species: np.ndarray | torch.Tensor,
    graphs: GraphBatch,
    compute_forces: bool = True,
    compute_virial: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Evaluate the joined graphs in one call of :func:`facet_calc.nn.model.evaluate`.

    Args:
        potential: the loaded potential (its model's dtype and device are used).
        species: ``(n_atoms,)`` model species indices of the joined atoms.
        graphs: the joined graphs (edge vectors in float64, cast after the subtraction).

    Returns ``energy (n_structures,)`` eV, ``energies (n_atoms,)`` eV, ``forces (n_atoms, 3)``
    eV/A or None, ``virial (n_structures, 3, 3)`` eV (dE/d strain) or None; detached.
    """
    dtype, device = potential.dtype, potential.device

    def tensor(array, tdtype):
        return torch.as_tensor(array, dtype=tdtype, device=device)

    return evaluate(
        potential.model,
        species=tensor(species, torch.int64),
        edge_vec=tensor(graphs.edge_vectors, dtype),
        senders=tensor(graphs.senders, torch.int64),
        receivers=tensor(graphs.receivers, torch.int64),
        batch=tensor(graphs.batch, torch.int64),
        n_structures=graphs.n_structures,
        compute_forces=compute_forces,
        compute_virial=compute_virial,
    )
