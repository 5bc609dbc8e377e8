"""One MACE layer (interaction + product basis + readout) on the layer-by-layer contract.

Node features entering and leaving a layer are ``[h | e_1..e_H | s]``: the MACE node features
``h`` (e3nn layout), the running sum of the readouts per head ``e`` (eV before scale and
shift; see :mod:`.model` for why it travels with the features) and the species index ``s``
(a float holding an integer, so that the species-dependent pieces of a layer can read it
when a LAMMPS domain hands the layer its ghosts' features). Per layer (``RealAgnostic
ResidualInteractionBlock``; the plain ``RealAgnosticInteractionBlock`` in brackets)::

    sc  = skip_tp(h, onehot(s))                        # element-dependent linear [none]
    m_i = sum_j TP(linear_up(h)_j, Y(r_ij); w(|r_ij|)) / avg_num_neighbors   (spline w)
    A   = linear(m)                                    [A = skip_tp(linear(m), onehot(s))]
    h'  = product_linear(SymmetricContraction(A, s)) + sc
    e'  = e + readout(h')                              # linear, or the last layer's MLP
"""

from __future__ import annotations

from typing import Any

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from torch import nn

from ...blocks.convolution import SplineConvolution
from ...blocks.e3nn_modules import linear
from ...blocks.fast_convolution import EdgeContext, FastSplineConvolution
from ...blocks.fast_linear import FastLinear
from ...blocks.radial import SplineRadial
from ...blocks.twins import TwinnedLayer
from .contraction import SymmetricContraction


class MaceLayer(TwinnedLayer):
    """One MACE interaction, product basis and readout; ``spec`` is the layer's config entry."""

    def __init__(self, spec: dict[str, Any], irreps_sh: o3.Irreps, radial: SplineRadial, n_species: int,
                 n_heads: int, avg_num_neighbors: float, convention: str) -> None:  # fmt: skip
        super().__init__()
        self.residual = bool(spec["residual"])
        self.n_species, self.n_heads = n_species, n_heads
        irreps_in = o3.Irreps(spec["irreps_in"])
        irreps_target = o3.Irreps(spec["irreps_target"])
        irreps_mid = o3.Irreps(spec["irreps_mid"])
        irreps_out = o3.Irreps(spec["irreps_out"])
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        node_attrs = o3.Irreps(f"{n_species}x0e")
        self.linear_up = linear(irreps_in, irreps_in)
        self.convolution = SplineConvolution(irreps_in, irreps_sh, irreps_mid, spec["instructions"], radial,
                                             avg_num_neighbors)  # fmt: skip
        self.convolution.wigner_convention = convention
        self.linear = linear(irreps_mid, irreps_target)
        if self.residual:
            self.skip_tp = o3.FullyConnectedTensorProduct(irreps_in, node_attrs, irreps_out)
        else:
            self.skip_tp = o3.FullyConnectedTensorProduct(irreps_target, node_attrs, irreps_target)
        channels = {mul for mul, _ in irreps_target}
        if len(channels) != 1:
            raise ValueError(f"a MACE layer needs one multiplicity in its target irreps, got {irreps_target}")
        self.channels = channels.pop()
        self.irreps_a = o3.Irreps([(1, ir) for _, ir in irreps_target])
        self.product = SymmetricContraction(self.irreps_a, irreps_out, spec["correlation"], spec["n_params"], n_species)
        self.product_linear = linear(irreps_out, irreps_out)
        readout = spec["readout"]
        self.nonlinear = readout["kind"] == "nonlinear"
        if self.nonlinear:
            hidden = o3.Irreps(readout["hidden"])
            self.readout_1 = linear(irreps_out, hidden)
            self.activation_scale = float(readout["activation_scale"])  # e3nn's normalize2mom constant
            self.readout_2 = linear(hidden, o3.Irreps(f"{n_heads}x0e"))
            self.readout_hidden_per_head = hidden.dim // n_heads
        else:
            self.readout_1 = linear(irreps_out, o3.Irreps(f"{n_heads}x0e"))
        twins = {"convolution": FastSplineConvolution(self.convolution), "linear_up": FastLinear(self.linear_up),
                 "linear": FastLinear(self.linear), "product_linear": FastLinear(self.product_linear),
                 "readout_1": FastLinear(self.readout_1)}  # fmt: skip
        if self.nonlinear:
            twins["readout_2"] = FastLinear(self.readout_2)
        self._set_twins(**twins)

    @property
    def width_in(self) -> int:
        return self.irreps_in.dim + self.n_heads + 1

    @property
    def width_out(self) -> int:
        return self.irreps_out.dim + self.n_heads + 1

    def _readout(self, h: torch.Tensor) -> torch.Tensor:
        """``(n, n_heads)`` energies of this layer's readout (before scale and shift)."""
        first = self._linear("readout_1", h)
        if not self.nonlinear:
            return first
        act = nn.functional.silu(first) * self.activation_scale
        if self.n_heads == 1:
            return self._linear("readout_2", act)
        # MACE masks the hidden units to the head's block before the last linear
        outs = []
        size = self.readout_hidden_per_head
        for head in range(self.n_heads):
            masked = torch.zeros_like(act)
            masked[:, head * size : (head + 1) * size] = act[:, head * size : (head + 1) * size]
            outs.append(self._linear("readout_2", masked)[:, head])
        return torch.stack(outs, dim=1)

    def forward(self, x: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, senders: torch.Tensor,
                receivers: torch.Tensor, edges: EdgeContext | None = None, n_out: int | None = None,
                species: torch.Tensor | None = None):  # fmt: skip
        """``x (n_atoms, width_in)`` -> ``(n_out, width_out)`` (see module docstring). ``species``
        is not needed: the layer reads the species from the column ``x`` carries."""
        n = x.shape[0] if n_out is None else n_out
        dim = self.irreps_in.dim
        h, energy, species_f = x[:, :dim], x[:n, dim : dim + self.n_heads], x[:n, -1:]
        species = species_f.detach().round().long().squeeze(1)
        onehot = nn.functional.one_hot(species, self.n_species).to(x.dtype)
        sc = self.skip_tp(h[:n], onehot) if self.residual else None
        up = self._linear("linear_up", h)
        m = self._convolve(up, sh, r, senders, receivers, edges, n)
        a = self._linear("linear", m)
        if not self.residual:
            a = self.skip_tp(a, onehot)
        a = _per_channel(a, self.irreps_a, self.channels)
        b = self.product.reference(a, species) if self.backend.reference else self.product(a, species)
        out = self._linear("product_linear", b)
        if sc is not None:
            out = out + sc
        return torch.cat((out, energy + self._readout(out), species_f), dim=1)


def _per_channel(x: torch.Tensor, irreps_a: o3.Irreps, channels: int) -> torch.Tensor:
    """e3nn layout ``(n, [c x ir_1, c x ir_2, ..])`` -> ``(n, c, dim_A)`` (MACE's reshape_irreps)."""
    n = x.shape[0]
    parts, start = [], 0
    for _, ir in irreps_a:
        parts.append(x[:, start : start + channels * ir.dim].reshape(n, channels, ir.dim))
        start += channels * ir.dim
    return torch.cat(parts, dim=2)


def activation_scale() -> float:
    """e3nn's second-moment normalisation constant of SiLU (what ``e3nn.nn.Activation`` multiplies
    by), in float64."""
    return float(normalize2mom(nn.functional.silu, dtype=torch.float64).cst)
