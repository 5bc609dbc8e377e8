"""A convolution specialised to 'uvu' tensor products with one set of spherical harmonics.

Same inputs, parameters and outputs as :class:`~facet_calc.nn.interaction.SplineConvolution`
(e3nn's generic ``TensorProduct``), computed with a few large operations instead of many small
ones. For each input block ``b`` (multiplicity ``u``, order ``l1``) with its paths
``p = (l2 -> l3)``, and ``cols`` running over (path, m3)::

    A_e (cols, m1)  = Y_e @ coupling_b         coupling = alpha_p * wigner_3j(l1, l2, l3)  (matmul)
    t_e (cols, u)   = A_e @ x_j[b]^T                                                        (bmm)
    msg_e           = t_e * w_e                w_e from the spline, one column per entry     (mul)
    h_i             = sum_{e -> i} msg_e / denominator                                      (index_add)

and the node-level result is permuted into e3nn's output layout. Each block's spline table is
the source table with its columns reordered (and repeated over m3) once at construction, so no
per-edge gather, broadcast or zero-filled gradient remains.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from e3nn import o3
from torch import nn

from .radial import SplineRadial, hermite_spline


class FastSplineConvolution(nn.Module):
    """Drop-in fast replacement of ``SplineConvolution`` (same parameters, same outputs).

    Args:
        reference: the ``SplineConvolution`` whose tensor product and spline table to use.

    Shapes as in ``SplineConvolution.forward``.
    """

    def __init__(self, reference: nn.Module) -> None:
        super().__init__()
        tp: o3.TensorProduct = reference.tp
        self.denominator = reference.denominator
        self.irreps_out = tp.irreps_out
        irreps_in, irreps_sh = tp.irreps_in1, tp.irreps_in2
        if any(ins.connection_mode != "uvu" or not ins.has_weight for ins in tp.instructions):
            raise ValueError("the fast convolution handles weighted 'uvu' instructions only")
        if any(mul != 1 for mul, _ in irreps_sh):
            raise ValueError("the fast convolution needs one copy of each spherical harmonic")

        # flat weight offset of each instruction in e3nn's order
        offsets, start = [], 0
        for ins in tp.instructions:
            offsets.append(start)
            start += ins.path_shape[0] * ins.path_shape[1]
        sh_slices = irreps_sh.slices()
        in_slices = irreps_in.slices()
        out_slices = self.irreps_out.slices()

        dtype = torch.get_default_dtype()
        radial: SplineRadial = reference.radial
        self.blocks: List[Dict] = []
        weight_columns: List[torch.Tensor] = []  # per block: (cols, mul) e3nn flat weight index
        out_index: List[torch.Tensor] = []  # per block: (cols, mul) e3nn output index
        for b, (mul, ir_in) in enumerate(irreps_in):
            paths = [(k, ins) for k, ins in enumerate(tp.instructions) if ins.i_in1 == b]
            if not paths:
                continue
            l1, m1 = ir_in.l, ir_in.dim
            cols = sum(self.irreps_out[ins.i_out].ir.dim for _, ins in paths)
            # coupling (dim_sh, cols, m1): A_e = Y_e @ coupling, column = (path, m3)
            coupling = torch.zeros(irreps_sh.dim, cols, m1, dtype=torch.float64)
            w_index = torch.empty(cols, mul, dtype=torch.long)
            o_index = torch.empty(cols, mul, dtype=torch.long)
            col = 0
            for k, ins in paths:
                l2 = irreps_sh[ins.i_in2].ir.l
                l3 = self.irreps_out[ins.i_out].ir.l
                d3 = 2 * l3 + 1
                w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * ins.path_weight  # (m1, m2, m3)
                coupling[sh_slices[ins.i_in2], col : col + d3, :] = w3j.permute(1, 2, 0)
                w_index[col : col + d3] = offsets[k] + torch.arange(mul)  # same weight for each m3
                start_out = out_slices[ins.i_out].start
                o_index[col : col + d3] = start_out + torch.arange(mul)[None, :] * d3 + torch.arange(d3)[:, None]
                col += d3
            self.register_buffer(f"coupling_{b}", coupling.reshape(irreps_sh.dim, cols * m1).to(dtype))
            self.blocks.append({"name": f"coupling_{b}", "in_slice": in_slices[b], "mul": mul, "m1": m1, "cols": cols})
            weight_columns.append(w_index.reshape(-1))
            out_index.append(o_index.reshape(-1))

        # per block, the spline table with one column per message entry, so that msg = t * w
        # needs no broadcasting; derived data (buffers), not parameters
        table = torch.cat((radial.values.data, radial.slopes.data), dim=0)
        for blk, order in zip(self.blocks, weight_columns):
            self.register_buffer(f"table_{blk['name']}", table[:, order].to(dtype).contiguous())
        self.r_max = radial.r_max
        fast_index = torch.cat(out_index)
        if sorted(fast_index.tolist()) != list(range(self.irreps_out.dim)):
            raise ValueError("fast convolution layout does not cover the tensor-product output")
        to_e3nn = torch.empty_like(fast_index)
        to_e3nn[fast_index] = torch.arange(fast_index.numel())
        self.register_buffer("to_e3nn", to_e3nn)

    def forward(
        self,
        x: torch.Tensor,
        sh: torch.Tensor,
        r: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
    ) -> torch.Tensor:
        n_edges, n_nodes = r.shape[0], x.shape[0]
        x_senders = x[senders]
        outputs = []
        for block in self.blocks:
            mul, m1, cols = block["mul"], block["m1"], block["cols"]
            w = hermite_spline(r, getattr(self, f"table_{block['name']}"), self.r_max)  # (E, cols * mul)
            a = (sh @ getattr(self, block["name"])).view(n_edges, cols, m1)
            xj = x_senders[:, block["in_slice"]].view(n_edges, mul, m1)
            if m1 == 1:
                t = a * xj.transpose(1, 2)  # (E, cols, 1) * (E, 1, mul): outer product
            else:
                t = torch.bmm(a, xj.transpose(1, 2))  # (E, cols, mul)
            msg = t.reshape(n_edges, cols * mul) * w
            outputs.append(x.new_zeros((n_nodes, cols * mul)).index_add_(0, receivers, msg))
        return torch.cat(outputs, dim=1)[:, self.to_e3nn] / self.denominator
