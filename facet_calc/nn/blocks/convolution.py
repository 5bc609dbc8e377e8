"""The equivariant spline convolution (e3nn reference path) and its 'uvu' path rule.

``h_i = sum_j TP(x_j, Y(r_ij); w(|r_ij|)) / denominator``: e3nn's generic ``TensorProduct``
with per-edge weights from a spline table. :class:`~facet_calc.nn.blocks.fast_convolution.
FastSplineConvolution` computes the same map faster; this one is the reference.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from .e3nn_modules import tensor_product
from .radial import SplineRadial


def convolution_paths(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, target: o3.Irreps) -> tuple[o3.Irreps, list]:
    """The 'uvu' paths (input irrep x harmonic -> an irrep in ``target``) and the irreps of
    their outputs, one block of ``mul_in`` per path, in NequIP/SevenNet order (SevenNet's
    ``IrrepsConvolution``: paths' outputs sorted by irrep, instructions by output block)."""
    wanted = {ir for _, ir in target}
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    irreps_mid, permutation, _ = o3.Irreps(mid).sort()
    instructions = sorted(((i, j, permutation[k], mode, w) for i, j, k, mode, w in instructions), key=lambda x: x[2])
    return irreps_mid, instructions


class SplineConvolution(nn.Module):
    """Equivariant convolution ``h_i = sum_j TP(x_j, Y_ij; w(r_ij)) / denominator``.

    Args:
        irreps_in: irreps of node features ``x``.
        irreps_sh: irreps of the edge spherical harmonics ``Y``.
        irreps_out: irreps of the tensor-product output.
        instructions: e3nn instructions ``(i_in, i_sh, i_out, "uvu", True)``.
        radial: spline table with ``n_out == weight_numel`` of the tensor product.
        denominator: the message sum is divided by it (average neighbour count).

    Shapes: ``x (n_nodes, irreps_in.dim)``, ``sh (n_edges, irreps_sh.dim)``,
    ``r (n_edges,)``, ``senders``/``receivers`` ``(n_edges,)`` -> ``(n_nodes, irreps_out.dim)``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        instructions: list[tuple],
        radial: SplineRadial,
        denominator: float,
    ) -> None:
        super().__init__()
        self.tp = tensor_product(
            irreps_in,
            irreps_sh,
            irreps_out,
            [tuple(ins) for ins in instructions],
            shared_weights=False,
            internal_weights=False,
        )
        if radial.n_out != self.tp.weight_numel:
            raise ValueError(
                f"spline table gives {radial.n_out} weights per edge, the tensor product needs {self.tp.weight_numel}"
            )
        self.radial = radial
        self.denominator = float(denominator)
        self.irreps_out = self.tp.irreps_out

    def forward(self, x: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, senders: torch.Tensor,
                receivers: torch.Tensor, n_rows: int | None = None) -> torch.Tensor:  # fmt: skip
        """``n_rows``: rows of the output (default: all of ``x``'s; receivers must be below)."""
        weights = self.radial(r)
        messages = self.tp(x[senders], sh, weights)
        out = x.new_zeros((x.shape[0] if n_rows is None else n_rows, messages.shape[1]))
        out.index_add_(0, receivers, messages)
        return out / self.denominator
