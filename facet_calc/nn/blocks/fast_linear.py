"""A fast equivalent of an e3nn ``o3.Linear`` (without biases) for node features.

e3nn applies one small matmul per (input block, output block) pair and, in the backward pass,
zero-fills a full-size gradient for every input slice. An equivariant linear map is the same
matrix for every component m of an order l, so here each order l is one gather and one matmul:
``out_l (N, mul_out, 2l+1) = W_l^T @ x_l (N, mul_in, 2l+1)``.

``W_l`` is assembled from the e3nn module's *current* flat weight (a gather and a scale,
differentiable), so the fast path follows the parameters during training and nothing derived is
stored in a potential file; while the weight is frozen the assembled ``W_l`` is reused
(:class:`~facet_calc.nn.derived.DerivedCache`).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from .._kernels import cpu_launcher_for
from .derived import DerivedCache


class FastLinear(nn.Module):
    """The same map as ``linear`` (an ``o3.Linear`` without biases), computed per order l.

    ``forward(x, weight)``: ``x (n_nodes, irreps_in.dim)``, ``weight`` the linear's flat weight
    (``linear.weight``) -> ``(n_nodes, irreps_out.dim)``. Holds index tables only (not saved).
    """

    def __init__(self, linear: o3.Linear) -> None:
        super().__init__()
        irreps_in, irreps_out = linear.irreps_in, linear.irreps_out
        if any(p.numel() for name, p in linear.named_parameters() if "bias" in name):
            raise ValueError("FastLinear handles linears without biases only")
        # where each entry of the dense per-channel matrix comes from: flat weight index and
        # e3nn's path normalisation; index n_weights (a zero pad) where no path connects
        n_weights = linear.weight.numel()
        source = torch.full((irreps_in.num_irreps, irreps_out.num_irreps), n_weights, dtype=torch.long)
        coef = torch.zeros(irreps_in.num_irreps, irreps_out.num_irreps, dtype=torch.float64)
        in_first = [sum(m for m, _ in irreps_in[:i]) for i in range(len(irreps_in))]
        out_first = [sum(m for m, _ in irreps_out[:i]) for i in range(len(irreps_out))]
        start = 0
        for ins in linear.instructions:
            mul_in, mul_out = ins.path_shape
            block = start + torch.arange(mul_in * mul_out).view(mul_in, mul_out)
            rows = slice(in_first[ins.i_in], in_first[ins.i_in] + mul_in)
            cols = slice(out_first[ins.i_out], out_first[ins.i_out] + mul_out)
            source[rows, cols] = block
            coef[rows, cols] = ins.path_weight
            start += mul_in * mul_out
        if start != n_weights:
            raise ValueError(f"o3.Linear weight has {n_weights} entries, its instructions use {start}")

        in_slices, out_slices = irreps_in.slices(), irreps_out.slices()
        self.orders: list[int] = []
        self.out_muls: list[int] = []
        out_order: list[torch.Tensor] = []
        for l in sorted({ir.l for _, ir in irreps_out}):
            ins = [(i, mul) for i, (mul, ir) in enumerate(irreps_in) if ir.l == l]
            outs = [(i, mul) for i, (mul, ir) in enumerate(irreps_out) if ir.l == l]
            d = 2 * l + 1
            out_idx = torch.cat([out_slices[i].start + torch.arange(mul) * d for i, mul in outs])
            out_channels = torch.cat([out_first[i] + torch.arange(mul) for i, mul in outs])
            out_order.append((out_idx[:, None] + torch.arange(d)[None, :]).reshape(-1))
            self.orders.append(l)
            self.out_muls.append(len(out_idx))
            if not ins:  # no input of this order: e3nn gives zeros there
                self.register_buffer(f"gather_{l}", None)
                continue
            # rows of x for component m = 0 of every input channel of order l; the rest follow
            in_idx = torch.cat([in_slices[i].start + torch.arange(mul) * d for i, mul in ins])
            in_channels = torch.cat([in_first[i] + torch.arange(mul) for i, mul in ins])
            gather = (in_idx[:, None] + torch.arange(d)[None, :]).reshape(-1)  # (mul_in * d)
            self.register_buffer(f"gather_{l}", gather, persistent=False)
            sub = (in_channels[:, None], out_channels[None, :])
            self.register_buffer(f"source_{l}", source[sub].clone(), persistent=False)
            self.register_buffer(f"coef_{l}", coef[sub].clone(), persistent=False)
        # orders whose input channels are one contiguous slice of x (then read as a view)
        self.contiguous_input: dict[int, tuple[int, int]] = {}
        for l in self.orders:
            gather = getattr(self, f"gather_{l}", None)
            if gather is None:
                continue
            first, stop = int(gather[0]), int(gather[0]) + gather.numel()
            if torch.equal(gather, torch.arange(first, stop)):
                self.contiguous_input[l] = (first, stop)
        placed = torch.cat(out_order)
        if sorted(placed.tolist()) != list(range(irreps_out.dim)):
            raise ValueError(f"output irreps {irreps_out} have orders no input reaches")
        inverse = torch.empty_like(placed)
        inverse[placed] = torch.arange(placed.numel())
        self.register_buffer("to_output", inverse, persistent=False)
        self.register_buffer("from_output", placed, persistent=False)
        self.out_widths = [mul * (2 * l + 1) for l, mul in zip(self.orders, self.out_muls)]
        self.identity_order = bool(torch.equal(inverse, torch.arange(placed.numel())))

        # one gather for all orders: its backward is a single scatter into one (N, dim_in) buffer
        # (a gather per order would zero-fill a full-size buffer per order)
        gathers = [getattr(self, f"gather_{l}") for l in self.orders if getattr(self, f"gather_{l}") is not None]
        self.register_buffer(
            "gather_all", torch.cat(gathers) if gathers else torch.zeros(0, dtype=torch.long), persistent=False
        )
        self.gather_sizes = [g.numel() for g in gathers]
        self.identity_gather = bool(torch.equal(self.gather_all, torch.arange(irreps_in.dim)))
        # orders multiplied as kron(W_l, I_d) on e3nn's (mul, d) layout: d times the products of
        # the transposing path, but none of its copies; cheaper while mul d is small
        # (benchmarks/roofline.py: 7net-0's 64x1e and 32x2e at 16 to 1000 atoms), dearer for wide
        # high orders
        self.kron_orders = {
            l for l, muls in zip(self.orders, self.out_muls)
            if l == 0 or (2 * l + 1 <= 5 and max(muls, self._mul_in(l)) * (2 * l + 1) <= self.kron_max_width)
        }  # fmt: skip
        self._derived = DerivedCache()  # the assembled W_l while the weight is frozen

    #: widest kron(W_l, I_d) (rows or columns) used for an order l > 0
    kron_max_width = 320

    def _mul_in(self, l: int) -> int:
        gather = getattr(self, f"gather_{l}", None)
        return 0 if gather is None else gather.numel() // (2 * l + 1)

    def weight_of_order(self, l: int, weight: torch.Tensor) -> torch.Tensor | None:
        """``(mul_in_l, mul_out_l)`` matrix of order ``l`` from the flat e3nn ``weight``."""
        source = getattr(self, f"source_{l}", None)
        if source is None:
            return None
        coef = getattr(self, f"coef_{l}")

        def assemble():
            padded = torch.cat((weight, weight.new_zeros(1)))
            return padded[source] * coef.to(weight.dtype)

        return self._derived.get(l, (weight, source, coef), assemble)

    def input_of_order(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """``(n_nodes, mul_in_l, 2l+1)``: the input channels of order ``l`` that
        :meth:`weight_of_order` multiplies (a view when they are contiguous in ``x``)."""
        n, d = x.shape[0], 2 * l + 1
        span = self.contiguous_input.get(l)
        if span is not None:  # a slice of x: no copy
            return x[:, span[0] : span[1]].unflatten(1, (-1, d))
        return x.index_select(1, getattr(self, f"gather_{l}")).view(n, -1, d)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, use_kernel: bool = False) -> torch.Tensor:
        """``use_kernel``: with a frozen weight, multiply the orders ``l > 0`` by the compiled
        CPU kernel where it is loaded (``nn.backend``'s ``"kernel"``; ``False``: torch only)."""
        if torch.is_grad_enabled() and weight.requires_grad:  # training: autograd through the ops
            return self.apply_weights(x, [self.weight_of_order(l, weight) for l in self.orders])
        # frozen weight: one autograd node that keeps nothing per node (autograd's products
        # would keep x for a weight gradient never asked for, and each of the ~10 small
        # operations would be a node of its own: most of a small system's linear cost)
        return _FrozenLinear.apply(x, self, self._frozen_plan(weight), use_kernel)

    def _frozen_plan(self, weight: torch.Tensor) -> list[tuple]:
        """Per order, what :class:`_FrozenLinear` multiplies: ``(l, input, matrix, kron, plain)``
        with ``input`` a ``(start, stop)`` column span of x or a gather index, ``matrix`` either
        ``kron(W_l, I_d)`` (``(mul_in d, mul_out d)``, acting on e3nn's interleaved layout
        directly) or ``W_l`` (the transposing product), and ``plain`` ``(W_l, W_l^T)`` contiguous
        for an order ``l > 0`` read from a span (what the compiled per-order kernel multiplies,
        forward and backward) or ``None``; ``(l, None, None, False, None)`` for an order with no
        input. Assembled once while the weight is frozen."""
        sources = (weight, *(getattr(self, f"{k}_{l}", None) for l in self.orders for k in ("source", "coef")))

        def assemble():
            plan = []
            for l in self.orders:
                w = self.weight_of_order(l, weight)
                if w is None:
                    plan.append((l, None, None, False, None))
                    continue
                span = self.contiguous_input.get(l)
                source = span if span is not None else getattr(self, f"gather_{l}")
                plain = (w.contiguous(), w.t().contiguous()) if l > 0 and span is not None else None
                kron = l in self.kron_orders
                if kron and l > 0:
                    w = torch.kron(w, torch.eye(2 * l + 1, dtype=w.dtype, device=w.device))
                plan.append((l, source, w.contiguous(), kron, plain))
            return plan

        return self._derived.get("frozen plan", tuple(s for s in sources if s is not None), assemble)

    def apply_weights(self, x: torch.Tensor, weights: list[torch.Tensor | None]) -> torch.Tensor:
        """``(n_nodes, irreps_out.dim)`` from ``x`` and the per-order matrices ``weights``."""
        n = x.shape[0]
        gathered = x if self.identity_gather else x.index_select(1, self.gather_all)
        pieces = iter(torch.split(gathered, self.gather_sizes, dim=1))
        parts = []
        for l, mul_out, w in zip(self.orders, self.out_muls, weights):
            d = 2 * l + 1
            if w is None:
                parts.append(x.new_zeros((n, mul_out * d)))
                continue
            xl = next(pieces).view(n, -1, d)  # (N, mul_in, d)
            parts.append(_per_component(xl, w).reshape(n, -1))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        # (outputs are assembled grouped by order; put them back in irreps_out's layout)
        return out if self.identity_order else out.index_select(1, self.to_output)

    def apply_transposed(self, grad: torch.Tensor, weights: list[torch.Tensor | None], dim_in: int) -> torch.Tensor:
        """The adjoint of :meth:`apply_weights`: ``(n_nodes, irreps_out.dim)`` gradients ->
        ``(n_nodes, dim_in)``."""
        n = grad.shape[0]
        grouped = grad if self.identity_order else grad.index_select(1, self.from_output)
        parts = []
        for piece, l, w in zip(torch.split(grouped, self.out_widths, dim=1), self.orders, weights):
            if w is not None:
                parts.append(_per_component(piece.view(n, -1, 2 * l + 1), w.t()).reshape(n, -1))
        gathered = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.identity_gather:
            return gathered
        return grad.new_zeros((n, dim_in)).index_copy_(1, self.gather_all, gathered)


class _FrozenLinear(torch.autograd.Function):
    """:meth:`FastLinear.apply_weights` for weights that take no gradient, as one node, on the
    plan of :meth:`FastLinear._frozen_plan`; its backward is the transposed plan. Each order's
    result is written into its columns of one output (no concatenation); where the compiled CPU
    library is loaded (``nn.backend``'s kernel switch), orders ``l > 0`` are multiplied in
    e3nn's layout by ``component_linear.cpp``, without the transposing copies of
    :func:`_per_component` (the torch products are the reference it is tested against)."""

    @staticmethod
    def forward(ctx, x, linear, plan, use_kernel):
        backend = cpu_launcher_for(x) if use_kernel else None
        ctx.linear, ctx.plan, ctx.dim_in, ctx.backend = linear, plan, x.shape[1], backend  # nothing per node
        n = x.shape[0]
        out = x.new_empty((n, sum(linear.out_widths)))
        start = 0
        for (l, source, w, kron, plain), width in zip(plan, linear.out_widths):
            span, start = out[:, start : start + width], start + width
            if w is None:
                span.zero_()
                continue
            xl = x[:, source[0] : source[1]] if isinstance(source, tuple) else x.index_select(1, source)
            if backend is not None and plain is not None and _in_kernel(backend, xl, plain[0], span, l):
                continue
            if kron:  # (n, mul_in d) @ (mul_in d, mul_out d): no transposes, e3nn layout in and out
                torch.mm(xl, w, out=span)  # (BLAS writes the strided span in place)
            else:
                span.copy_(_per_component(xl.reshape(n, -1, 2 * l + 1), w).reshape(n, -1))
        return out if linear.identity_order else out.index_select(1, linear.to_output)

    @staticmethod
    def backward(ctx, grad):
        linear, n = ctx.linear, grad.shape[0]
        # create_graph (second derivatives through a frozen linear): torch's differentiable
        # products only, neither the kernel nor products written in place (out=)
        in_place = not torch.is_grad_enabled()
        backend = ctx.backend if in_place else None
        grouped = grad if linear.identity_order else grad.index_select(1, linear.from_output)
        # every column of x is written below when the orders' inputs tile it; else zeros stay
        grad_x = (grad.new_empty if linear.identity_gather else grad.new_zeros)((n, ctx.dim_in))
        for piece, (l, source, w, kron, plain) in zip(torch.split(grouped, linear.out_widths, dim=1), ctx.plan):
            if w is None:
                continue
            span = grad_x[:, source[0] : source[1]] if isinstance(source, tuple) else None
            if span is not None and backend is not None and plain is not None:
                if _in_kernel(backend, piece, plain[1], span, l):
                    continue
            if kron and span is not None and in_place:
                torch.mm(piece, w.t(), out=span)
                continue
            if kron:
                result = piece @ w.t()
            else:
                result = _per_component(piece.reshape(n, -1, 2 * l + 1), w.t()).reshape(n, -1)
            if span is not None:
                span.copy_(result)
            else:
                grad_x.index_copy_(1, source, result)
        return grad_x, None, None, None


def _in_kernel(backend, x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, l: int) -> bool:
    """``out = x @ kron(weight, I_{2l+1})`` by the compiled kernel; False where it has no tile."""
    d = 2 * l + 1
    if x.stride(1) != 1 or x.dtype != weight.dtype or not backend.linear_fits(d, weight.shape[1], x.dtype):
        return False
    return backend.component_linear(x, weight, out, d)


def _per_component(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``einsum("nid,io->nod", x, weight)`` as one matmul: ``x (N, i, d)``, ``weight (i, o)``
    -> ``(N, o, d)``. (einsum's equation parsing cost as much as the product at small N.)"""
    n, i, d = x.shape
    if d == 1:
        return (x.reshape(n, i) @ weight).unsqueeze(2)
    # explicitly one (N d, i) @ (i, o) product: matmul on a strided 3-D operand can fall back to
    # a batched product over N with the weight broadcast, several times slower
    return (x.transpose(1, 2).reshape(n * d, i) @ weight).view(n, d, -1).transpose(1, 2)
