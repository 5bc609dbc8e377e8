"""A drop-in fast equivalent of an e3nn ``o3.Linear`` (without biases) for node features.

e3nn applies one small matmul per (input block, output block) pair and, in the backward pass,
zero-fills a full-size gradient for every input slice. An equivariant linear map is the same
matrix for every component m of an order l, so here each order l is one gather and one matmul:
``out_l (N, mul_out, 2l+1) = W_l^T @ x_l (N, mul_in, 2l+1)``. The per-l matrices are read off
the e3nn module itself (its normalisation included) by applying it to unit vectors.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


class FastLinear(nn.Module):
    """Same map as ``linear`` (an ``o3.Linear`` without biases), derived from its current weights.

    Shapes: ``(n_nodes, irreps_in.dim) -> (n_nodes, irreps_out.dim)``.
    """

    def __init__(self, linear: o3.Linear) -> None:
        super().__init__()
        irreps_in, irreps_out = linear.irreps_in, linear.irreps_out
        if any(p.numel() for name, p in linear.named_parameters() if "bias" in name):
            raise ValueError("FastLinear handles linears without biases only")
        weight = linear.weight
        with torch.no_grad():
            probe = torch.eye(irreps_in.dim, dtype=weight.dtype, device=weight.device)
            dense = linear(probe)  # (dim_in, dim_out): row k is the image of unit vector k
        in_slices, out_slices = irreps_in.slices(), irreps_out.slices()
        self.orders: list[int] = []
        self.out_muls: list[int] = []
        out_order: list[torch.Tensor] = []
        for l in sorted({ir.l for _, ir in irreps_out}):
            ins = [(i, mul) for i, (mul, ir) in enumerate(irreps_in) if ir.l == l]
            outs = [(i, mul) for i, (mul, ir) in enumerate(irreps_out) if ir.l == l]
            d = 2 * l + 1
            out_idx = torch.cat([out_slices[i].start + torch.arange(mul) * d for i, mul in outs])
            out_order.append((out_idx[:, None] + torch.arange(d)[None, :]).reshape(-1))
            self.orders.append(l)
            self.out_muls.append(len(out_idx))
            if not ins:  # no input of this order: e3nn gives zeros there
                self.register_buffer(f"weight_{l}", None)
                continue
            # rows of x for component m = 0 of every input channel of order l; the rest follow
            in_idx = torch.cat([in_slices[i].start + torch.arange(mul) * d for i, mul in ins])
            gather = (in_idx[:, None] + torch.arange(d)[None, :]).reshape(-1)  # (mul_in * d)
            self.register_buffer(f"gather_{l}", gather)
            self.register_buffer(f"weight_{l}", dense[in_idx][:, out_idx].detach().clone())
        placed = torch.cat(out_order)
        if sorted(placed.tolist()) != list(range(irreps_out.dim)):
            raise ValueError(f"output irreps {irreps_out} have orders no input reaches")
        inverse = torch.empty_like(placed)
        inverse[placed] = torch.arange(placed.numel())
        self.register_buffer("to_output", inverse)
        self.identity_order = bool(torch.equal(inverse, torch.arange(placed.numel())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        parts = []
        for l, mul_out in zip(self.orders, self.out_muls):
            d = 2 * l + 1
            weight = getattr(self, f"weight_{l}")
            if weight is None:
                parts.append(x.new_zeros((n, mul_out * d)))
                continue
            xl = x.index_select(1, getattr(self, f"gather_{l}")).view(n, -1, d)  # (N, mul_in, d)
            out = torch.einsum("nid,io->nod", xl, weight)
            parts.append(out.reshape(n, -1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        # (outputs are assembled grouped by order; put them back in irreps_out's layout)
        return out if self.identity_order else out.index_select(1, self.to_output)
