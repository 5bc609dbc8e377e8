"""One model call for many structures: a :class:`~facet_calc.graph.GraphBatch` in, per-structure
energies, forces and virials out (torch tensors, in the potential's dtype and on its device).

The engine adapters (the ASE calculator, torch-sim) share it, so a structure gets the same
numbers whichever engine asks and however many structures share its batch.
"""

from __future__ import annotations

import numpy as np
import torch

from .graph import GraphBatch
from .nn.model import evaluate
from .potential import Potential

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
