"""K Facet models of one config evaluated as one: every node-wise operation batched over members.

A committee of distilled students shares the architecture and differs only in its weights. Run
member by member, a small student's step is mostly fixed cost (each of ~100 small operations
and autograd nodes per step costs about as much at 64 atoms as at 1000), so K members cost
nearly K steps. Here the members' node features are one ``(K, N, dim)`` tensor and each linear,
mixer, layer norm, MLP and readout is one batched operation for all members (``bmm`` over the
members' stacked weights); the convolution runs the fused CPU kernel once for all members, their
channels side by side (:class:`~facet_calc.nn.blocks.fast_convolution.StackedFusedConvolution`),
where the blocks' channels fit its vectors, else each member's kernel on its own slice. The edge
geometry (harmonics, lengths, spline basis) is computed once and broadcast to the members
(:func:`~facet_calc.nn.blocks.edge_geometry.member_edge_geometry`).

Each member gets its own copy of the edge vectors (``(K, E, 3)``, one leaf), so that one
backward pass of the summed energies gives every member's own edge gradients (the kernel and
the edge geometry keep the gradients per member), and with them its own forces and virial: the
members never mix, which the test against
:func:`~facet_calc.nn.committee.evaluate_members` (each member evaluated alone) checks.

Weights are copied (stacked) when the stack is built; :meth:`StackedFacet.is_current` reports
the stack stale once any member's parameter changes.
Inference only: nothing here trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..._kernels import kernel_launcher
from ...blocks.edge_geometry import member_edge_geometry
from ...blocks.fast_convolution import EdgeContext, StackedFusedConvolution, stacked_kernel_blocks
from ...blocks.fast_linear import FastLinear
from .model import FacetModel, ScalarMLP, scalar_mlp

#: config keys that may differ between members (they do not change the computation)
_FREE_KEYS = {"name", "description", "committee", "training", "version"}


def stackable(models: Sequence[nn.Module]) -> bool:
    """Whether ``models`` can run as one :class:`StackedFacet`: all Facet models with the
    same config (up to names), dtype and device, none on the reference (e3nn) backend."""
    if len(models) < 2 or not all(type(m) is FacetModel for m in models):
        return False
    first = {k: v for k, v in models[0].config.items() if k not in _FREE_KEYS}
    for m in models:
        if {k: v for k, v in m.config.items() if k not in _FREE_KEYS} != first:
            return False
        if m.dtype != models[0].dtype or m.device != models[0].device or m._backend.reference:
            return False
    return True


class _StackedLinear:
    """An equivariant linear map per member, ``x (K, N, dim_in) -> (K, N, dim_out)``: per
    order ``l`` one ``bmm`` of the members' ``(mul_in, mul_out)`` matrices, with the index
    tables of the members' (identical) :class:`FastLinear`."""

    def __init__(self, fast: FastLinear, weights: Sequence[torch.Tensor]) -> None:
        self.fast = fast
        self.weights = []
        for l in fast.orders:
            per_member = [fast.weight_of_order(l, w) for w in weights]
            self.weights.append(None if per_member[0] is None else torch.stack(per_member).detach())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast
        k, n = x.shape[0], x.shape[1]
        gathered = x if fast.identity_gather else x.index_select(2, fast.gather_all)
        pieces = iter(torch.split(gathered, fast.gather_sizes, dim=2))
        parts = []
        for l, mul_out, w in zip(fast.orders, fast.out_muls, self.weights):
            d = 2 * l + 1
            if w is None:
                parts.append(x.new_zeros((k, n, mul_out * d)))
                continue
            xl = next(pieces)
            if d == 1:
                parts.append(torch.bmm(xl, w))
                continue
            # (K, N, mul_in, d) -> (K, N d, mul_in) @ (K, mul_in, mul_out) -> (K, N, mul_out d)
            rows = xl.view(k, n, -1, d).transpose(2, 3).reshape(k, n * d, -1)
            parts.append(torch.bmm(rows, w).view(k, n, d, mul_out).transpose(2, 3).reshape(k, n, mul_out * d))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
        return out if fast.identity_order else out.index_select(2, fast.to_output)


