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
        u = v / r.clamp_min(1e-12).unsqueeze(1)
        grad_v = u * grad_r.unsqueeze(1) if grad_r is not None else torch.zeros_like(v)
        if grad_sh is None or grad_sh.shape[1] == 1:  # l = 0 only: constant
            return grad_v, None, None
        g = grad_sh * scales
        x, y, z = u.unbind(1)
        qx, qy, qz = _S3 * g[:, 1], _S3 * g[:, 2], _S3 * g[:, 3]
        if g.shape[1] > 4:
            g4, g5, g6, g7, g8 = g[:, 4:9].unbind(1)
            qx = qx + _S15 * (z * g4 + y * g5 - x * g8) - _S5 * x * g6
            qy = qy + _S15 * (x * g5 + z * g7) + 2 * _S5 * y * g6
            qz = qz + _S15 * (x * g4 + y * g7 + z * g8) - _S5 * z * g6
        q = torch.stack((qx, qy, qz), dim=1)
        radial = (u * q).sum(dim=1, keepdim=True)
        return grad_v + (q - u * radial) / r.clamp_min(1e-12).unsqueeze(1), None, None
