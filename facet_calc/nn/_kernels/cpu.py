"""Launches of the compiled C++ kernel (``spline_conv.cpp``) through ctypes: the CPU side of
the fused convolution (:mod:`facet_calc.nn.blocks.fast_convolution` calls it)."""

from __future__ import annotations

import ctypes

import torch

from . import kernel_threads


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


class CpuBackend:
    """Launches of the compiled C++ kernel (``_kernels/spline_conv.cpp``) through ctypes."""

    def __init__(self, library: ctypes.CDLL, isa: str = "native") -> None:
        self.library = library
        self.isa = isa  #: the instruction-set level the library was built for

    #: the kernels form each edge's coupling A = Y_e @ coupling themselves (and, backward, the
    #: gradient of Y): the caller passes Y and the coupling, not A
    fuses_coupling = True

    def forward_block(self, graph, sh, coupling, xt, rows, beta, table, path_of_col, out_map, dims, out, scale):
        mul, m1, cols, n_paths = dims
        suffix = {torch.float32: "f32", torch.float64: "f64"}[sh.dtype]
        c_scale = ctypes.c_float(scale) if suffix == "f32" else ctypes.c_double(scale)
        getattr(self.library, f"spline_conv_forward_{suffix}")(
            ctypes.c_int64(graph.n_nodes), mul, m1, cols, n_paths, sh.shape[1],
            _ptr(graph.recv_ptr), _ptr(graph.senders), _ptr(sh), _ptr(coupling), _ptr(xt), _ptr(rows), _ptr(beta),
            _ptr(table), _ptr(path_of_col), _ptr(out), ctypes.c_int64(out.shape[1]), _ptr(out_map), c_scale,
            kernel_threads(),
        )  # fmt: skip

    def backward_block(self, graph, sh, coupling, xt, rows, beta, table, path_of_col, dims, grad_block, grad_sh,
                       grad_xt, grad_beta):  # fmt: skip
        """``grad_sh`` is added to (the blocks of one input sum there); the others are written."""
        mul, m1, cols, n_paths = dims
        suffix = {torch.float32: "f32", torch.float64: "f64"}[sh.dtype]
        getattr(self.library, f"spline_conv_backward_{suffix}")(
            ctypes.c_int64(graph.n_nodes), mul, m1, cols, n_paths, sh.shape[1],
            _ptr(graph.send_ptr), _ptr(graph.by_sender), _ptr(graph.receivers), _ptr(sh), _ptr(coupling), _ptr(xt),
            _ptr(rows), _ptr(beta), _ptr(table), _ptr(path_of_col), _ptr(grad_block),
            _ptr(grad_sh), _ptr(grad_xt), _ptr(grad_beta), kernel_threads(),
        )  # fmt: skip
