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

:class:`MemoryPlan` decides when a step is chunked: it estimates a step's memory before
anything is allocated and compares it with what the machine had free when the plan was made
(read once per calculator, not at every step).

Example::

    >>> graph = graph_from_atoms(atoms, potential.cutoff, potential.species)  # doctest: +SKIP
    >>> out = evaluate_in_chunks(potential.model, graph, max_region_atoms=100_000)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .graph import AtomicGraph, NeighbourList
from .nn.forward import evaluate


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``region`` global atom indices (sorted; owned ones and halo), ``owned`` a
    boolean mask over ``region``, ``edges`` the indices of the global edges kept."""

    region: np.ndarray
    owned: np.ndarray
    edges: np.ndarray


def spatial_bins(graph: NeighbourList, n_bins: int) -> np.ndarray:
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


def chunk_of(graph: NeighbourList, owned_atoms: np.ndarray, n_layers: int) -> Chunk:
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


def plan_chunks(graph: NeighbourList, n_layers: int, max_region_atoms: int) -> list[Chunk]:
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


def _neighbour_list(graph: AtomicGraph) -> NeighbourList:
    """The numpy view of a one-structure graph that chunk planning works on."""
    return NeighbourList(
        positions=graph.positions.cpu().numpy(), cell=graph.cell[0].cpu().numpy(),
        receivers=graph.receivers.cpu().numpy(), senders=graph.senders.cpu().numpy(),
        shifts=graph.shifts.cpu().numpy(),
    )  # fmt: skip


def evaluate_in_chunks(
    model: torch.nn.Module,
    graph: AtomicGraph,
    max_region_atoms: int,
    compute_forces: bool = True,
    compute_virial: bool = True,
) -> dict[str, torch.Tensor | None]:
    """One structure's energy, per-atom energies, forces and virial, chunk by chunk.

    Args:
        model: a model family (:class:`~facet_calc.nn.contract.EnergyModel`).
        graph: the structure's graph (one structure, edges sorted by receiver), on the
            model's device.
        max_region_atoms: bound on the atoms of one chunk's region (owned + halo).

    Returns what :func:`facet_calc.nn.forward.evaluate` returns for one structure, detached:
    ``energy (1,)``, ``energies (n_atoms,)``, ``forces (n_atoms, 3)`` or None, ``virial (1, 3, 3)``
    or None.
    """
    dtype, device = model.dtype, graph.species.device
    n_atoms = graph.n_atoms
    chunks = plan_chunks(_neighbour_list(graph), len(model.layers), max_region_atoms)
    energies = torch.zeros(n_atoms, dtype=dtype, device=device)
    forces = torch.zeros((n_atoms, 3), dtype=dtype, device=device) if compute_forces else None
    virial = torch.zeros((1, 3, 3), dtype=dtype, device=device) if compute_virial else None
    for chunk in chunks:
        owned = torch.as_tensor(chunk.owned, device=device)
        out = evaluate(
            model, graph.subgraph(chunk.region, chunk.edges),
            compute_forces=compute_forces, compute_virial=compute_virial, counted=owned,
        )  # fmt: skip
        region = torch.as_tensor(chunk.region, device=device)
        energies[region[owned]] = out["energies"][owned]
        if compute_forces:
            forces.index_add_(0, region, out["forces"])
        if compute_virial:
            virial += out["virial"]
    # the total in float64: a float32 sum over 10^6 atoms would lose digits
    return {"energy": energies.double().sum().reshape(1), "energies": energies, "forces": forces, "virial": virial}


def available_memory_bytes() -> int | None:
    """Memory this process may still take: the smaller of the kernel's MemAvailable and the room
    left under a cgroup (container) limit; ``None`` where neither can be read."""
    limits = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = int(handle.read().strip())
        if limit != "max":
            limits.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


#: safety factor on the step estimate: the bare sum (five node tensors per atom, 600 B per
#: edge) fell 2.7 % short of the measured step at 20,000 atoms of Si (79.7 against 77.6 KiB/atom)
STEP_MARGIN = 1.1


def estimate_step_bytes(model, n_atoms: int, n_edges: float) -> float:
    """Peak memory of one energy + forces + stress step, estimated before anything is allocated.

    The bare estimate is five node tensors as wide as the widest tensor-product output (3136
    entries for 7net-0-spline) per atom plus 600 bytes per edge (neighbour list in float64,
    spherical harmonics, spline coefficients), scaled by the model's width and dtype; the
    per-edge couplings are never kept. Measured (``benchmarks/memory_scaling.py``, 7net-0-spline,
    CPU, float32, rattled diamond Si, 28 edges per atom, bare estimate 77.6 KiB/atom): 93.6 /
    79.7 / 63.6 / 59.7 KiB per atom at 8,000 / 20,000 / 64,000 / 125,000 atoms; a dilute gas
    54 KB per atom at 64,000. The bare estimate under-estimated at 20,000 atoms by 2.7 % (and
    below ~15,000 atoms, where a fixed ~100-500 MiB of allocator and kernel state dominates, by
    more: such steps fit in any machine's memory), so it is multiplied by :data:`STEP_MARGIN`:
    an over-estimate by 7 % at 20,000 atoms and 43 % at 125,000, the sizes where memory runs
    out."""
    itemsize = torch.finfo(model.dtype).bits // 8
    widest = max(int(layer.convolution.irreps_out.dim) for layer in model.layers)
    per_atom = 5 * widest * itemsize
    per_edge = 100 * itemsize + 200
    return STEP_MARGIN * (n_atoms * per_atom + n_edges * per_edge)


class MemoryPlan:
    """Whether a CPU step fits in memory, and if not, the spatial chunks that do.

    Args:
        model: the model whose steps are planned.
        free_bytes: memory available to the process; ``None``: read once now
            (:func:`available_memory_bytes`), not at every step.
        min_region_atoms: a chunk must hold at least this many atoms, or the step is refused.
    """

    def __init__(self, model, free_bytes: int | None = None, min_region_atoms: int = 2000) -> None:
        self.model = model
        self.free_bytes = available_memory_bytes() if free_bytes is None else free_bytes
        self.min_region_atoms = min_region_atoms

    def region_atoms(self, n_atoms: int, n_edges: float, cutoff: float) -> int | None:
        """``None`` when the step fits whole; else the largest chunk region (atoms) that fills
        half of the free memory (the graph and the results need the rest). ``MemoryError``
        when even a chunk of ``min_region_atoms`` would not fit."""
        if self.free_bytes is None or n_atoms == 0:
            return None
        needed = estimate_step_bytes(self.model, n_atoms, n_edges)
        if needed <= self.free_bytes:
            return None
        fitting = int(0.5 * self.free_bytes / (needed / n_atoms))
        if fitting < self.min_region_atoms:
            raise MemoryError(
                f"this step would need about {needed / 2**30:.1f} GiB ({n_atoms} atoms, about "
                f"{n_edges:.3g} edges within {cutoff:g} A) but only {self.free_bytes / 2**30:.1f} GiB is "
                f"available, too little even for spatial chunks of {self.min_region_atoms} atoms; use "
                "a smaller system, or set the calculator's memory_check=False to try anyway"
            )
        return fitting
