"""A fast equivalent of e3nn's ``nn.Gate`` for node features.

e3nn's gate cuts its input into scalars, gates and gated irreps with a generated ``Extract``
module (one copy per irrep), and multiplies gates into the gated irreps with an
``ElementwiseTensorProduct`` (a generated graph of per-irrep products). For a small system
those dozens of small operations cost more than the arithmetic. Here the cut is three index
reads (views where the pieces are contiguous) and the product is one gather of the gates to the
gated components and one multiplication; the activations are e3nn's own modules.

``FastGate(gate)(x)`` equals ``gate(x)``; the tests compare both on every potential.

``FastGate(gate)(x, once=True)`` (the fused-kernel backend, itself differentiable once) runs the
gate as one autograd node with the activations' derivatives written out (silu, tanh, sigmoid),
when the gate's activations are among those: the ~15 nodes of the autograd path, each with its
zero-filled slice gradient, are most of a small system's gate cost.
"""

from __future__ import annotations

import torch
from e3nn import nn as e3nn_nn
from e3nn.math import normalize2mom
from torch import nn

#: derivatives of the activations the one-node gate handles, from the input x and output y = f(x)
_DERIVATIVES = {
    nn.functional.silu: lambda x, y: (s := torch.sigmoid(x)) * (1 + x * (1 - s)),
    torch.tanh: lambda x, y: 1 - y * y,
    torch.sigmoid: lambda x, y: y * (1 - y),
}


class FastGate(nn.Module):
    """The map of ``gate`` (an ``e3nn.nn.Gate``): ``x (n_nodes, irreps_in.dim) -> (n_nodes,
    irreps_out.dim)``. Holds index tables only; the activations are read from ``gate``."""

    def __init__(self, gate: e3nn_nn.Gate) -> None:
        super().__init__()
        self._gate = [gate]  # a reference, not a child: its modules stay where they are saved
        # where each output of the cut comes from: run the cut on the column numbers
        columns = torch.arange(gate.irreps_in.dim, dtype=torch.float64)[None]
        scalars, gates, gated = (piece[0].round().long() for piece in gate.sc(columns))
        self.pieces = []
        for name, index in (("scalars", scalars), ("gates", gates), ("gated", gated)):
            first = int(index[0]) if index.numel() else 0
            contiguous = index.numel() > 0 and torch.equal(index, torch.arange(first, first + index.numel()))
            span = (first, first + index.numel()) if contiguous else None
            self.register_buffer(f"{name}_index", index, persistent=False)
            self.pieces.append((name, span))
        # gate number of every gated component (gate k multiplies the k-th gated irrep)
        expand, k = [], 0
        for mul, ir in gate.irreps_gated:
            for _ in range(mul):
                expand += [k] * ir.dim
                k += 1
        self.register_buffer("gate_of_component", torch.tensor(expand, dtype=torch.long), persistent=False)
        self.has_gates = gates.numel() > 0
        # the one-node form: each activation one known function times its normalisation constant
        self.known_acts = [_known_activation(gate.act_scalars), _known_activation(gate.act_gates)]
        self.n_gates = k
        spans = [span for _, span in self.pieces]
        #: the three pieces lie in x as [scalars | gates | gated], in this order, contiguous
        self.pieces_in_order = all(spans) and spans[0][1] == spans[1][0] and spans[1][1] == spans[2][0]
        self.one_node = self.has_gates and all(a is not None for a in self.known_acts) and self.pieces_in_order

    def _piece(self, x: torch.Tensor, k: int) -> torch.Tensor:
        name, span = self.pieces[k]
        if span is not None:
            return x[:, span[0] : span[1]]
        return x.index_select(1, getattr(self, f"{name}_index"))

    def forward(self, x: torch.Tensor, once: bool = False) -> torch.Tensor:
        """``once``: the caller needs first derivatives only (then the one-node form runs
        where it can)."""
        if once and self.one_node:
            return _OneNodeGate.apply(x, self)
        gate = self._gate[0]
        scalars = gate.act_scalars(self._piece(x, 0))
        if not self.has_gates:
            return scalars
        gates = gate.act_gates(self._piece(x, 1))
        gated = self._piece(x, 2) * gates.index_select(1, self.gate_of_component)
        return torch.cat([scalars, gated], dim=1)


def _known_activation(act: nn.Module) -> tuple | None:
    """``(f, cst)`` when the e3nn ``Activation`` ``act`` applies one function of
    :data:`_DERIVATIVES` times ``cst`` to every (scalar) input column, else ``None``."""
    fns = {(type(a), getattr(a, "f", None), getattr(a, "cst", None), getattr(a, "_is_id", None)) for a in act.acts}
    if len(fns) != 1 or any(ir.l != 0 for _, ir in act.irreps_in):
        return None
    kind, f, cst, is_id = fns.pop()
    if kind is not normalize2mom or f not in _DERIVATIVES:
        return None
    return f, 1.0 if is_id else float(cst)


class _OneNodeGate(torch.autograd.Function):
    """The gate of x = [scalars | gates | gated] (contiguous, in this order) as one node:
    ``[c_s f_s(scalars), gated * c_g f_g(gates)[gate_of_component]]``. Its backward is written
    with plain differentiable operations."""

    @staticmethod
    def forward(ctx, x, fast):
        (f_s, c_s), (f_g, c_g) = fast.known_acts
        (s0, s1), (_, g1), _ = (span for _, span in fast.pieces)
        xs, xg, xv = x[:, s0:s1], x[:, s1:g1], x[:, g1 : fast.pieces[2][1][1]]
        ys, yg = f_s(xs), f_g(xg)
        gate_c = yg.mul(c_g).index_select(1, fast.gate_of_component)  # (n, gated components)
        ctx.fast = fast
        ctx.save_for_backward(xs, xg, xv, ys, yg, gate_c)
        return torch.cat([ys.mul(c_s), xv * gate_c], dim=1)

    @staticmethod
    def backward(ctx, grad):
        fast = ctx.fast
        (f_s, c_s), (f_g, c_g) = fast.known_acts
        xs, xg, xv, ys, yg, gate_c = ctx.saved_tensors
        n_s = xs.shape[1]
        grad_s, grad_v = grad[:, :n_s], grad[:, n_s:]
        dxs = grad_s * _DERIVATIVES[f_s](xs, ys).mul(c_s)
        dgate = grad.new_zeros((grad.shape[0], fast.n_gates)).index_add(1, fast.gate_of_component, grad_v * xv)
        dxg = dgate * _DERIVATIVES[f_g](xg, yg).mul(c_g)
        return torch.cat([dxs, dxg, grad_v * gate_c], dim=1), None
