"""The residual update of a Facet layer: ``x' = adapter(x) + gamma * norm(block(x))``.

``norm`` is an equivariant layer norm over each node's features: scalars are centred and
divided by their RMS; every order ``l > 0`` is divided by the RMS of its channels' norms (no
centring, which would break equivariance). ``gamma`` is one learnable scale per channel,
initialised to zero, so that every block starts as the identity (ReZero / Facet) and a deep
stack trains stably from the first step. With ``norm="joint"`` every block is divided by one
RMS per node, over all orders (scalars centred): the scalars do not vanish at symmetric sites,
so unlike the per-order norm it has no cusp where the ``l > 0`` features vanish by symmetry
(a perfect crystal), and the energy stays smooth there. With ``norm="none"`` (config
``residual_norm: "none"``) the norm is skipped and the block's output is only scaled per channel, so its
magnitude (how many neighbours sent messages, how close they are) reaches the next layer;
distilling 7net-0 that fitted energies better (``models/facet-s-7net0/ablation``).
``adapter`` is the identity when the block keeps the irreps and an equivariant linear map when
it changes them.

Example::

    >>> import torch
    >>> from e3nn import o3
    >>> res = ScaledResidual(o3.Irreps("4x0e+2x1o"), o3.Irreps("4x0e+2x1o"))
    >>> x, y = torch.randn(5, 10), torch.randn(5, 10)
    >>> bool(torch.equal(res(x, y), x))   # gamma = 0 at initialisation
    True
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from ..backend import KERNEL, Backend
from .e3nn_modules import linear
from .fast_linear import FastLinear


class EquivariantLayerNorm(nn.Module):
    """Per-node layer norm of features with irreps ``irreps`` and a per-channel scale.

    ``forward(x (N, irreps.dim)) -> (N, irreps.dim)``. The scale ``weight (irreps.num_irreps,)``
    starts at ``init`` (zero for a residual branch). No bias: a bias on ``l > 0`` would break
    equivariance, and on the scalars the next linear map has one's worth of freedom anyway.
    """

    #: "layer": per order (a cusp where an order vanishes by symmetry); "joint": one RMS per
    #: node over all orders (smooth); "none": the per-channel scale alone
    MODES = ("layer", "joint", "none")

    def __init__(self, irreps: o3.Irreps, eps: float = 1e-6, init: float = 0.0, norm: str = "layer") -> None:
        super().__init__()
        if norm not in self.MODES:
            raise ValueError(f"norm must be one of {self.MODES}, got {norm!r}")
        self.irreps = o3.Irreps(irreps)
        self.eps = eps
        self.mode = norm
        self.weight = nn.Parameter(torch.full((self.irreps.num_irreps,), float(init)))
        self.init = float(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_norm(x, self.weight)

    def apply_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The norm of ``x (..., N, irreps.dim)`` with per-channel scales ``weight (...,
        num_irreps)`` (a stack of committee members' as ``(K, 1, num_irreps)``)."""
        lead = x.shape[:-1]
        blocks, scales, channel = [], [], 0
        for (mul, ir), sl in zip(self.irreps, self.irreps.slices()):
            block = x[..., sl].unflatten(-1, (mul, ir.dim))
            if self.mode != "none" and ir.l == 0 and ir.p == 1:
                block = block - block.mean(dim=-2, keepdim=True)
            blocks.append(block)
            scales.append(weight[..., channel : channel + mul].unsqueeze(-1))
            channel += mul
        if self.mode == "none":  # the scale alone: the block's magnitude passes through
            rms = [None] * len(blocks)
        elif self.mode == "layer":  # mean over channels of the squared norm per channel, per block
            rms = [b.square().sum(dim=-1).mean(dim=-1, keepdim=True).add(self.eps).sqrt() for b in blocks]
        else:  # joint: one mean over every channel of every order, per node
            total = sum(b.square().sum(dim=(-2, -1)) for b in blocks) / self.irreps.num_irreps
            rms = [total.add(self.eps).sqrt().unsqueeze(-1)] * len(blocks)
        out = []
        for block, scale, r in zip(blocks, scales, rms):
            if r is not None:
                block = block / r.unsqueeze(-1)
            out.append((block * scale).reshape(*lead, -1))
        return torch.cat(out, dim=-1)


class ScaledResidual(nn.Module):
    """``forward(x, y) = adapter(x) + norm(y)``: ``x (N, irreps_in.dim)`` the layer input,
    ``y (N, irreps_out.dim)`` the block's output; returns ``(N, irreps_out.dim)``."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, norm: str = "layer") -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.norm = EquivariantLayerNorm(self.irreps_out, norm=norm)
        if self.irreps_in == self.irreps_out:
            self.adapter = None
        else:
            self.adapter = linear(self.irreps_in, self.irreps_out)
            self.fast_adapter = FastLinear(self.adapter)
        #: the reference (e3nn) or fast path; set by the layer's ``set_backend`` (``nn.backend``)
        self.backend: Backend = KERNEL

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.adapter is None:
            skip = x
        else:
            skip = self.backend.linear(self.adapter, self.fast_adapter, x)
        return skip + self.norm(y)
