"""Spherical harmonics and lengths of the edge vectors as one autograd node.

e3nn's ``SphericalHarmonics`` is a chain of ~25 small operations (normalisation, one product per
polynomial term, a stack), each a node of the autograd graph; with the length, ~30 nodes whose
backward passes are most of a small system's edge-geometry cost. For ``l <= 2`` the polynomials
have short derivatives, written out here: the forward pass runs e3nn's own module (the same
values, bit for bit), the backward pass is one expression.

``edge_geometry(sh_module, edge_vec, one_node)`` -> ``sh (E, dim_sh)``, ``r (E,)`` A.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

_S3, _S5, _S15 = math.sqrt(3.0), math.sqrt(5.0), math.sqrt(15.0)


def edge_geometry(sh_module: torch.nn.Module, edge_vec: torch.Tensor, one_node: bool = False):
    """``(sh_module(edge_vec), |edge_vec|)``; with ``one_node`` (a backend differentiable once)
    as one autograd node where the harmonics are written out here (:func:`one_node_scales`)."""
    scales = one_node_scales(sh_module) if one_node else None
    if scales is None:
        return sh_module(edge_vec), torch.linalg.norm(edge_vec, dim=-1)
    return _EdgeGeometry.apply(edge_vec, sh_module, scales.to(device=edge_vec.device, dtype=edge_vec.dtype))


def one_node_scales(sh_module: torch.nn.Module) -> torch.Tensor | None:
    """The per-column factor of ``sh_module``'s normalisation relative to e3nn's "component"
    one, when it is an ``o3.SphericalHarmonics`` of the orders ``0..lmax`` (``lmax <= 2``) of
    unit vectors; else ``None`` (then the e3nn module runs as it is)."""
    cached = getattr(sh_module, "_facet_one_node_scales", False)
    if cached is not False:
        return cached
    scales = None
    ls = getattr(sh_module, "_ls_list", None)
    if (isinstance(sh_module, o3.SphericalHarmonics) and getattr(sh_module, "normalize", False)
            and ls is not None and ls == list(range(len(ls))) and len(ls) <= 3):  # fmt: skip
        per_l = {"component": lambda l: 1.0, "integral": lambda l: 1.0 / math.sqrt(4 * math.pi),
                 "norm": lambda l: 1.0 / math.sqrt(2 * l + 1)}  # fmt: skip
        per_l = per_l.get(getattr(sh_module, "normalization", None))
        if per_l is not None:
            scales = torch.tensor([per_l(l) for l in ls for _ in range(2 * l + 1)], dtype=torch.float64)
    sh_module._facet_one_node_scales = scales
    return scales


class _EdgeGeometry(torch.autograd.Function):
    """``sh, r`` of ``v (E, 3)``: forward by e3nn's module; backward ``dL/dv = (q - u (u . q)) / r
    + g_r u`` with ``u = v / r`` and ``q = (dY/du)^T g_sh`` (component normalisation, l <= 2)."""

    @staticmethod
    def forward(ctx, v, sh_module, scales):
        r = torch.linalg.norm(v, dim=-1)
        sh = sh_module(v)
        ctx.save_for_backward(v, r, scales)
        return sh, r

    @staticmethod
    def backward(ctx, grad_sh, grad_r):
        v, r, scales = ctx.saved_tensors
        return _grad_edge_vectors(v, r, scales, grad_sh, grad_r), None, None


def _grad_edge_vectors(v, r, scales, grad_sh, grad_r):
    """``dL/dv = (q - u (u . q)) / r + g_r u`` (see :class:`_EdgeGeometry`) for ``v (E, 3)``, ``r
    (E,)``, ``grad_sh (..., E, dim_sh)`` and ``grad_r (..., E)`` (either may be None); leading
    dimensions of the gradients broadcast over the one set of edges."""
    u = v / r.clamp_min(1e-12).unsqueeze(-1)
    if grad_r is not None:
        grad_v = u * grad_r.unsqueeze(-1)
    elif grad_sh is not None:
        grad_v = v.new_zeros((*grad_sh.shape[:-1], 3))
    else:
        return torch.zeros_like(v)
    if grad_sh is None or grad_sh.shape[-1] == 1:  # l = 0 only: constant
        return grad_v
    g = grad_sh * scales
    x, y, z = u.unbind(-1)
    qx, qy, qz = _S3 * g[..., 1], _S3 * g[..., 2], _S3 * g[..., 3]
    if g.shape[-1] > 4:
        g4, g5, g6, g7, g8 = g[..., 4:9].unbind(-1)
        qx = qx + _S15 * (z * g4 + y * g5 - x * g8) - _S5 * x * g6
        qy = qy + _S15 * (x * g5 + z * g7) + 2 * _S5 * y * g6
        qz = qz + _S15 * (x * g4 + y * g7 + z * g8) - _S5 * z * g6
    q = torch.stack((qx, qy, qz), dim=-1)
    radial = (u * q).sum(dim=-1, keepdim=True)
    return grad_v + (q - u * radial) / r.clamp_min(1e-12).unsqueeze(-1)


def member_edge_geometry(sh_module: torch.nn.Module, edge_vec: torch.Tensor, n_intervals: int, r_max: float):
    """The edge geometry of a committee's members, each with its own copy of the same edge
    vectors ``edge_vec (K, E, 3)`` (so that each member's energy has its own gradient):
    ``sh (K, E, dim_sh)``, ``r (K, E)`` A, ``rows (E, 4)`` and ``beta (K, E, 4)`` of the spline
    basis (:func:`~facet_calc.nn.blocks.radial.spline_basis` on ``n_intervals`` over ``[0,
    r_max]``). Where the harmonics are written out here (:func:`one_node_scales`), all of it is
    computed once, for ``edge_vec[0]``, and handed to every member as a broadcast view; one
    autograd node gives each member's gradient. Elsewhere each copy is computed."""
    from .radial import spline_basis

    scales = one_node_scales(sh_module)
    k, n_edges = edge_vec.shape[0], edge_vec.shape[1]
    if scales is None:
        sh = sh_module(edge_vec.reshape(k * n_edges, 3)).view(k, n_edges, -1)
        r = torch.linalg.norm(edge_vec, dim=-1)
        rows, beta = spline_basis(r.reshape(-1), n_intervals, r_max)
        return sh, r, rows[:n_edges], beta.view(k, n_edges, 4)
    scales = scales.to(device=edge_vec.device, dtype=edge_vec.dtype)
    sh, r, beta, rows = _MemberEdgeGeometry.apply(edge_vec, sh_module, scales, n_intervals, r_max)
    return sh, r, rows, beta


class _MemberEdgeGeometry(torch.autograd.Function):
    """``sh, r, beta`` of ``v[0]`` broadcast over the K members, ``rows`` (not differentiable);
    backward: each member's ``dL/dv[k]`` from its own ``grad_sh[k]``, ``grad_r[k]`` and
    ``grad_beta[k]`` (through ``d beta / d r``, the spline basis' derivative)."""

    @staticmethod
    def forward(ctx, v, sh_module, scales, n_intervals, r_max):
        from .radial import spline_basis, spline_basis_slopes

        k = v.shape[0]
        v0 = v[0]
        r0 = torch.linalg.norm(v0, dim=-1)
        sh0 = sh_module(v0)
        rows, beta0 = spline_basis(r0, n_intervals, r_max)
        dbeta = spline_basis_slopes(r0, rows, n_intervals, r_max)
        ctx.save_for_backward(v0, r0, scales, dbeta)
        ctx.mark_non_differentiable(rows)
        return (sh0.expand(k, *sh0.shape), r0.expand(k, *r0.shape), beta0.expand(k, *beta0.shape), rows)

    @staticmethod
    def backward(ctx, grad_sh, grad_r, grad_beta, _grad_rows):
        v0, r0, scales, dbeta = ctx.saved_tensors
        if grad_beta is not None:
            from_beta = (grad_beta * dbeta).sum(-1)
            grad_r = from_beta if grad_r is None else grad_r + from_beta
        return _grad_edge_vectors(v0, r0, scales, grad_sh, grad_r), None, None, None, None
