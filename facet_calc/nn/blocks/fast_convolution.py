"""A convolution specialised to 'uvu' tensor products with one set of spherical harmonics.

Same inputs, parameters and outputs as :class:`~facet_calc.nn.blocks.convolution.SplineConvolution`
(e3nn's generic ``TensorProduct``), computed with a few large operations instead of many small
ones. For each input block ``b`` (multiplicity ``u``, order ``l1``) with its paths
``p = (l2 -> l3)``, and ``cols`` running over (path, m3)::

    A_e (cols, m1)  = Y_e @ coupling_b         coupling = alpha_p * wigner_3j(l1, l2, l3)
    t_e (cols, u)   = A_e @ x_j[b]^T
    msg_e           = t_e * w_e                w_e from the spline table of the block
    h_i             = sum_{e -> i} msg_e / denominator

Two implementations of these four lines:

* the compiled CPU kernel (``_kernels/spline_conv.cpp``) loops over receivers and evaluates
  the spline, ``t_e`` and the sum on the fly, so no per-edge tensor is ever stored, and writes
  each block straight into e3nn's output layout; its backward pass loops over senders.
* the pure-torch path (any device, and the CPU without a compiler) materialises the messages
  in edge chunks (recomputed in the backward pass when there are several) and uses index_add.

Each block reads the source table's columns of its paths, one per (path, u); the torch path
spreads each path's weights over its columns (m3) after evaluating the spline.
"""

from __future__ import annotations

import warnings

