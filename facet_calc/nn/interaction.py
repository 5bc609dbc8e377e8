"""One NequIP-style interaction layer whose convolution weights come from a spline table.

Per layer (the SevenNet "linear self-connection" variant)::

    sc   = Linear(x)                                   # self-connection, to the gate's input irreps
    h    = Linear(x)
    m_ij = TP(h_j, Y(r_ij); w(|r_ij|))                 # 'uvu' tensor product, weights per edge
    h_i  = sum_j m_ij / denominator
    x'   = Gate(Linear(h_i) + sc)

The plain path below uses e3nn's generic ``TensorProduct``; it is the reference that any faster
implementation is compared with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from .fast_convolution import EdgeContext, FastSplineConvolution
from .fast_gate import FastGate
from .fast_linear import FastLinear
from .radial import SplineRadial


def _shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.softplus(x) - math.log(2.0)


#: Activation functions by the names used in potential configs.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": nn.functional.silu,
    "tanh": torch.tanh,
    "ssp": _shifted_softplus,
    "relu": nn.functional.relu,
    "abs": torch.abs,
    "sigmoid": torch.sigmoid,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


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
        self.tp = o3.TensorProduct(
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

    def forward(
        self,
        x: torch.Tensor,
        sh: torch.Tensor,
        r: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
        n_rows: int | None = None,
    ) -> torch.Tensor:
        """``n_rows``: rows of the output (default: all of ``x``'s; receivers must be below)."""
        weights = self.radial(r)
        messages = self.tp(x[senders], sh, weights)
        out = x.new_zeros((x.shape[0] if n_rows is None else n_rows, messages.shape[1]))
        out.index_add_(0, receivers, messages)
        return out / self.denominator


class InteractionBlock(nn.Module):
    """Self-connection, linear, spline convolution, linear, gate (see module docstring).

    ``spec`` is the layer's entry of the potential config (see ``facet_calc.potential``).
    """

    def __init__(self, spec: dict[str, Any], irreps_sh: o3.Irreps, radial: SplineRadial) -> None:
        super().__init__()
        irreps_in = o3.Irreps(spec["irreps_in"])
        irreps_tp_out = o3.Irreps(spec["irreps_tp_out"])
        gate = spec["gate"]
        self.gate = Gate(
            o3.Irreps(gate["scalars"]),
            [activation(a) for a in gate["act_scalars"]],
            o3.Irreps(gate["gates"]),
            [activation(a) for a in gate["act_gates"]],
            o3.Irreps(gate["gated"]),
        )
        irreps_gate_in = self.gate.irreps_in
        self.self_connection = o3.Linear(irreps_in, irreps_gate_in, biases=False)
        self.linear_in = o3.Linear(irreps_in, irreps_in, biases=False)
        self.convolution = SplineConvolution(
            irreps_in,
            irreps_sh,
            irreps_tp_out,
            spec["instructions"],
            radial,
            spec["denominator"],
        )
        self.linear_out = o3.Linear(irreps_tp_out, irreps_gate_in, biases=False)
        self.irreps_out = self.gate.irreps_out
        # Multi-fidelity potentials (SevenNet-MF): the source feeds a one-hot of the fidelity
        # to linear_in and linear_out as extra scalar inputs, which is a per-head bias on their
        # scalar outputs; one row per head, the row ``self.head`` is added (FacetModel.set_head).
        n_heads = int(spec.get("n_heads", 0))
        self.head_bias_in = nn.Parameter(torch.zeros(n_heads, irreps_in.dim)) if n_heads else None
        self.head_bias_out = nn.Parameter(torch.zeros(n_heads, irreps_gate_in.dim)) if n_heads else None
        self.head = 0
        # The specialised implementations of the same maps: index tables and Clebsch-Gordan
        # constants only (not saved); they read the parameters above at every call.
        self.fast = nn.ModuleDict(
            {
                "convolution": FastSplineConvolution(self.convolution),
                "self_connection": FastLinear(self.self_connection),
                "linear_in": FastLinear(self.linear_in),
                "linear_out": FastLinear(self.linear_out),
                "gate": FastGate(self.gate),
            }
        )
        #: which implementation runs; set through ``FacetModel.set_backend`` (see ``nn.backend``)
        self.backend = "kernel"

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        linear = getattr(self, name)
        return linear(x) if self.backend == "e3nn" else self.fast[name](x, linear.weight)

    def forward(
        self,
        x: torch.Tensor,
        sh: torch.Tensor,
        r: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
        edges: EdgeContext | None = None,
        n_out: int | None = None,
    ) -> torch.Tensor:
        """``edges``: per-edge work shared by the layers of one evaluation (the fast paths use
        it; the e3nn reference computes everything itself). ``n_out``: compute the first
        ``n_out`` rows only (all receivers must be below it; the other rows only send, like a
        LAMMPS domain's ghosts), so that node-wise work is not spent on them."""
        n = x.shape[0] if n_out is None else n_out
        sc = self._linear("self_connection", x[:n])
        h = self._linear("linear_in", x)
        if self.head_bias_in is not None:
            h = h + self.head_bias_in[self.head]
        if self.backend == "e3nn":
            h = self.convolution(h, sh, r, senders, receivers, n_rows=n)
        else:
            radial = self.convolution.radial
            h = self.fast["convolution"](
                h, sh, r, senders, receivers, radial.table(),
                use_kernel=self.backend == "kernel", edges=edges, n_rows=n,
            )  # fmt: skip
        h = self._linear("linear_out", h) + sc
        if self.head_bias_out is not None:
            h = h + self.head_bias_out[self.head]
        return self.gate(h) if self.backend == "e3nn" else self.fast["gate"](h)
