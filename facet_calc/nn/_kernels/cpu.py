"""Launches of the compiled C++ kernels through ctypes: the CPU side of the fused convolution
(``spline_conv.cpp``; :mod:`facet_calc.nn.blocks.fast_convolution` calls it), of the frozen
per-order linears (``component_linear.cpp``; :mod:`facet_calc.nn.blocks.fast_linear`), of the
S2 mixer's grid step (``s2_grid.cpp``) and of the periodic neighbour list (``neighbours.cpp``;
:mod:`facet_calc.graph`)."""

from __future__ import annotations

import ctypes

import torch

from . import kernel_threads

_P, _I, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
# the exported signatures (spline_conv.cpp's FACET_EXPORT), declared once so that a launch
# passes plain Python ints (pointers from data_ptr) without building ctypes objects for each
_FORWARD_ARGS = [_L, _I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _L, _P, None, _I]
_BACKWARD_ARGS = [_L, _I, _I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I]
_LINEAR_ARGS = [_I, _L, _I, _I, _P, _L, _P, _P, _L, _I]
_GRID_ARGS = [_I, _L, _I, _I, _I, _P, _P, _P, _P, _P, _I]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_SCALAR = {"f32": ctypes.c_float, "f64": ctypes.c_double}


class CpuBackend:
    """Launches of the compiled C++ kernels (``_kernels/*.cpp``, one library) through ctypes."""

    def __init__(self, library: ctypes.CDLL, isa: str = "native") -> None:
        self.library = library
        self.isa = isa  #: the instruction-set level the library was built for
        self._bound: dict[str, ctypes._CFuncPtr] = {}
        self._vector_bytes: int | None = None

    #: the kernels form each edge's coupling A = Y_e @ coupling themselves (and, backward, the
    #: gradient of Y): the caller passes Y and the coupling, not A
    fuses_coupling = True

    def _bind(self, symbol: str, argtypes: list, restype):
        """The library's ``symbol`` with its signature declared, once per backend."""
        fn = self._bound.get(symbol)
        if fn is None:
            fn = getattr(self.library, symbol)
            fn.argtypes, fn.restype = argtypes, restype
            self._bound[symbol] = fn
        return fn

    def _function(self, pass_: str, dtype: torch.dtype):
        suffix = _SUFFIX[dtype]
        args = _FORWARD_ARGS if pass_ == "forward" else _BACKWARD_ARGS
        return self._bind(f"spline_conv_{pass_}_{suffix}", [_SCALAR[suffix] if a is None else a for a in args],
                          None if pass_ == "forward" else ctypes.c_int)  # fmt: skip

    def forward_block(self, graph, sh, coupling, xt, rows, beta, table, path_of_col, out_map, dims, out, scale):
        mul, m1, cols, n_paths = dims
        self._function("forward", sh.dtype)(
            graph.n_nodes, mul, m1, cols, n_paths, sh.shape[1],
            graph.recv_ptr.data_ptr(), graph.senders.data_ptr(), sh.data_ptr(), coupling.data_ptr(), xt.data_ptr(),
            rows.data_ptr(), beta.data_ptr(), table.data_ptr(), path_of_col.data_ptr(), out.data_ptr(),
            out.shape[1], out_map.data_ptr(), scale, kernel_threads(),
        )  # fmt: skip

    def backward_block(self, graph, sh, coupling, xt, rows, beta, table, path_of_col, dims, grad_block, grad_sh,
                       grad_xt, grad_beta, members: int = 1) -> None:  # fmt: skip
        """``grad_sh`` is added to (the blocks of one input sum there); the others are written.
        ``graph.by_sender`` lists the indices of the edges (rows of ``sh``, ``rows``, ``beta``,
        ``grad_sh``, ``grad_beta``) sender by sender. ``members > 1``: a committee stacked along
        the channels (``dims``' mul is one member's; ``xt``, ``table`` and ``grad_block`` hold
        ``members * mul`` channels, ``grad_sh (members, E, dim_sh)`` and ``grad_beta (members,
        E, 4)`` one gradient per member); only where :meth:`can_stack` says so."""
        mul, m1, cols, n_paths = dims
        status = self._function("backward", sh.dtype)(
            graph.n_nodes, mul, members, m1, cols, n_paths, sh.shape[1],
            graph.send_ptr.data_ptr(), graph.by_sender.data_ptr(), graph.receivers.data_ptr(), sh.data_ptr(),
            coupling.data_ptr(), xt.data_ptr(), rows.data_ptr(), beta.data_ptr(), table.data_ptr(),
            path_of_col.data_ptr(), grad_block.data_ptr(), grad_sh.data_ptr(), grad_xt.data_ptr(),
            grad_beta.data_ptr(), kernel_threads(),
        )  # fmt: skip
        if status != 0:
            raise ValueError(f"the kernel cannot stack {members} members of {mul} channels (see can_stack)")

    def edges_by_sender(self, senders: torch.Tensor, send_ptr: torch.Tensor) -> torch.Tensor:
        """``torch.argsort(senders, stable=True)`` by a counting sort over the CSR offsets
        ``send_ptr (N + 1)`` of the senders (int64, CPU): O(E) instead of a sort."""
        fn = self._bind("edges_by_sender", [_L, _L, _P, _P, _P], ctypes.c_int)
        senders, send_ptr = senders.contiguous(), send_ptr.contiguous()
        out = torch.empty_like(senders)
        if fn(send_ptr.shape[0] - 1, senders.shape[0], senders.data_ptr(), send_ptr.data_ptr(), out.data_ptr()):
            raise ValueError("edges_by_sender: a sender is out of range or the offsets do not match the senders")
        return out

    def component_linear(self, x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, d: int) -> bool:
        """``out (n, c_out d) = x (n, c_in d) @ kron(weight, I_d)`` in e3nn's interleaved layout
        (``out[n, o d + m] = sum_i x[n, i d + m] weight[i, o]``), written in place: ``x`` and
        ``out`` may be column slices of wider tensors (unit column stride), ``weight (c_in, c_out)``
        contiguous, all of one dtype. False (nothing written) where this build has no tile for
        them (see :meth:`linear_fits`)."""
        fn = self._bind(f"component_linear_{_SUFFIX[x.dtype]}", _LINEAR_ARGS, ctypes.c_int)
        c_in, c_out = weight.shape
        if x.stride(1) != 1 or out.stride(1) != 1 or not weight.is_contiguous():
            raise ValueError("component_linear needs unit column strides and a contiguous weight")
        if x.shape[1] != c_in * d or out.shape[1] != c_out * d or x.shape[0] != out.shape[0]:
            raise ValueError(f"component_linear: shapes {tuple(x.shape)}, {tuple(weight.shape)}, "
                             f"{tuple(out.shape)} do not match d = {d}")  # fmt: skip
        return fn(d, x.shape[0], c_in, c_out, x.data_ptr(), x.stride(0), weight.data_ptr(), out.data_ptr(),
                  out.stride(0), kernel_threads()) == 0  # fmt: skip

    def linear_fits(self, d: int, c_out: int, dtype: torch.dtype) -> bool:
        """Whether :meth:`component_linear` has a tile for order ``d = 2l + 1`` and ``c_out``
        output channels (a multiple of the vector's lanes)."""
        return d in (3, 5, 7) and dtype in _SUFFIX and c_out % self.lanes(dtype) == 0

    def grid_silu(self, coeffs: torch.Tensor, grad_back: torch.Tensor | None, values: torch.Tensor,
                  weights: torch.Tensor, out: torch.Tensor) -> bool:
        """The S2 mixer's grid step (``s2_grid.cpp``) on ``coeffs (n, H, K)``: with
        ``grad_back`` None, ``out (n, H K)`` = ``silu(coeffs @ values.T) @ weights`` in e3nn's
        layout of ``H x (0e + 1o + 2e + ...)``; else ``out (n, H, K)`` = its gradient with respect
        to ``coeffs`` for the output gradient ``grad_back (n, H K)`` (e3nn's layout).
        ``values``, ``weights``: ``(G, K)``; all contiguous, one dtype. False (nothing written)
        where this build has no loop for the shapes (:meth:`grid_fits`)."""
        fn = self._bind(f"s2_grid_silu_{_SUFFIX[coeffs.dtype]}", _GRID_ARGS, ctypes.c_int)
        tensors = [coeffs, values, weights, out] + ([] if grad_back is None else [grad_back])
        if not all(t.is_contiguous() and t.dtype == coeffs.dtype for t in tensors):
            raise ValueError("grid_silu needs contiguous tensors of one dtype")
        n, h, k = coeffs.shape
        back_shape = (n, h * k)
        if grad_back is not None and tuple(grad_back.shape) != back_shape:
            raise ValueError(f"grid_silu: grad_back {tuple(grad_back.shape)} is not {back_shape}")
        want = tuple(coeffs.shape) if grad_back is not None else back_shape
        if values.shape != weights.shape or values.shape[1] != k or tuple(out.shape) != want:
            raise ValueError(f"grid_silu: shapes {tuple(coeffs.shape)}, {tuple(values.shape)}, "
                             f"{tuple(weights.shape)}, {tuple(out.shape)} do not match")  # fmt: skip
        back = 0 if grad_back is None else grad_back.data_ptr()
        return fn(int(grad_back is not None), n, h, k, values.shape[0], coeffs.data_ptr(), back, values.data_ptr(),
                  weights.data_ptr(), out.data_ptr(), kernel_threads()) == 0  # fmt: skip

    def grid_fits(self, channels: int, k: int, dtype: torch.dtype) -> bool:
        """Whether :meth:`grid_silu` serves ``channels`` (a multiple of the lanes) functions of
        ``k = (lmax + 1)^2`` coefficients (lmax <= 3) in ``dtype``; never on the baseline build."""
        if dtype not in _SUFFIX or k not in (1, 4, 9, 16):
            return False
        return self.vector_bytes() >= 32 and channels % self.lanes(dtype) == 0

    def periodic_pairs(self, positions, cell, cutoff: float):
        """All directed pairs within ``cutoff`` (A) of a fully periodic cell, receivers ascending
        (``neighbours.cpp``): ``(receivers, senders, shifts, vectors)`` as numpy arrays (int64,
        int64, float64 (E, 3) integer shifts, float64 (E, 3) ``pos[j] - pos[i] + S @ cell``), or
        ``None`` for a singular cell or non-finite positions. ``positions (n, 3)``, ``cell (3,
        3)`` rows, float64."""
        import numpy as np

        fn = self._bind("periodic_neighbour_pairs", [_L, _P, _P, ctypes.c_double, _L, _P, _P, _P, _P], ctypes.c_int64)
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        cell = np.ascontiguousarray(cell, dtype=np.float64)
        n = positions.shape[0]
        volume = abs(float(np.linalg.det(cell)))
        # room for the pairs of a uniform density and a fifth more, at most 512 per atom (a denser
        # cluster, or a cell too thin to hold its atoms, calls again with the exact count)
        expected = n * (4.0 / 3.0 * np.pi * cutoff**3) * n / max(volume, 1e-300)
        capacity = int(min(1.2 * expected, 512.0 * n)) + 64
        for _ in range(2):
            receivers, senders = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
            shifts, vectors = np.empty((capacity, 3)), np.empty((capacity, 3))
            count = fn(n, positions.ctypes.data, cell.ctypes.data, float(cutoff), capacity, receivers.ctypes.data,
                       senders.ctypes.data, shifts.ctypes.data, vectors.ctypes.data)  # fmt: skip
            if count < 0:
                return None
            if count <= capacity:
                return receivers[:count], senders[:count], shifts[:count], vectors[:count]
            capacity = int(count)
        raise RuntimeError("periodic_neighbour_pairs: the pair count changed between two calls")

    def vector_bytes(self) -> int:
        """Bytes in one vector of this build (64 with AVX-512, 32 AVX2, 16 the baseline)."""
        if self._vector_bytes is None:
            self._vector_bytes = int(self._bind("spline_conv_vector_bytes", [], ctypes.c_int)())
        return self._vector_bytes

    def lanes(self, dtype: torch.dtype) -> int:
        """Elements of ``dtype`` in one vector of this build."""
        return self.vector_bytes() // torch.empty((), dtype=dtype).element_size()

    def can_stack(self, mul: int, m1: int, dtype: torch.dtype) -> bool:
        """Whether a committee's members of ``mul`` channels of order ``m1`` each can share one
        backward kernel (a blocked loop, whose vectors must not straddle two members)."""
        lanes = self.lanes(dtype)
        if m1 not in (1, 3, 5, 7):
            return False
        return mul % lanes == 0 or (lanes >= 4 and mul % (lanes // 2) == 0)
