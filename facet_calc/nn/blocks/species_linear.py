"""An equivariant linear map with one weight per species of the atom it acts on.

SevenNet's ``nequip`` self-connection (SevenNet-MF-ompa, -omat, -omni) is
``FullyConnectedTensorProduct(x, onehot(species))``: with a one-hot second input, each output
channel is ``sum_u W[u, species, w] x_u``, an ``o3.Linear`` whose weight depends on the species.
:class:`SpeciesLinear` computes it that way (the reference, one weight row per atom);
:class:`FastSpeciesLinear` groups the atoms by species and applies :class:`FastLinear` once
per species present.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from .e3nn_modules import linear
from .fast_linear import FastLinear


class SpeciesLinear(nn.Module):
    """``x -> Linear_{W[species]}(x)``, no biases.

    ``weight (n_species, numel)``: row ``s`` is the flat weight of an ``o3.Linear(irreps_in,
    irreps_out)`` (e3nn's layout and path normalisation) used for atoms of species ``s``.
    ``forward(x (n, irreps_in.dim), species (n,) int64) -> (n, irreps_out.dim)``.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, n_species: int) -> None:
        super().__init__()
        # the map's layout and normalisation; its weights come per atom
        self.linear = linear(irreps_in, irreps_out, internal_weights=False, shared_weights=False)
        self.irreps_in, self.irreps_out = self.linear.irreps_in, self.linear.irreps_out
        self.weight = nn.Parameter(torch.zeros(n_species, self.linear.weight_numel))

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return self.linear(x, self.weight[species])


class FastSpeciesLinear(nn.Module):
    """The same map as ``reference`` (a :class:`SpeciesLinear`): atoms sorted by species, one
    :class:`FastLinear` product per species present. Holds index tables only (not saved).

    ``forward(x (n, dim_in), species (n,), weight (n_species, numel)) -> (n, dim_out)``.
    """

    def __init__(self, reference: SpeciesLinear) -> None:
        super().__init__()
        # FastLinear reads the instructions and path normalisation of a shared-weight linear
        # of the same irreps (same instruction order and flat layout as the reference's)
        self.fast = FastLinear(linear(reference.irreps_in, reference.irreps_out))
        self.dim_out = reference.irreps_out.dim

    def forward(self, x: torch.Tensor, species: torch.Tensor, weight: torch.Tensor,
                groups: tuple | None = None, use_kernel: bool = False) -> torch.Tensor:  # fmt: skip
        """``groups``: :func:`species_groups` of ``species``, when the caller shares it among
        layers (computed here otherwise). ``use_kernel``: as :meth:`FastLinear.forward`."""
        if x.shape[0] == 0:
            return x.new_zeros((0, self.dim_out))
        present, counts, order, inverse = species_groups(species) if groups is None else groups
        if len(present) == 1:
            return self.fast(x, weight[present[0]], use_kernel=use_kernel)
        pieces = torch.split(x.index_select(0, order), counts)
        out = torch.cat([self.fast(piece, weight[s], use_kernel=use_kernel) for s, piece in zip(present, pieces)])
        return out.index_select(0, inverse)


def species_groups(species: torch.Tensor) -> tuple[list[int], list[int], torch.Tensor | None, torch.Tensor | None]:
    """The atoms grouped by species: ``(present, counts, order, inverse)``, the species present
    and their atom counts (Python ints), the stable sort of ``species`` and its inverse
    (``None`` when one species is present). The same for every layer of one evaluation."""
    present, counts = torch.unique(species, return_counts=True)
    if present.numel() == 1:
        return present.tolist(), counts.tolist(), None, None
    order = torch.argsort(species, stable=True)
    inverse = torch.empty_like(order).index_copy_(0, order, torch.arange(order.numel(), device=order.device))
    return present.tolist(), counts.tolist(), order, inverse
