"""The fused spline-weighted 'uvu' convolution on CUDA GPUs, in Triton.

Same algorithm and layouts as ``spline_conv.cpp`` (see there): one program per receiver in the
forward pass, one per sender in the backward pass, per-edge messages never stored. The small
contractions over m1 use ``tl.dot`` on tiles padded to 16, in IEEE precision (no TF32).
Imported only where Triton and a CUDA device are present.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tile_weights(table, rows, beta, e, wcol, mask2, BLOCK_C: tl.constexpr, BLOCK_U: tl.constexpr, width):
    # w[col, u] = sum_c beta[e, c] * table[rows[e, c], path_of_col[col] * mul + u]
    w = tl.zeros((BLOCK_C, BLOCK_U), dtype=table.dtype.element_ty)
    for c in tl.static_range(4):
        row = tl.load(rows + 4 * e + c)
        b = tl.load(beta + 4 * e + c)
        w += b * tl.load(table + row * width + wcol, mask=mask2, other=0.0)
    return w


@triton.jit
def _forward_kernel(recv_ptr, senders, A, X, rows, beta, table, path_of_col, out_map, out, scale_ptr,
                    out_stride, width, MUL: tl.constexpr, M1: tl.constexpr, COLS: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    i = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    us = tl.arange(0, BLOCK_U)
    ms = tl.arange(0, BLOCK_M)
    cmask, umask, mmask = cols < COLS, us < MUL, ms < M1
    mask2 = cmask[:, None] & umask[None, :]
    wcol = tl.load(path_of_col + cols, mask=cmask, other=0)[:, None] * MUL + us[None, :]
    h = tl.zeros((BLOCK_C, BLOCK_U), dtype=table.dtype.element_ty)
    start = tl.load(recv_ptr + i)
    end = tl.load(recv_ptr + i + 1)
    for e in range(start, end):
        j = tl.load(senders + e)
        w = _tile_weights(table, rows, beta, e, wcol, mask2, BLOCK_C, BLOCK_U, width)
        a = tl.load(A + e * COLS * M1 + cols[:, None] * M1 + ms[None, :], mask=cmask[:, None] & mmask[None, :],
                    other=0.0)  # fmt: skip
        x = tl.load(X + j * M1 * MUL + ms[:, None] * MUL + us[None, :], mask=mmask[:, None] & umask[None, :],
                    other=0.0)  # fmt: skip
        t = tl.dot(a, x, input_precision="ieee")
        h += t * w
    omap = tl.load(out_map + cols[:, None] * MUL + us[None, :], mask=mask2, other=0)
    scale = tl.load(scale_ptr)  # from memory, in the data's precision (a float argument would be fp32)
    tl.store(out + i * out_stride + omap, h * scale, mask=mask2)


@triton.jit
def _backward_kernel(send_ptr, by_sender, receivers, A, X, rows, beta, table, path_of_col, grad_block,
                     grad_A, grad_X, grad_beta, width, MUL: tl.constexpr, M1: tl.constexpr, COLS: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    j = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    us = tl.arange(0, BLOCK_U)
    ms = tl.arange(0, BLOCK_M)
    cmask, umask, mmask = cols < COLS, us < MUL, ms < M1
    mask2 = cmask[:, None] & umask[None, :]
    amask = cmask[:, None] & mmask[None, :]
    xmask = mmask[:, None] & umask[None, :]
    wcol = tl.load(path_of_col + cols, mask=cmask, other=0)[:, None] * MUL + us[None, :]
    x = tl.load(X + j * M1 * MUL + ms[:, None] * MUL + us[None, :], mask=xmask, other=0.0)  # (BLOCK_M, BLOCK_U)
    gx = tl.zeros((BLOCK_M, BLOCK_U), dtype=table.dtype.element_ty)
    start = tl.load(send_ptr + j)
    end = tl.load(send_ptr + j + 1)
    for q in range(start, end):
        e = tl.load(by_sender + q)
        i = tl.load(receivers + e)
        w = _tile_weights(table, rows, beta, e, wcol, mask2, BLOCK_C, BLOCK_U, width)
        a = tl.load(A + e * COLS * M1 + cols[:, None] * M1 + ms[None, :], mask=amask, other=0.0)
        g = tl.load(grad_block + i * COLS * MUL + cols[:, None] * MUL + us[None, :], mask=mask2, other=0.0)
        t = tl.dot(a, x, input_precision="ieee")
        gw = g * w
        # grad_A[e] = gw @ x^T ; grad_x[j] += A^T @ gw
        ga = tl.dot(gw, tl.trans(x), input_precision="ieee")
        tl.store(grad_A + e * COLS * M1 + cols[:, None] * M1 + ms[None, :], ga, mask=amask)
        gx += tl.dot(tl.trans(a), gw, input_precision="ieee")
        # grad_beta[e, c] = sum table[rows[e, c]] (gathered as w) * t * g
        tg = t * g
        for c in tl.static_range(4):
            row = tl.load(rows + 4 * e + c)
            tc = tl.load(table + row * width + wcol, mask=mask2, other=0.0)
            tl.store(grad_beta + 4 * e + c, tl.sum(tl.sum(tc * tg, axis=1), axis=0))
    tl.store(grad_X + j * M1 * MUL + ms[:, None] * MUL + us[None, :], gx, mask=xmask)


def _blocks(mul: int, m1: int, cols: int) -> dict:
    return {
        "MUL": mul,
        "M1": m1,
        "COLS": cols,
        "BLOCK_C": max(16, triton.next_power_of_2(cols)),
        "BLOCK_U": max(16, triton.next_power_of_2(mul)),
        "BLOCK_M": 16,
    }


class TritonBackend:
    """Per-block forward and backward launches with the same arguments as the CPU backend."""

    @staticmethod
    def forward_block(graph, a, xt, rows, beta, table, path_of_col, out_map, dims, out, scale):
        mul, m1, cols, _ = dims
        scale_t = torch.full((1,), scale, dtype=out.dtype, device=out.device)
        _forward_kernel[(graph.n_nodes,)](
            graph.recv_ptr, graph.senders, a, xt, rows, beta, table, path_of_col, out_map, out, scale_t,
            out.shape[1], table.shape[1], **_blocks(mul, m1, cols), num_warps=4,
        )  # fmt: skip

    @staticmethod
    def backward_block(graph, a, xt, rows, beta, table, path_of_col, dims, grad_block, grad_a, grad_xt, grad_beta):
        mul, m1, cols, _ = dims
        _backward_kernel[(graph.n_nodes,)](
            graph.send_ptr, graph.by_sender, graph.receivers, a, xt, rows, beta, table, path_of_col, grad_block,
            grad_a, grad_xt, grad_beta, table.shape[1], **_blocks(mul, m1, cols), num_warps=4,
        )  # fmt: skip
