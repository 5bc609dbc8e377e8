"""Energy, forces and virial of one spatial domain, with ghost-feature exchanges between layers.

The scheme of SevenNet's parallel pair style (Park et al., J. Chem. Theory Comput. 20, 4857
(2024)). A domain holds ``n_local`` owned atoms (rows ``[0, n_local)``) and ghost atoms (the rest:
periodic images and atoms of neighbouring domains within one cutoff plus skin). Edges have owned
receivers only. Per message-passing layer ``t``:

* forward: ``x_t = layer_t(x_{t-1}, ...)`` is valid for owned atoms; the owners' values are then
  copied to the ghosts by ``exchange.forward`` (LAMMPS' forward communication), so layer ``t+1``
  sees correct sender features;
* backward, layer by layer from the last: the gradient of the domain's energy w.r.t. ``x_{t-1}``
  lands on owned and ghost rows; ``exchange.reverse`` adds each ghost row into its owner
  (LAMMPS' reverse communication), giving owners the full ``dE/dx_{t-1}`` summed over all
  domains.

Edge-vector gradients collected on the way give forces and virial exactly as
:func:`facet_calc.nn.forward.evaluate` does for the whole system; the ghost shell is one cutoff,
not layers x cutoff. Only the model's layer-wise contract is used (``embed``,
``spherical_harmonics``, ``layers[t](x, sh, r, senders, receivers, edges=, n_out=, species=)``,
``readout``): each layer computes the owned rows only (``n_out``), so ghosts cost the
convolution's messages they send and nothing node-wise.

Every domain calls ``exchange.forward`` and ``exchange.reverse`` the same number of times
(``len(layers) - 1`` each), also with no owned atoms: the exchanges are collective.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..graph import check_edge_distances
from ..nn.blocks.fast_convolution import EdgeContext
from ..nn.blocks.radial import spline_basis


class Exchange(Protocol):
    """Ghost communication of one domain (see the module docstring)."""

    def forward(self, owned: torch.Tensor) -> torch.Tensor:
        """``(n_local, d)`` owned rows -> ``(n_all, d)``: the same rows followed by the ghosts'
        values, copied from their owners (in ``owned``'s dtype or float64)."""

    def reverse(self, rows: torch.Tensor) -> torch.Tensor:
        """``(n_all, d)`` gradients -> ``(n_local, d)``: each owned row plus every ghost row that
        is a copy of it, in this or any other domain (``rows`` may serve as the buffer)."""


def evaluate_domain(
    model: nn.Module,
    species: torch.Tensor,
    edge_vec: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    n_local: int,
    exchange: Exchange,
) -> dict[str, torch.Tensor]:
    """Per-layer evaluation of one domain.

    Args:
        model: any model family with the layer-wise contract (``embed``, ``spherical_harmonics``,
            ``layers``, ``readout``; see :class:`facet_calc.nn.contract.EnergyModel`).
        species: ``(n_all,)`` int64 species indices of owned then ghost atoms.
        edge_vec: ``(n_edges, 3)`` Angstrom, ``pos[sender] - pos[receiver]`` (ghost positions
            are images, so no cell shift); cast to the model's dtype after differencing in float64.
        senders, receivers: ``(n_edges,)`` int64; ``receivers < n_local``.
        n_local: number of owned atoms.
        exchange: the domain's ghost communication.

    Returns a dict: ``energy ()`` eV (owned atoms only), ``energies (n_local,)`` eV,
    ``edge_grad (n_edges, 3)`` eV/A = dE_total/d(edge_vec) (E_total of all domains, since the
    feature gradients arriving by ``exchange.reverse`` carry the other domains' energies).
    """
    if n_local == 0:  # then there are no edges either: receivers are owned
        return _empty_domain(model, edge_vec, species.shape[0], exchange)
    # Only the ghosts that send to an owned atom enter the layers: LAMMPS' ghost shell is one
    # cutoff plus the skin, and the skin's ghosts would only add rows of node-wise work.
    n_all = species.shape[0]
    used = torch.unique(senders[senders >= n_local])
    nodes = torch.cat([torch.arange(n_local, device=species.device), used])
    compact = torch.full((n_all,), -1, dtype=torch.long, device=species.device)
    compact[nodes] = torch.arange(nodes.shape[0], device=species.device)
    senders = compact[senders]
    species = species[nodes]
    edge_vec = edge_vec.detach().requires_grad_(True)
    with torch.enable_grad():
        sh = model.spherical_harmonics(edge_vec)
        r = torch.linalg.norm(edge_vec, dim=-1)
    # leaves: each layer's backward adds into them, the edge-vector chain runs once at the end
    sh_leaf = sh.detach().requires_grad_(True)
    r_leaf = r.detach().requires_grad_(True)
    edges = _LayerwiseEdges(nodes.shape[0], senders, receivers, r)
    with torch.no_grad():
        x = model.embed(species)
    saved = []
    n_layers = len(model.layers)
    for t, layer in enumerate(model.layers):
        x_in = x.detach().requires_grad_(t > 0)  # the embedding has nothing to differentiate
        with torch.enable_grad():
            # n_out: the layer's node-wise work (linears, gate, mixer) for owned rows only
            y = layer(x_in, sh_leaf, r_leaf, senders, receivers, edges=edges, n_out=n_local, species=species)
        saved.append((x_in, y))
        if t < n_layers - 1:
            x = exchange.forward(y.detach())[nodes].to(y.dtype)
    x_last = saved[-1][1].detach().requires_grad_(True)
    owned_species = species[:n_local]
    with torch.enable_grad():
        energies = model.readout(x_last, owned_species)
        (grad_x,) = torch.autograd.grad(energies.sum(), [x_last], materialize_grads=True)
    grad_sh = torch.zeros_like(sh_leaf)
    grad_r = torch.zeros_like(r_leaf)
    basis_leaves = [leaf for _, leaf in edges.basis_leaves]
    grad_basis = [torch.zeros_like(leaf) for leaf in basis_leaves]
    for t in range(n_layers - 1, -1, -1):
        x_in, y = saved[t]
        inputs = [sh_leaf, r_leaf, *basis_leaves] + ([x_in] if t > 0 else [])
        grads = torch.autograd.grad(y, inputs, grad_outputs=grad_x, materialize_grads=True)
        grad_sh += grads[0]
        grad_r += grads[1]
        for total, grad in zip(grad_basis, grads[2 : 2 + len(basis_leaves)]):
            total += grad
        if t > 0:
            rows = grads[-1].new_zeros((n_all, grads[-1].shape[1]))
            rows[nodes] = grads[-1]
            grad_x = exchange.reverse(rows)
        saved[t] = None  # free the layer's graph as soon as it is spent
    (edge_grad,) = torch.autograd.grad(
        [sh, r, *(beta for beta, _ in edges.basis_leaves)],
        [edge_vec],
        grad_outputs=[grad_sh, grad_r, *grad_basis],
        materialize_grads=True,
    )
    return {"energy": energies.detach().sum(), "energies": energies.detach(), "edge_grad": edge_grad.detach()}


class _LayerwiseEdges(EdgeContext):
    """The per-edge work shared by the layers (sortedness, CSR offsets, spline basis), for a
    driver that differentiates one layer at a time: each spline basis is handed to the layers as
    a leaf, so a layer's backward stops there instead of running (and freeing) the basis' own
    graph; ``basis_leaves`` lists ``(basis in the graph of r, its leaf)`` for the final chain."""

    def __init__(self, n_nodes: int, senders: torch.Tensor, receivers: torch.Tensor, r: torch.Tensor) -> None:
        super().__init__(n_nodes, senders, receivers, r)
        self.basis_leaves: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _make_basis(self, n_intervals: int, r_max: float) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            rows, beta = spline_basis(self.r, n_intervals, r_max)
        leaf = beta.detach().requires_grad_(True)
        self.basis_leaves.append((beta, leaf))
        return rows, leaf


def _empty_domain(model: nn.Module, edge_vec: torch.Tensor, n_all: int, exchange: Exchange) -> dict[str, torch.Tensor]:
    """A domain that owns no atom still takes part in every exchange; the model's layers are not
    called on zero rows (its fast linears cannot reshape them)."""
    dtype, device = model.dtype, model.device
    widths = [layer.irreps_out.dim for layer in model.layers]
    for width in widths[:-1]:
        exchange.forward(torch.zeros((0, width), dtype=dtype, device=device))
    for width in reversed(widths[:-1]):
        # its ghosts (if any) contribute nothing, but their rows must be there to be sent
        exchange.reverse(torch.zeros((n_all, width), dtype=dtype, device=device))
    zero = torch.zeros((), dtype=dtype, device=device)
    return {"energy": zero, "energies": zero.new_zeros(0), "edge_grad": edge_vec.new_zeros((0, 3))}


class DistanceCheck:
    """The calculator's overlap check (:func:`facet_calc.graph.check_edge_distances`) on a domain's edges:
    coincident atoms raise ``GeometryError`` naming the two atoms (LAMMPS IDs where given) and
    their distance; close pairs warn once per model object (an MD run would repeat it every
    step), as ``FacetCalculator`` does."""

    def __init__(self, atomic_numbers: Sequence[int]) -> None:
        self.numbers = np.asarray(atomic_numbers, dtype=np.int64)  # species index -> Z
        self.warned = False

    def __call__(
        self, vectors: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor, species: torch.Tensor,
        ids: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        if len(vectors) == 0:
            return
        distances = torch.linalg.vector_norm(vectors, dim=1).cpu().numpy()
        message = check_edge_distances(
            distances, receivers.cpu().numpy(), senders.cpu().numpy(), self.numbers[species.cpu().numpy()], ids,
            noun="atoms with IDs" if ids is not None else "atoms",
        )  # fmt: skip
        if message is not None and not self.warned:
            self.warned = True
            warnings.warn(message, UserWarning, stacklevel=2)