class _StackedLayer:
    """One :class:`~facet_calc.nn.families.facet.model.FacetLayer` of every member."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        first = layers[0]
        self.linear_in = _StackedLinear(first.fast["linear_in"], [m.linear_in.weight for m in layers])
        self.linear_out = _StackedLinear(first.fast["linear_out"], [m.linear_out.weight for m in layers])
        self.convolutions = [(m.fast["convolution"], m.convolution.radial.table().detach()) for m in layers]
        self.backend = first.backend
        self._stacked_blocks: dict = {}  # per kernel launcher: the members' kernel blocks, stacked
        if isinstance(first.mixer, ScalarMLP):
            depth = len(first.mixer.weights)
            self.mlp = [torch.stack([m.mixer.weights[i].detach() for m in layers]) for i in range(depth)]
            self.mixer = None
        else:
            mixer = first.mixer
            self.mixer = mixer
            per_order = zip(*[[m.mixer.fast_up.weight_of_order(l, m.mixer.up.weight) for l in range(mixer.lmax + 1)]
                              for m in layers])  # fmt: skip
            self.mixer_up = [None if w[0] is None else torch.stack(w).detach() for w in per_order]
            self.mixer_down = _StackedLinear(mixer.fast_down, [m.mixer.down.weight for m in layers])
        residual = first.residual
        self.adapter = None
        if residual.adapter is not None:
            self.adapter = _StackedLinear(residual.fast_adapter, [m.residual.adapter.weight for m in layers])
        self.norm = first.residual.norm
        self.norm_weight = torch.stack([m.residual.norm.weight.detach() for m in layers]).unsqueeze(1)  # (K, 1, C)

    def __call__(self, x: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, edges: Sequence[EdgeContext],
                 basis: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # fmt: skip
        """``x (K, N, dim_in)``, ``sh (K, E, dim_sh)``, ``r (K, E)``, one edge context per member,
        ``basis``: the spline rows ``(E, 4)`` (shared) and every member's ``beta (K, E, 4)``."""
        h = self.linear_in(x)
        use_kernel = self.backend.name == "kernel"
        blocks = self._kernel_blocks(x.device) if use_kernel and edges[0].sorted_by_receiver else None
        if blocks is not None:  # one kernel pass for all members (the edge work shared)
            conv = self.convolutions[0][0]
            static = (blocks[0], edges[0].index, basis[0], blocks[1], 1.0 / conv.denominator)
            h = StackedFusedConvolution.apply(basis[1], sh, h, static)
        else:
            h = torch.stack([
                conv(h[k], sh[k], r[k], ctx.senders, ctx.receivers, table, use_kernel=use_kernel, edges=ctx)
                for k, ((conv, table), ctx) in enumerate(zip(self.convolutions, edges))
            ])  # fmt: skip
        m = self.linear_out(h)
        m = scalar_mlp(m, self.mlp) if self.mixer is None else self._mix(m)
        skip = x if self.adapter is None else self.adapter(x)
        return skip + self.norm.apply_norm(m, self.norm_weight)

    def _kernel_blocks(self, device: torch.device) -> tuple | None:
        """``(launcher, blocks)`` of the stacked fused kernel on ``device``, or ``None`` where
        it cannot run (no compiled CPU kernel, or the blocks' channels do not stack)."""
        backend = kernel_launcher(device)
        if backend is None:
            return None
        if backend not in self._stacked_blocks:
            conv = self.convolutions[0][0]
            blocks = stacked_kernel_blocks(conv, [table for _, table in self.convolutions], backend)
            self._stacked_blocks[backend] = None if blocks is None else (backend, blocks)
        return self._stacked_blocks[backend]

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        """The members' S2 mixers (the fast path of :class:`~facet_calc.nn.blocks.s2_mixing.S2Mixer`)."""
        mixer = self.mixer
        k, n, h = x.shape[0], x.shape[1], mixer.channels
        coeffs = []
        for l, w in enumerate(self.mixer_up):
            d = 2 * l + 1
            if w is None:  # no input of this order: the mixer's "up" gives zeros there
                coeffs.append(x.new_zeros((k, n, h, d)))
                continue
            xl = mixer.fast_up.input_of_order(l, x.reshape(k * n, -1)).view(k, n, -1, d)
            coeffs.append(torch.einsum("knid,kih->knhd", xl, w))
        use_kernel = self.backend.name == "kernel"
        return self.mixer_down(mixer._through_grid(torch.cat(coeffs, dim=3), x, use_kernel=use_kernel))


class StackedFacet:
    """K Facet models of one config as one evaluation (see module docstring).

    ``energies(species, edge_vec, senders, receivers)``: ``edge_vec (K, E, 3)`` (each member's
    own copy) -> per-atom energies ``(K, N)`` eV."""

    def __init__(self, models: Sequence[FacetModel]) -> None:
        if not stackable(models):
            raise ValueError("only Facet models of one config, dtype and device (fast backend) can be stacked")
        self.models = list(models)
        self._versions = self._parameter_versions()
        first = models[0]
        self.spherical_harmonics = first.spherical_harmonics
        with torch.no_grad():
            self.embedding = torch.stack([m.embedding.detach() for m in models])  # (K, S, C0)
            self.layers = [_StackedLayer([m.layers[t] for m in models]) for t in range(len(first.layers))]
            self.readout_weight = torch.stack([m.readout_weight.detach() for m in models])  # (K, C)
            self.scale = torch.stack([m.scale.detach() for m in models])  # (K, S)
            self.shift = torch.stack([m.shift.detach() for m in models])

    def _parameter_versions(self) -> list[tuple[int, int]]:
        return [(id(p), p._version) for m in self.models for p in m.parameters()]

    def is_current(self, models: Sequence[nn.Module]) -> bool:
        """Built from these very models, none of whose parameters changed since."""
        return (len(models) == len(self.models) and all(a is b for a, b in zip(models, self.models))
                and self._parameter_versions() == self._versions)  # fmt: skip

    def energies(self, species: torch.Tensor, edge_vec: torch.Tensor, senders: torch.Tensor,
                 receivers: torch.Tensor) -> torch.Tensor:  # fmt: skip
        k = edge_vec.shape[0]
        # the members' edge geometry and spline basis at once: the knot grids are the same for all layers
        radial = self.models[0].layers[0].convolution.radial
        sh, r, rows, beta = member_edge_geometry(self.spherical_harmonics, edge_vec, radial.n_intervals, radial.r_max)
        shared = EdgeContext(species.shape[0], senders, receivers, r[0])
        edges = [shared] + [shared.with_lengths(r[m]) for m in range(1, k)]
        for m, ctx in enumerate(edges):
            ctx.set_spline_basis(radial.n_intervals, radial.r_max, rows, beta[m])
        basis = (rows, beta)
        x = self.embedding.index_select(1, species)  # (K, N, C0)
        for layer in self.layers:
            x = layer(x, sh, r, edges, basis)
        out = torch.bmm(x, self.readout_weight.unsqueeze(2)).squeeze(2) / math.sqrt(self.readout_weight.shape[1])
        return out * self.scale.index_select(1, species) + self.shift.index_select(1, species)

