"""One NequIP-style interaction layer whose convolution weights come from a spline table.

Per layer (the SevenNet "linear self-connection" variant)::

    sc   = Linear(x)                                   # self-connection, to the gate's input irreps
                                                       # (``"species"``: Linear_{W[species]}(x))
    h    = Linear(x)
    m_ij = TP(h_j, Y(r_ij); w(|r_ij|))                 # 'uvu' tensor product, weights per edge
    h_i  = sum_j m_ij / denominator
    x'   = Gate(Linear(h_i) + sc)

The plain path below uses e3nn's generic ``TensorProduct``; it is the reference that any faster
implementation is compared with.
"""

from __future__ import annotations

from typing import Any

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from ...backend import KERNEL
from ...blocks.activations import activation
from ...blocks.convolution import SplineConvolution
from ...blocks.e3nn_modules import linear
from ...blocks.fast_convolution import EdgeContext, FastSplineConvolution
from ...blocks.fast_gate import FastGate
from ...blocks.fast_linear import FastLinear
from ...blocks.radial import SplineRadial
from ...blocks.species_linear import FastSpeciesLinear, SpeciesLinear, species_groups
from ...blocks.twins import TwinnedLayer


class InteractionBlock(TwinnedLayer):
    """Self-connection, linear, spline convolution, linear, gate (see module docstring).

    ``spec`` is the layer's entry of the potential config (see ``facet_calc.potential``); its
    ``"self_connection"`` is ``"linear"`` (the default) or ``"species"``, a linear map with one
    weight per species (SevenNet's ``nequip`` self-connection), which needs ``n_species``.
    """

    def __init__(self, spec: dict[str, Any], irreps_sh: o3.Irreps, radial: SplineRadial, n_species: int = 0) -> None:
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
        self.species_self_connection = spec.get("self_connection", "linear") == "species"
        if self.species_self_connection:
            self.self_connection = SpeciesLinear(irreps_in, irreps_gate_in, n_species)
        else:
            self.self_connection = linear(irreps_in, irreps_gate_in)
        self.linear_in = linear(irreps_in, irreps_in)
        self.convolution = SplineConvolution(
            irreps_in,
            irreps_sh,
            irreps_tp_out,
            spec["instructions"],
            radial,
            spec["denominator"],
        )
        self.linear_out = linear(irreps_tp_out, irreps_gate_in)
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
        self._set_twins(
            convolution=FastSplineConvolution(self.convolution),
            self_connection=(FastSpeciesLinear if self.species_self_connection else FastLinear)(self.self_connection),
            linear_in=FastLinear(self.linear_in), linear_out=FastLinear(self.linear_out), gate=FastGate(self.gate),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, senders: torch.Tensor,
                receivers: torch.Tensor, edges: EdgeContext | None = None, n_out: int | None = None,
                species: torch.Tensor | None = None):  # fmt: skip
        """``edges``: per-edge work shared by the layers of one evaluation (the fast paths use
        it; the e3nn reference computes everything itself). ``n_out``: compute the first
        ``n_out`` rows only (all receivers must be below it; the other rows only send, like a
        LAMMPS domain's ghosts), so that node-wise work is not spent on them. ``species``:
        ``(n_nodes,)`` species indices of the rows of ``x`` (a species self-connection needs them)."""
        n = x.shape[0] if n_out is None else n_out
        if self.species_self_connection:
            if species is None:
                raise ValueError("this layer's self-connection depends on the species: pass species=")
            if self.backend.reference:
                sc = self.self_connection(x[:n], species[:n])
            else:
                # the grouping of atoms by species: once per evaluation, shared by the layers
                groups = None
                if edges is not None:
                    groups = edges.shared(("species groups", n), lambda s: species_groups(s[:n]), species)
                sc = self.fast["self_connection"](x[:n], species[:n], self.self_connection.weight, groups,
                                                  use_kernel=self.backend is KERNEL)  # fmt: skip
        else:
            sc = self._linear("self_connection", x[:n])
        h = self._linear("linear_in", x)
        if self.head_bias_in is not None:
            h = h + self.head_bias_in[self.head]
        h = self._convolve(h, sh, r, senders, receivers, edges, n)
        h = self._linear("linear_out", h) + sc
        if self.head_bias_out is not None:
            h = h + self.head_bias_out[self.head]
        return self.backend.gate(self.gate, self.fast["gate"], h)
