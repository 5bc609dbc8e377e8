"""The energy model and its derivatives (forces, virial) by autograd.

``FacetModel`` maps a graph to per-atom energies::

    x0  = Linear(onehot(species))                      # species embedding
    x   = InteractionBlock_t(x, Y(r_ij), |r_ij|)       # t = 1..T, spline-weighted convolutions
    e_i = scale[s_i] * Linear(Linear(x_i)) + shift[s_i]

Edges are directed, ``r_ij = pos[sender] - pos[receiver] + shift . cell``: the message of edge
``(receiver i, sender j)`` flows from ``j`` to ``i``.

Two evaluators give energy, forces and virial:

* :func:`evaluate` differentiates with respect to the edge vectors and scatters (fast path).
* :func:`evaluate_by_strain` differentiates with respect to positions and a symmetric strain of
  the whole graph (plain reference path). Tests check that both agree.
"""

from __future__ import annotations

from typing import Any

import torch
from e3nn import o3
from torch import nn

from .interaction import InteractionBlock
from .radial import SplineRadial


class FacetModel(nn.Module):
    """E(3)-equivariant message-passing energy model with spline radial weights.

    Args:
        config: the potential's model config (a plain dict, see ``facet_calc.potential``).

    ``forward(species, edge_vec, senders, receivers)``: ``species (n_atoms,)`` int64 indices
    into ``config["atomic_numbers"]``; ``edge_vec (n_edges, 3)`` in Angstrom; ``senders`` and
    ``receivers (n_edges,)`` int64. Returns per-atom energies ``(n_atoms,)`` in eV.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.cutoff = float(config["cutoff"])
        n_species = len(config["atomic_numbers"])
        self.n_species = n_species
        self.irreps_sh = o3.Irreps(config["irreps_sh"])
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh,
            normalize=True,
            normalization=config.get("sh_normalization", "component"),
        )
        self.embedding = o3.Linear(o3.Irreps(f"{n_species}x0e"), o3.Irreps(config["irreps_embedding"]), biases=False)
        n_knots = int(config["radial"]["n_intervals"]) + 1
        layers = []
        for spec in config["layers"]:
            n_out = int(spec["weight_numel"])
            radial = SplineRadial(torch.zeros(n_knots, n_out), torch.zeros(n_knots, n_out), self.cutoff)
            layers.append(InteractionBlock(spec, self.irreps_sh, radial))
        self.layers = nn.ModuleList(layers)
        irreps_last = layers[-1].irreps_out
        self.readout_hidden = o3.Linear(irreps_last, o3.Irreps(config["readout_hidden"]), biases=False)
        self.readout_out = o3.Linear(o3.Irreps(config["readout_hidden"]), o3.Irreps("1x0e"), biases=False)
        self.scale = nn.Parameter(torch.ones(n_species), requires_grad=False)
        self.shift = nn.Parameter(torch.zeros(n_species), requires_grad=False)

    def use_fast_path(self, enabled: bool = True) -> FacetModel:
        """Switch every layer to the specialised convolution and linears (``enabled=True``) or
        back to e3nn's generic modules, the reference. Call after the parameters are loaded:
        the fast modules derive their tables from them."""
        for layer in self.layers:
            layer.use_fast_path(enabled)
        return self

    @property
    def uses_fast_path(self) -> bool:
        return all(layer.fast is not None for layer in self.layers)

    def forward(
        self,
        species: torch.Tensor,
        edge_vec: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
    ) -> torch.Tensor:
        dtype = self.scale.dtype
        onehot = nn.functional.one_hot(species, self.n_species).to(dtype)
        x = self.embedding(onehot)
        sh = self.spherical_harmonics(edge_vec)
        r = torch.linalg.norm(edge_vec, dim=-1)
        for layer in self.layers:
            x = layer(x, sh, r, senders, receivers)
        out = self.readout_out(self.readout_hidden(x)).squeeze(-1)
        return out * self.scale[species] + self.shift[species]


def evaluate(
    model: FacetModel,
    species: torch.Tensor,
    edge_vec: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    compute_virial: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Energy, per-atom energies, forces and virial from the gradient w.r.t. edge vectors.

    Args:
        edge_vec: ``(n_edges, 3)`` Angstrom, ``pos[sender] - pos[receiver] + shift @ cell``.
            Compute it in float64 and cast afterwards: in float32, differences of positions far
            from the origin lose most of their digits.

    Returns a dict: ``energy ()`` eV, ``energies (n_atoms,)`` eV, ``forces (n_atoms, 3)`` eV/A,
    ``virial (3, 3)`` eV = dE/d(strain) (``None`` unless ``compute_virial``).
    """
    edge_vec = edge_vec.detach().requires_grad_(True)
    energies = model(species, edge_vec, senders, receivers)
    energy = energies.sum()
    (grad,) = torch.autograd.grad(energy, [edge_vec], materialize_grads=True)
    # E depends on positions through r_ij = pos[j] - pos[i] + ...: dE/dpos_j += g, dE/dpos_i -= g
    forces = torch.zeros((species.shape[0], 3), dtype=grad.dtype, device=grad.device)
    forces.index_add_(0, receivers, grad)
    forces.index_add_(0, senders, -grad)
    virial = None
    if compute_virial:
        w = grad.transpose(0, 1) @ edge_vec.detach()
        virial = 0.5 * (w + w.transpose(0, 1))
    return {
        "energy": energy.detach(),
        "energies": energies.detach(),
        "forces": forces.detach(),
        "virial": virial,
    }


def evaluate_by_strain(
    model: FacetModel,
    species: torch.Tensor,
    positions: torch.Tensor,
    cell: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    shifts: torch.Tensor,
    compute_virial: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Reference path: forces = -dE/dpos, virial = dE/d(symmetric strain). Same outputs as
    :func:`evaluate`."""
    pos = positions.detach().clone().requires_grad_(True)
    strain = torch.zeros(3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(0, 1))
    pos_strained = pos + pos @ sym
    cell_strained = cell + cell @ sym
    edge_vec = pos_strained[senders] - pos_strained[receivers] + shifts @ cell_strained
    energies = model(species, edge_vec, senders, receivers)
    energy = energies.sum()
    grad_pos, grad_strain = torch.autograd.grad(energy, [pos, strain], materialize_grads=True)
    return {
        "energy": energy.detach(),
        "energies": energies.detach(),
        "forces": -grad_pos.detach(),
        "virial": grad_strain.detach() if compute_virial else None,
    }