import torch
from e3nn import o3
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._kernels import kernel_launcher
from .derived import DerivedCache
from .radial import SplineRadial, spline_basis, spline_from_basis
from .wigner import wigner_3j


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

        radial: SplineRadial = reference.radial
        # the sign convention of the Clebsch-Gordan tables the source was trained with
        convention = getattr(reference, "wigner_convention", "e3nn-0.5")
        self.blocks: list[dict] = []
        out_index: list[torch.Tensor] = []  # per block: (cols, mul) e3nn output index
        path_order: list[torch.Tensor] = []  # per block: (n_paths * mul) e3nn flat weight index
        for b, (mul, ir_in) in enumerate(irreps_in):
            paths = [(k, ins) for k, ins in enumerate(tp.instructions) if ins.i_in1 == b]
            if not paths:
                continue
            l1, m1 = ir_in.l, ir_in.dim
            cols = sum(self.irreps_out[ins.i_out].ir.dim for _, ins in paths)
            # coupling (dim_sh, cols, m1): A_e = Y_e @ coupling, column = (path, m3)
            coupling = torch.zeros(irreps_sh.dim, cols, m1, dtype=torch.float64)
            o_index = torch.empty(cols, mul, dtype=torch.long)
            path_of_col = torch.empty(cols, dtype=torch.int32)
            path_columns = []  # fused kernel: one table column per (path, u)
            col = 0
            for p_idx, (k, ins) in enumerate(paths):
                l2 = irreps_sh[ins.i_in2].ir.l
                l3 = self.irreps_out[ins.i_out].ir.l
                d3 = 2 * l3 + 1
                w3j = wigner_3j(l1, l2, l3, convention=convention) * ins.path_weight  # (m1, m2, m3), float64
                coupling[sh_slices[ins.i_in2], col : col + d3, :] = w3j.permute(1, 2, 0)
                path_of_col[col : col + d3] = p_idx
                path_columns.append(offsets[k] + torch.arange(mul))
                start_out = out_slices[ins.i_out].start
                o_index[col : col + d3] = start_out + torch.arange(mul)[None, :] * d3 + torch.arange(d3)[:, None]
                col += d3
            # float64 constants: module.to(dtype) rounds them once, to whatever dtype the model takes
            self.register_buffer(f"coupling_{b}", coupling.reshape(irreps_sh.dim, cols * m1), False)
            self.register_buffer(f"path_of_col_{b}", path_of_col, persistent=False)
            self.register_buffer(f"out_map_{b}", o_index.reshape(-1).to(torch.int32), persistent=False)
            self.blocks.append(
                {"id": b, "in_slice": in_slices[b], "mul": mul, "m1": m1, "cols": cols, "n_paths": len(paths)}
            )
            out_index.append(o_index.reshape(-1))
            path_order.append(torch.cat(path_columns))

        # per block, the columns of the spline table to read, one per (path, u); the tables
        # themselves are gathered from the radial's current parameters at every call
        for blk, porder in zip(self.blocks, path_order):
            self.register_buffer(f"path_table_columns_{blk['id']}", porder, persistent=False)
        self.r_max = radial.r_max
        self.n_intervals = radial.n_intervals
        #: pure-torch path: largest per-edge message tensor (entries) computed at once
        self.max_chunk_elements = 2**28
        #: fused path: largest per-edge coupling A of one block (entries) formed at once
        #: (2**24: 64 MiB in float32); bounds the step's per-edge memory, see _FusedConvolution
        self.max_fused_chunk_elements = 2**24
        self._derived = DerivedCache()  # per block: the table's columns, while the table is frozen
        fast_index = torch.cat(out_index)
        if sorted(fast_index.tolist()) != list(range(self.irreps_out.dim)):
            raise ValueError("fast convolution layout does not cover the tensor-product output")
        to_e3nn = torch.empty_like(fast_index)
        to_e3nn[fast_index] = torch.arange(fast_index.numel())
        self.register_buffer("to_e3nn", to_e3nn, persistent=False)

    def forward(self, x: torch.Tensor, sh: torch.Tensor, r: torch.Tensor, senders: torch.Tensor,
                receivers: torch.Tensor, table: torch.Tensor, use_kernel: bool = True,
                edges: EdgeContext | None = None, n_rows: int | None = None) -> torch.Tensor:  # fmt: skip
        """``table``: the radial's ``(2 * n_knots, n_out)`` table (``SplineRadial.table()``).
        ``use_kernel``: run the fused kernel when one serves ``x.device`` (see ``nn.backend``);
        it needs edges sorted by receiver, gives no gradient for ``table`` and is differentiable
        once; the torch path is differentiable twice. ``edges``: the per-edge work shared by
        the layers of one model evaluation (built here when not given). ``n_rows``: rows of
        the output (default all of ``x``'s; every receiver must be below it)."""
        n_rows = x.shape[0] if n_rows is None else n_rows
        if edges is None:
            edges = EdgeContext(x.shape[0], senders, receivers, r)
        kernel = kernel_launcher(x.device) if use_kernel else None
        if kernel is not None:
            if not edges.sorted_by_receiver:
                # the fused kernel walks receivers in order; the torch path gives the same numbers
                warnings.warn(
                    "edges are not sorted by receiver, so the fused convolution kernel cannot run and the "
                    "slower pure-torch path does; build graphs with facet_calc.graph.build_graph (sorted)",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                if table.requires_grad and torch.is_grad_enabled():
                    raise RuntimeError(
                        "the fused convolution kernel gives no gradients for the spline tables; "
                        "train with model.set_backend('torch') (facet_calc.train does this)"
                    )
                return self._fused(kernel, x, sh, edges, table, n_rows)
        outputs = self._tensor_ops(x, sh, edges, table, n_rows)
        return torch.cat(outputs, dim=1).index_select(1, self.to_e3nn) / self.denominator

    def _tensor_ops(self, x, sh, edges: EdgeContext, table, n_rows: int) -> list[torch.Tensor]:
        """Pure-torch path (any device): per-edge messages, then index_add.

        Edges are processed in chunks of at most ``max_chunk_elements`` message entries; when
        there is more than one chunk, each is recomputed in the backward pass instead of kept
        (activation checkpointing), so memory stays bounded for large systems on GPUs.
        """
        senders, receivers = edges.senders, edges.receivers
        rows, beta = edges.spline_basis(self.n_intervals, self.r_max)
        n_edges, n_nodes = rows.shape[0], n_rows
        outputs = []
        for block in self.blocks:
            mul, m1, cols = block["mul"], block["m1"], block["cols"]
            # the spline is evaluated per (path, u), (E, n_paths * mul), and spread over the
            # path's columns afterwards: per (column, u) it would be cols / n_paths times the
            # work, forward and in both backward passes of force training
            block_table = table.index_select(1, getattr(self, f"path_table_columns_{block['id']}"))
            coupling = getattr(self, f"coupling_{block['id']}")
            xb = x[:, block["in_slice"]]
            chunk = max(1, self.max_chunk_elements // (cols * mul))
            out = x.new_zeros((n_nodes, cols * mul))
            for start in range(0, n_edges, chunk):
                part = slice(start, min(start + chunk, n_edges))
                args = (xb, sh[part], rows[part], beta[part], senders[part], receivers[part], block_table,
                        coupling, getattr(self, f"path_of_col_{block['id']}"), (mul, m1, cols, n_rows))  # fmt: skip
                if chunk < n_edges and torch.is_grad_enabled():
                    out = out + checkpoint(self._block_messages, *args, use_reentrant=False)
                else:
                    out = out + self._block_messages(*args)
            outputs.append(out)
        return outputs

    def _block_messages(self, xb, sh, rows, beta, senders, receivers, table, coupling, path_of_col, dims
                        ) -> torch.Tensor:  # fmt: skip
        """Sum over the given edges of one block's messages, ``(n_rows, cols * mul)``; ``table``
        holds the block's ``(path, u)`` columns, ``path_of_col (cols)`` each column's path."""
        mul, m1, cols, n_rows = dims
        n_edges = rows.shape[0]
        w = spline_from_basis(rows, beta, table).view(n_edges, -1, mul)  # (E, n_paths, mul)
        if w.shape[1] > 1:
            w = w.index_select(1, path_of_col.long())  # (E, cols, mul)
        a = (sh @ coupling).view(n_edges, cols, m1)
        xj = xb[senders].view(n_edges, mul, m1)
        if m1 == 1:
            t = a * xj.transpose(1, 2)  # (E, cols, 1) * (E, 1, mul): outer product
        else:
            t = torch.bmm(a, xj.transpose(1, 2))  # (E, cols, mul)
        msg = (t * w).reshape(n_edges, cols * mul)  # (w broadcasts over the columns of a single path)
        return xb.new_zeros((n_rows, cols * mul)).index_add_(0, receivers, msg)

    def _fused(self, backend, x, sh, edges: EdgeContext, table, n_rows: int) -> torch.Tensor:
        """Fused kernel (edges sorted by receiver): per-edge messages are never materialised,
        and each block is written straight into e3nn's output layout."""
        rows, beta = edges.spline_basis(self.n_intervals, self.r_max)
        # the blocks' arguments, with each block's table columns: reused while the table is the
        # same frozen one and the constants are where they were (one check for all blocks)
        sources = (table, *(getattr(self, f"{k}_{b['id']}") for b in self.blocks for k in _BLOCK_BUFFERS))
        blocks = self._derived.get("blocks", sources, lambda: self._kernel_blocks(table))
        static = (backend, edges.index, rows, blocks, (n_rows, self.irreps_out.dim),
                  1.0 / self.denominator, self.max_fused_chunk_elements)  # fmt: skip
        return _FusedConvolution.apply(beta, sh, x, static)

    def _kernel_blocks(self, table: torch.Tensor) -> list[tuple]:
        """Per block, what the fused kernels take: input columns, coupling, the block's columns
        of ``table``, column paths, output map and ``(mul, m1, cols, n_paths)``."""
        blocks = []
        for block in self.blocks:
            b = block["id"]
            blocks.append((
                block["in_slice"],
                getattr(self, f"coupling_{b}"),
                table.index_select(1, getattr(self, f"path_table_columns_{b}")).contiguous(),
                getattr(self, f"path_of_col_{b}"),
                getattr(self, f"out_map_{b}"),
                (block["mul"], block["m1"], block["cols"], block["n_paths"]),
            ))  # fmt: skip
        return blocks


#: the per-block constants the kernels read (buffers of FastSplineConvolution, suffixed with the block id)
_BLOCK_BUFFERS = ("coupling", "path_table_columns", "path_of_col", "out_map")


class EdgeContext:
    """The per-edge work of one model evaluation that every layer needs, done once and shared:
    whether the edges are sorted by receiver (on CUDA a host synchronisation), their CSR
    offsets (:class:`_EdgeIndex`), and the spline basis of ``r`` per knot grid (``rows`` and
    ``beta`` of :func:`~facet_calc.nn.blocks.radial.spline_basis`, the same for every layer whose table
    has the same ``n_intervals`` and ``r_max``). Each is computed on first use.

    Args:
        n_nodes: number of atoms. senders, receivers: ``(n_edges,)`` int64.
        r: ``(n_edges,)`` edge lengths in A (the basis is differentiable with respect to it).

    Build it inside the model's forward, where gradient mode is that of the layers; it holds
    tensors of that evaluation only and is dropped with it.
    """

    def __init__(self, n_nodes: int, senders: torch.Tensor, receivers: torch.Tensor, r: torch.Tensor) -> None:
        self.n_nodes = n_nodes
        self.senders = senders
        self.receivers = receivers
        self.r = r
        self._sorted: bool | None = None
        self._index: _EdgeIndex | None = None
        self._basis: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}
        self._shared: dict = {}

    def shared(self, key, make, *args):
        """``make(*args)``, computed once per evaluation for ``key`` and the very same ``args``
        (other per-evaluation work the layers share, e.g. the grouping of atoms by species);
        other arguments under the same key are computed afresh and replace the entry."""
        hit = self._shared.get(key)
        if hit is None or len(hit[0]) != len(args) or any(a is not b for a, b in zip(hit[0], args)):
            hit = (args, make(*args))  # (holding args: their ids stay theirs)
            self._shared[key] = hit
        return hit[1]

    @property
    def sorted_by_receiver(self) -> bool:
        if self._sorted is None:
            self._sorted = bool((self.receivers[1:] >= self.receivers[:-1]).all())
        return self._sorted

    @property
    def index(self) -> _EdgeIndex:
        if self._index is None:
            self._index = _EdgeIndex(self.n_nodes, self.senders, self.receivers)
        return self._index

    def spline_basis(self, n_intervals: int, r_max: float) -> tuple[torch.Tensor, torch.Tensor]:
        key = (int(n_intervals), float(r_max))
        if key not in self._basis:
            self._basis[key] = self._make_basis(n_intervals, r_max)
        return self._basis[key]

    def with_lengths(self, r: torch.Tensor) -> EdgeContext:
        """A context for the same edges with other lengths ``r`` (a committee member's own copy):
        sortedness and CSR offsets shared, the spline basis its own."""
        other = EdgeContext(self.n_nodes, self.senders, self.receivers, r)
        other._sorted, other._index = self.sorted_by_receiver, self.index
        return other

    def set_spline_basis(self, n_intervals: int, r_max: float, rows: torch.Tensor, beta: torch.Tensor) -> None:
        """Hand over ``(rows, beta)`` of one knot grid, computed elsewhere (for several contexts at once)."""
        self._basis[(int(n_intervals), float(r_max))] = (rows, beta)

    def _make_basis(self, n_intervals: int, r_max: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, beta)`` of one knot grid (a driver that differentiates layer by layer
        overrides this to hand out leaves)."""
        return spline_basis(self.r, n_intervals, r_max)


class _EdgeIndex:
    """CSR views of an edge list sorted by receiver: receiver offsets, and edges by sender."""

    def __init__(self, n_nodes: int, senders: torch.Tensor, receivers: torch.Tensor) -> None:
        self.recv_ptr = _offsets(receivers, n_nodes)
        self.send_ptr = _offsets(senders, n_nodes)
        self.by_sender = _edges_by_sender(senders, self.send_ptr)
        self.n_nodes = n_nodes
        self.senders = senders.contiguous()
        self.receivers = receivers.contiguous()
        self.n_edges = int(senders.shape[0])
        self._by_sender_rows: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._whole: dict[tuple[str, int], _LocalEdges] = {}

    def whole(self, order: str, n_rows: int | None = None) -> _LocalEdges:
        """The kernels' CSR fields for all edges at once, shared by the layers: ``order
        "receivers"`` (forward, the first ``n_rows`` receivers) or ``"senders"`` (backward, on
        the sender-ordered copies of the per-edge arrays, :meth:`sender_ordered`: read in
        place through the global edge ids, a large system's backward kernel was ~10 % slower,
        its edges' rows scattered in memory)."""
        key = (order, self.n_nodes if n_rows is None else int(n_rows))
        local = self._whole.get(key)
        if local is None:
            if order == "receivers":
                local = _LocalEdges(n_nodes=key[1], recv_ptr=self.recv_ptr, senders=self.senders)
            else:
                local = _LocalEdges(n_nodes=self.n_nodes, send_ptr=self.send_ptr,
                                    by_sender=torch.arange(self.n_edges, device=self.senders.device),
                                    receivers=self.sender_ordered(self.receivers, 0, self.n_edges))  # fmt: skip
            self._whole[key] = local
        return local

    #: up to this many edges the sender-ordered gathers are kept for the evaluation's other
    #: layers (small systems, where each operation's fixed cost matters); above, each layer
    #: gathers again, so the step's peak memory does not grow by ~90 bytes per edge
    keep_gathers_below = 2**16

    def sender_ordered(self, values: torch.Tensor, q0: int, q1: int) -> torch.Tensor:
        """``values`` (per edge) at the edges ``by_sender[q0:q1]``: the layers of one evaluation
        gather the same spherical harmonics, spline basis and receivers, so each once."""
        if self.senders.shape[0] > self.keep_gathers_below:
            return values.index_select(0, self.by_sender[q0:q1])
        key = (id(values), q0, q1)
        hit = self._by_sender_rows.get(key)
        if hit is None or hit[0] is not values:  # (the entry holds values: its id stays unique)
            hit = (values, values.index_select(0, self.by_sender[q0:q1]))
            self._by_sender_rows[key] = hit
        return hit[1]


def _edges_by_sender(senders: torch.Tensor, send_ptr: torch.Tensor) -> torch.Tensor:
    """Edge ids grouped by sender, in edge order within a sender: ``torch.argsort(senders,
    stable=True)``, by the compiled counting sort where the CPU kernel is loaded (~30 us instead
    of ~0.7 ms for 28000 edges)."""
    backend = kernel_launcher(senders.device) if senders.device.type == "cpu" else None
    if backend is not None and senders.dtype == torch.int64 and hasattr(backend, "edges_by_sender"):
        return backend.edges_by_sender(senders, send_ptr)
    return torch.argsort(senders, stable=True)


def _offsets(index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    ptr = torch.zeros(n_nodes + 1, dtype=torch.int64, device=index.device)
    torch.cumsum(torch.bincount(index, minlength=n_nodes), 0, out=ptr[1:])
    return ptr


class _FusedConvolution(torch.autograd.Function):
    """out (N, dim_out) in e3nn layout from the spherical harmonics sh (E, dim_sh), the node
    features x (N, dim_in) in e3nn layout, and the spline coefficients beta (E, 4); ``backend``
    runs the kernels, one input block at a time on x^T (N, m1, mul).

    The compiled CPU kernels form each edge's coupling ``A = sh @ coupling`` themselves, in
    cache, and add the gradient of sh (``backend.fuses_coupling``). For the other backends, each
    block's ``A`` (E, cols, m1) is formed here for one chunk of edges at a time, in the forward
    pass and again in the backward pass, never for all edges at once and never kept: kept, it
    would be the largest tensor of a step (about 2 KB per edge for 7net-0 in float32). Forward
    chunks are ranges of receivers (contiguous edges); backward chunks are ranges of senders,
    whose edges are gathered into a local, sender-ordered list once for all blocks, so the
    kernels accumulate node gradients without write conflicts. The
    gradient of x is written block by block into one (N, dim_in) tensor (autograd's split of x
    into blocks would add a concatenation and zero-filled slices).
    """

    @staticmethod
    def forward(ctx, beta, sh, x, static):
        backend, graph, rows, blocks, dim_out, scale, budget = static
        beta, sh = beta.contiguous(), sh.contiguous()
        n_nodes = x.shape[0]
        xts = [x[:, in_slice].view(n_nodes, dims[0], dims[1]).transpose(1, 2).contiguous()
               for in_slice, *_, dims in blocks]  # fmt: skip
        out = beta.new_empty(dim_out)  # (n_rows, dim): receivers are the first n_rows nodes
        width = max(dims[2] * dims[1] for *_, dims in blocks)  # cols * m1: A's entries per edge
        fused = getattr(backend, "fuses_coupling", False)  # then no A is formed here
        if fused and graph.n_edges <= budget // width:  # one chunk: the whole edge list as it is
            local = graph.whole("receivers", dim_out[0])
            for xt, (_, coupling, table, path_of_col, out_map, dims) in zip(xts, blocks):
                backend.forward_block(local, sh, coupling, xt, rows, beta, table, path_of_col, out_map, dims, out,
                                      scale)  # fmt: skip
            ctx.save_for_backward(beta, sh, *xts)
            ctx.static = static
            ctx.x_shape = x.shape
            return out
        for n0, n1 in _node_chunks(graph.recv_ptr[: dim_out[0] + 1], budget // width):
            e0, e1 = int(graph.recv_ptr[n0]), int(graph.recv_ptr[n1])
            local = _LocalEdges(
                n_nodes=n1 - n0, recv_ptr=graph.recv_ptr[n0 : n1 + 1] - e0, senders=graph.senders[e0:e1]
            )
            for xt, (_, coupling, table, path_of_col, out_map, dims) in zip(xts, blocks):
                mul, m1, cols, _ = dims
                if fused:  # the kernel forms A edge by edge, in cache
                    backend.forward_block(local, sh[e0:e1], coupling, xt, rows[e0:e1], beta[e0:e1], table,
                                          path_of_col, out_map, dims, out[n0:n1], scale)  # fmt: skip
                    continue
                a = (sh[e0:e1] @ coupling).view(e1 - e0, cols, m1)
                backend.forward_block(local, a, xt, rows[e0:e1], beta[e0:e1], table, path_of_col, out_map, dims,
                                      out[n0:n1], scale)  # fmt: skip
        ctx.save_for_backward(beta, sh, *xts)
        ctx.static = static
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            # create_graph=True: the kernels' backward is not itself differentiable, and
            # returning its result as if it were would give wrong second derivatives
            raise RuntimeError(
                "the fused convolution kernel is differentiable once: second derivatives (force "
                "training, Hessians, create_graph=True) need model.set_backend('torch')"
            )
        beta, sh, *xts = ctx.saved_tensors
        backend, graph, rows, blocks, dim_out, scale, budget = ctx.static
        # the output's scale is applied to the (small) gradients of the inputs at the end, not to
        # grad_out: a scaled copy of grad_out, the widest tensor of the step, cost more than the
        # kernels' work on it (a fresh allocation of its size, page faults included)
        width = max(dims[2] * dims[1] for *_, dims in blocks)
        single = graph.n_edges <= budget // width
        # one chunk: its edges are all the edges, each once, so the sender-ordered gradients are
        # copied back into edge order; chunks add theirs into zeros
        grad_sh = torch.empty_like(sh) if single else torch.zeros_like(sh)
        # zeros only where some input columns feed no block (their gradient is zero)
        grad_x = (grad_out.new_zeros if _leaves_gaps(blocks, ctx.x_shape[1]) else grad_out.new_empty)(ctx.x_shape)
        grad_xts = [torch.empty_like(xt) for xt in xts]
        # each block's output gradient in block layout (N, cols, mul): reading it through the
        # column map for every edge would be slower than one gather here
        grad_blocks = [grad_out.index_select(1, out_map) for *_, out_map, _ in blocks]
        fused = getattr(backend, "fuses_coupling", False)
        grad_beta = torch.empty_like(beta) if single else torch.zeros_like(beta)
        for n0, n1 in [(0, graph.n_nodes)] if single else _node_chunks(graph.send_ptr, budget // width):
            if single:  # all edges: the CSR fields are the evaluation's, shared by the layers
                q0, q1, local = 0, graph.n_edges, graph.whole("senders")
            else:
                q0, q1 = int(graph.send_ptr[n0]), int(graph.send_ptr[n1])
                local = _LocalEdges(
                    n_nodes=n1 - n0,
                    send_ptr=graph.send_ptr[n0 : n1 + 1] - q0,
                    by_sender=torch.arange(q1 - q0, device=sh.device),
                    receivers=graph.sender_ordered(graph.receivers, q0, q1),
                )
            edges = graph.by_sender[q0:q1]  # this chunk's edges, grouped by sender
            k = q1 - q0
            sh_k, rows_k, beta_k = (graph.sender_ordered(t, q0, q1) for t in (sh, rows, beta))
            grad_sh_k = sh.new_zeros((k, sh.shape[1]))
            grad_beta_k = beta.new_zeros((k, 4))
            part = beta.new_empty((k, 4))
            for xt, grad_xt, grad_block, (_, coupling, table, path_of_col, _, dims) in zip(
                xts, grad_xts, grad_blocks, blocks
            ):
                mul, m1, cols, _ = dims
                if fused:  # A and its gradient are formed in the kernel; grad_sh_k accumulates there
                    backend.backward_block(local, sh_k, coupling, xt[n0:n1], rows_k, beta_k, table, path_of_col,
                                           dims, grad_block, grad_sh_k, grad_xt[n0:n1], part)  # fmt: skip
                    grad_beta_k += part
                    continue
                a = (sh_k @ coupling).view(k, cols, m1)
                grad_a = torch.empty_like(a)
                backend.backward_block(local, a, xt[n0:n1], rows_k, beta_k, table, path_of_col, dims, grad_block,
                                       grad_a, grad_xt[n0:n1], part)  # fmt: skip
                grad_sh_k.addmm_(grad_a.view(k, cols * m1), coupling.transpose(0, 1))
                grad_beta_k += part
            if single:
                grad_sh.index_copy_(0, edges, grad_sh_k)
                grad_beta.index_copy_(0, edges, grad_beta_k)
            else:
                grad_sh.index_add_(0, edges, grad_sh_k)
                grad_beta.index_add_(0, edges, grad_beta_k)
        grad_x = _assemble_grad_x(grad_x, grad_xts, blocks)
        for grad in (grad_beta, grad_sh, grad_x):
            grad.mul_(scale)
        return grad_beta, grad_sh, grad_x, None


def _assemble_grad_x(grad_x: torch.Tensor, grad_xts: list[torch.Tensor], blocks) -> torch.Tensor:
    """Each block's gradient ``(N, m1, mul)`` written into its columns of ``grad_x`` (e3nn layout)."""
    n_nodes = grad_x.shape[0]
    for grad_xt, (in_slice, *_, dims) in zip(grad_xts, blocks):
        grad_x[:, in_slice].view(n_nodes, dims[0], dims[1]).copy_(grad_xt.transpose(1, 2))
    return grad_x


def _leaves_gaps(blocks, dim_in: int) -> bool:
    """Whether some input columns belong to no block (no path uses them: zero gradient)."""
    return sum(s.stop - s.start for s, *_ in blocks) != dim_in


class _LocalEdges:
    """The CSR fields the kernels read, for one chunk of nodes (indices local to the chunk)."""

    def __init__(self, n_nodes, recv_ptr=None, senders=None, send_ptr=None, by_sender=None, receivers=None):
        self.n_nodes = n_nodes
        self.recv_ptr, self.senders = recv_ptr, senders
        self.send_ptr, self.by_sender, self.receivers = send_ptr, by_sender, receivers


def _node_chunks(ptr: torch.Tensor, max_edges: int) -> list[tuple[int, int]]:
    """Consecutive node ranges ``[n0, n1)`` whose edges (``ptr`` is a CSR offset array) number
    at most ``max_edges`` each, except that a node is never split. One range when all fit."""
    n_nodes, n_edges = ptr.shape[0] - 1, int(ptr[-1])
    max_edges = max(1, int(max_edges))
    if n_edges <= max_edges:
        return [(0, n_nodes)]
    targets = torch.arange(max_edges, n_edges, max_edges, dtype=ptr.dtype, device=ptr.device)
    cuts = torch.searchsorted(ptr, targets, right=True) - 1  # last node starting at or before each target
    bounds = sorted({0, n_nodes, *cuts.clamp(0, n_nodes).tolist()})
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def stacked_kernel_blocks(conv: FastSplineConvolution, tables: list[torch.Tensor], backend) -> list[tuple] | None:
    """The fused CPU kernel's blocks for K members of one convolution layout stacked along the
    channels (:class:`StackedFusedConvolution`), or ``None`` where the kernel cannot stack them
    (a block's channels straddle its vectors, or the backend does not stack).

    ``tables``: each member's radial table ``(2 * n_knots, n_out)``. Per block: input columns,
    coupling, the stacked table ``(R, n_paths * K * mul)`` with columns ``(path, member, u)``,
    column paths, the output map ``(cols * K * mul)`` into ``(N, K * dim_out)`` (member ``k``'s
    outputs at offset ``k * dim_out``) and ``(mul, m1, cols, n_paths)`` of one member."""
    if not getattr(backend, "fuses_coupling", False) or not hasattr(backend, "can_stack"):
        return None
    k, dim_out = len(tables), conv.irreps_out.dim
    blocks = []
    for block in conv.blocks:
        b, mul, m1, cols, n_paths = block["id"], block["mul"], block["m1"], block["cols"], block["n_paths"]
        if not backend.can_stack(mul, m1, tables[0].dtype):
            return None
        columns = getattr(conv, f"path_table_columns_{b}")
        table = torch.stack([t.index_select(1, columns).view(t.shape[0], n_paths, mul) for t in tables], dim=2)
        out_map = getattr(conv, f"out_map_{b}").view(cols, 1, mul).long()
        out_map = out_map + dim_out * torch.arange(k, device=out_map.device).view(1, k, 1)
        blocks.append((
            block["in_slice"], getattr(conv, f"coupling_{b}"), table.reshape(table.shape[0], -1).contiguous(),
            getattr(conv, f"path_of_col_{b}"), out_map.reshape(-1).to(torch.int32), (mul, m1, cols, n_paths),
        ))  # fmt: skip
    return blocks


class StackedFusedConvolution(torch.autograd.Function):
    """K members' convolutions of one layout in one pass of the fused CPU kernel, their
    channels stacked: ``out (K, N, dim_out)`` from ``beta (K, E, 4)``, ``sh (K, E, dim_sh)``
    (each member's own copy of the same values, so each gets its own gradient) and ``x (K, N,
    dim_in)``, with ``blocks`` from :func:`stacked_kernel_blocks`. The edge loop, the per-edge
    coupling and the spline rows run once for all members; the gradients of ``sh`` and ``beta``
    are per member (the kernel's ``members`` argument), the members never mix.

    ``static``: ``(backend, index, rows, blocks, scale)`` with ``index`` the edges' CSR views
    (:class:`_EdgeIndex`, receivers sorted) and ``rows (E, 4)`` the spline rows (shared)."""

    @staticmethod
    def forward(ctx, beta, sh, x, static):
        backend, graph, rows, blocks, scale = static
        k, n_nodes = x.shape[0], x.shape[1]
        sh0, beta0 = sh[0].contiguous(), beta[0].contiguous()
        # each block's features (N, m1, K * mul), channels (member, u)
        xts = [x[:, :, in_slice].view(k, n_nodes, dims[0], dims[1]).permute(1, 3, 0, 2)
               .reshape(n_nodes, dims[1], k * dims[0]) for in_slice, *_, dims in blocks]  # fmt: skip
        dim_out = _stacked_dim_out(blocks, k)
        out = beta.new_empty((n_nodes, k * dim_out))
        local = graph.whole("receivers", n_nodes)
        for xt, (_, coupling, table, path_of_col, out_map, (mul, m1, cols, n_paths)) in zip(xts, blocks):
            backend.forward_block(local, sh0, coupling, xt, rows, beta0, table, path_of_col, out_map,
                                  (k * mul, m1, cols, n_paths), out, scale)  # fmt: skip
        ctx.save_for_backward(beta0, sh0, *xts)
        ctx.static = static
        ctx.x_shape = x.shape
        ctx.dim_out = dim_out
        return out.view(n_nodes, k, dim_out).transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError("the fused convolution kernel is differentiable once (see _FusedConvolution)")
        beta0, sh0, *xts = ctx.saved_tensors
        backend, graph, rows, blocks, scale = ctx.static
        k, n_nodes, dim_in = ctx.x_shape
        n_edges = sh0.shape[0]
        flat = (grad_out.transpose(0, 1) * scale).reshape(n_nodes, k * ctx.dim_out)
        local = graph.whole("senders")
        sh_s, rows_s, beta_s = (graph.sender_ordered(t, 0, n_edges) for t in (sh0, rows, beta0))
        grad_sh_s = sh0.new_zeros((k, n_edges, sh0.shape[1]))
        grad_beta_s = beta0.new_zeros((k, n_edges, 4))
        part = beta0.new_empty((k, n_edges, 4))
        grad_x = grad_out.new_zeros((k, n_nodes, dim_in))
        for xt, (in_slice, coupling, table, path_of_col, out_map, dims) in zip(xts, blocks):
            mul, m1 = dims[0], dims[1]
            grad_xt = torch.empty_like(xt)
            backend.backward_block(local, sh_s, coupling, xt, rows_s, beta_s, table, path_of_col, dims,
                                   flat.index_select(1, out_map), grad_sh_s, grad_xt, part, members=k)  # fmt: skip
            grad_beta_s += part
            # (N, m1, K * mul) -> the members' columns (K, N, mul * m1) in e3nn layout
            member_grads = grad_xt.view(n_nodes, m1, k, mul).permute(2, 0, 3, 1)
            grad_x[:, :, in_slice].view(k, n_nodes, mul, m1).copy_(member_grads)
        order = graph.by_sender
        grad_sh = torch.empty_like(grad_sh_s).index_copy_(1, order, grad_sh_s)
        grad_beta = torch.empty_like(grad_beta_s).index_copy_(1, order, grad_beta_s)
        return grad_beta, grad_sh, grad_x, None


def _stacked_dim_out(blocks, k: int) -> int:
    """The width of one member's output: every output column is written by exactly one block."""
    return sum(out_map.numel() for *_, out_map, _ in blocks) // k
