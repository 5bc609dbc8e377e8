"""Exact evaluation of a system too large for memory, one spatial chunk at a time.

A message-passing model with ``L`` layers gives atom ``i`` an energy that depends only on atoms
at most ``L`` edges away. So the atoms are split into compact spatial chunks ("owned" atoms),
and each chunk is evaluated on the subgraph of its ``L``-hop neighbourhood (the owned atoms and
a halo), counting the energies of its owned atoms only. Gradients with respect to the halo's
edges are real contributions of the owned energies, so forces (scattered to global atoms) and
virials simply add up over chunks: the result equals the whole-system evaluation to rounding.

Only edges whose receiver is within ``L - 1`` hops are kept: the outermost halo atoms enter
with their species embedding alone, which is all the owned energies need from them.

The cost is the halo: a chunk of side ``s`` evaluates about ``((s + 2 L r_c) / s)^3`` times its
owned atoms, so chunks are made as large as memory allows (:func:`plan_chunks`).

Example::

    >>> graph = build_graph(atoms, potential.cutoff)               # doctest: +SKIP
    >>> out = evaluate_in_chunks(potential, species, graph, max_region_atoms=100_000)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .graph import Graph
from .nn.model import evaluate


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``region`` global atom indices (sorted; owned ones and halo), ``owned`` a
    boolean mask over ``region``, ``edges`` the indices of the global edges kept."""

    region: np.ndarray
    owned: np.ndarray
    edges: np.ndarray


def spatial_bins(graph: Graph, n_bins: int) -> np.ndarray:
    """``(n_atoms,)`` int bin of each atom: a grid of about ``n_bins`` compact boxes.

    Periodic full-rank cells are binned in fractional coordinates (wrapped), anything else in
    Cartesian coordinates over the atoms' bounding box; the grid divides each direction in
    proportion to its length."""
    pos = graph.positions
    if n_bins <= 1 or len(pos) == 0:
        return np.zeros(len(pos), dtype=np.int64)
    cell = graph.cell
    if abs(np.linalg.det(cell)) > 1e-12:
        frac = np.linalg.solve(cell.T, pos.T).T
        lengths = np.linalg.norm(cell, axis=1)
    else:
        frac = pos.copy()
        lengths = np.zeros(3)
    for a in range(3):
        lo, hi = frac[:, a].min(), frac[:, a].max()
        if lengths[a] == 0.0:  # Cartesian: normalise the bounding box
            lengths[a] = hi - lo
            frac[:, a] = (frac[:, a] - lo) / (hi - lo) if hi > lo else 0.0
        else:
            frac[:, a] -= np.floor(frac[:, a])
    # divisions per direction in proportion to its length, product about n_bins
    weights = np.maximum(lengths, 1e-9)
    scale = (n_bins / np.prod(weights)) ** (1 / 3)
    divisions = np.maximum(1, np.round(weights * scale)).astype(np.int64)
    index = np.minimum((frac * divisions).astype(np.int64), divisions - 1)
    return (index[:, 0] * divisions[1] + index[:, 1]) * divisions[2] + index[:, 2]


def chunk_of(graph: Graph, owned_atoms: np.ndarray, n_layers: int) -> Chunk:
    """The ``n_layers``-hop neighbourhood of ``owned_atoms`` (global indices) and its edges."""
    n_atoms = len(graph.positions)
    inside = np.zeros(n_atoms, dtype=bool)
    inside[owned_atoms] = True
    receivers_inside = inside
    for _ in range(n_layers):
        receivers_inside = inside.copy()  # atoms within (hops so far) whose messages matter
        reached = graph.senders[receivers_inside[graph.receivers]]
        inside[reached] = True
    # edges into atoms within n_layers - 1 hops; their senders are within n_layers hops
    edges = np.flatnonzero(receivers_inside[graph.receivers])
    region = np.flatnonzero(inside)
    owned = np.zeros(n_atoms, dtype=bool)
    owned[owned_atoms] = True
    return Chunk(region=region, owned=owned[region], edges=edges)


