"""A fast equivalent of e3nn's ``nn.Gate`` for node features.

e3nn's gate cuts its input into scalars, gates and gated irreps with a generated ``Extract``
module (one copy per irrep), and multiplies gates into the gated irreps with an
``ElementwiseTensorProduct`` (a generated graph of per-irrep products). For a small system
those dozens of small operations cost more than the arithmetic. Here the cut is three index
reads (views where the pieces are contiguous) and the product is one gather of the gates to the
gated components and one multiplication; the activations are e3nn's own modules.

``FastGate(gate)(x)`` equals ``gate(x)``; the tests compare both on every potential.
"""

from __future__ import annotations

import torch
from e3nn import nn as e3nn_nn
from torch import nn


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

    def _piece(self, x: torch.Tensor, k: int) -> torch.Tensor:
        name, span = self.pieces[k]
        if span is not None:
            return x[:, span[0] : span[1]]
        return x.index_select(1, getattr(self, f"{name}_index"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self._gate[0]
        scalars = gate.act_scalars(self._piece(x, 0))
        if not self.has_gates:
            return scalars
        gates = gate.act_gates(self._piece(x, 1))
        gated = self._piece(x, 2) * gates.index_select(1, self.gate_of_component)
        return torch.cat([scalars, gated], dim=1)