def plan_chunks(graph: Graph, n_layers: int, max_region_atoms: int) -> list[Chunk]:
    """Chunks whose regions (owned + halo) hold at most ``max_region_atoms`` atoms where the
    geometry allows: the grid is refined until they do, or until one bin's halo alone is too
    large (then the smallest chunks found are used, with a region over the bound)."""
    n_atoms = len(graph.positions)
    n_bins = max(1, math.ceil(n_atoms / max_region_atoms))
    best: list[Chunk] | None = None
    for _ in range(12):
        bins = spatial_bins(graph, n_bins)
        chunks = [chunk_of(graph, np.flatnonzero(bins == b), n_layers) for b in np.unique(bins)]
        largest = max(len(c.region) for c in chunks)
        if best is None or largest < max(len(c.region) for c in best):
            best = chunks
        if largest <= max_region_atoms:
            return chunks
        n_bins = math.ceil(n_bins * max(1.5, (largest / max_region_atoms) ** 1.5))
        if n_bins > n_atoms:
            break
    return best


def evaluate_in_chunks(
    potential,
    species: np.ndarray,
    graph: Graph,
    max_region_atoms: int,
    compute_forces: bool = True,
    compute_virial: bool = True,
) -> dict[str, torch.Tensor | None]:
    """One structure's energy, per-atom energies, forces and virial, chunk by chunk.

    Args:
        potential: a loaded :class:`~facet_calc.potential.Potential` (its dtype and device).
        species: ``(n_atoms,)`` model species indices.
        graph: the structure's graph (edges sorted by receiver).
        max_region_atoms: bound on the atoms of one chunk's region (owned + halo).

    Returns what :func:`facet_calc.nn.model.evaluate` returns for one structure, detached:
    ``energy (1,)``, ``energies (n_atoms,)``, ``forces (n_atoms, 3)`` or None, ``virial (1, 3, 3)``
    or None.
    """
    model = potential.model
    dtype, device = potential.dtype, potential.device
    n_atoms = len(graph.positions)
    chunks = plan_chunks(graph, len(model.layers), max_region_atoms)
    energies = torch.zeros(n_atoms, dtype=dtype, device=device)
    forces = torch.zeros((n_atoms, 3), dtype=dtype, device=device) if compute_forces else None
    virial = torch.zeros((1, 3, 3), dtype=dtype, device=device) if compute_virial else None
    species = np.asarray(species)
    for chunk in chunks:
        local = np.full(n_atoms, -1, dtype=np.int64)
        local[chunk.region] = np.arange(len(chunk.region))
        senders, receivers = graph.senders[chunk.edges], graph.receivers[chunk.edges]
        # float64 differences, then cast (as Graph.edge_vectors)
        vec = graph.positions[senders] - graph.positions[receivers] + graph.shifts[chunk.edges] @ graph.cell
        owned = torch.as_tensor(chunk.owned, device=device)
        out = evaluate(
            model,
            species=torch.as_tensor(species[chunk.region], dtype=torch.int64, device=device),
            edge_vec=torch.as_tensor(vec, dtype=dtype, device=device),
            senders=torch.as_tensor(local[senders], device=device),
            receivers=torch.as_tensor(local[receivers], device=device),
            compute_forces=compute_forces,
            compute_virial=compute_virial,
            counted=owned,
        )
        region = torch.as_tensor(chunk.region, device=device)
        energies[region[owned]] = out["energies"][owned]
        if compute_forces:
            forces.index_add_(0, region, out["forces"])
        if compute_virial:
            virial += out["virial"]
    # the total in float64: a float32 sum over 10^6 atoms would lose digits
    return {"energy": energies.double().sum().reshape(1), "energies": energies, "forces": forces, "virial": virial}
