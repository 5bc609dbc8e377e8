"""Facet's spherical-grid mixing layer: irreps -> functions on a sphere grid -> MLP -> irreps.

Each of ``C`` channels holds the coefficients ``c (C, (lmax+1)^2)`` of a function on the unit
sphere, ``f_c(u) = sum_lm c_lm Y_lm(u)``. The mixer evaluates all ``C`` functions at the points
``u_g`` of a grid, applies one small MLP across channels at every point (the same MLP at every
point, so that rotating the input rotates the functions and the MLP commutes with that up to
the grid's resolution), and projects back onto the harmonics ``l <= lmax`` by quadrature::

    c (N, C, K)  --to_grid (K, G)-->  f (N, C, G)  --MLP over C-->  f' (N, C, G)  --from_grid (G, K)-->  c'

Both projections are dense matrices built once (``K = (lmax+1)^2``, ``G`` grid points). The
grid is a Lebedev rule (``scipy.integrate.lebedev_rule``): it is symmetric under the octahedral
group and under inversion, so the mixer is exactly inversion-equivariant for the irreps of a
function on the sphere (``l`` with parity ``(-1)^l``: 0e + 1o + 2e), and its rotation error
falls quickly with the rule's degree (see :func:`equivariance_error` and the test that prints
the table). A pointwise nonlinearity on a finite grid is never exactly rotation-equivariant;
the forces stay exact gradients of the energy, so energy is conserved regardless.

Example::

    >>> import torch
    >>> from e3nn import o3
    >>> mixer = S2Mixer(o3.Irreps("8x0e+4x1o+2x2e"), o3.Irreps("8x0e+4x1o+2x2e"), channels=4, lmax=2)
    >>> mixer(torch.randn(3, 8 + 12 + 10)).shape
    torch.Size([3, 30])
"""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import o3
from torch import nn

from .._kernels import cpu_launcher_for
from ..backend import KERNEL, Backend
from .e3nn_modules import linear
from .fast_linear import FastLinear


def lebedev_grid(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(G, 3)`` (unit vectors) and weights ``(G,)`` (summing to 4 pi) of the Lebedev
    rule that integrates spherical polynomials of ``degree`` exactly."""
    from scipy.integrate import lebedev_rule

    points, weights = lebedev_rule(degree)
    return points.T.copy(), weights


class SphericalGrid(nn.Module):
    """Dense projections between harmonic coefficients ``l <= lmax`` and values on a Lebedev grid.

    ``to_grid (K, G)``: values ``f = c @ to_grid``; ``from_grid (G, K)``: coefficients
    ``c = f @ from_grid`` by quadrature, with e3nn's ``"component"`` normalisation (the mean
    of ``Y_lm^2`` over the sphere is 1), so that ``to_grid @ from_grid`` is the identity when
    the rule's degree is at least ``2 lmax``. Coefficients are ordered as e3nn orders the
    components of ``1x0e + 1x1o + 1x2e + ...``. Buffers only; nothing is trained or saved.
    """

    def __init__(self, lmax: int, degree: int) -> None:
        super().__init__()
        if degree < 2 * lmax:
            raise ValueError(f"a Lebedev rule of degree {degree} cannot resolve lmax={lmax}; use degree >= {2 * lmax}")
        points, weights = lebedev_grid(degree)
        irreps = o3.Irreps([(1, (l, (-1) ** l)) for l in range(lmax + 1)])
        y = o3.spherical_harmonics(irreps, torch.from_numpy(points), normalize=True, normalization="component")
        w = torch.from_numpy(weights) / (4 * math.pi)
        self.lmax, self.degree, self.n_points = lmax, degree, points.shape[0]
        self.register_buffer("to_grid", y.T.contiguous(), persistent=False)  # (K, G) float64
        self.register_buffer("from_grid", (w[:, None] * y).contiguous(), persistent=False)  # (G, K)

    def kernel_tables(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(to_grid.T, from_grid)``, both ``(G, K)`` contiguous in ``dtype``: what the compiled
        grid step reads (cached per dtype and device)."""
        key = (dtype, self.to_grid.device)
        if getattr(self, "_tables", None) is None or self._tables[0] != key:
            self._tables = (key, (self.to_grid.t().to(dtype).contiguous(), self.from_grid.to(dtype).contiguous()))
        return self._tables[1]

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, lebedev_degree={self.degree}, points={self.n_points}"


class S2Mixer(nn.Module):
    """Equivariant node-wise mixing through an MLP on a spherical grid (Facet's self-interaction).

    Args:
        irreps_in: node features in (any irreps; those with parity ``(-1)^l`` and ``l <= lmax``
            reach the grid, and the scalars are also passed around it to the output).
        irreps_out: node features out.
        channels: ``H``, the width of the MLP's hidden layer on the grid.
        lmax: highest order on the grid.
        grid_degree: degree of the Lebedev rule (the grid's resolution).

    The map is Facet's: an "up" linear map to spherical functions, their values on the grid, one
    MLP ``Dense -> SiLU -> Dense`` across channels at every point, projection back and a "down"
    linear map (with the input scalars passed around the grid). Both dense layers act across
    channels at each point and the projections act across components within each channel, so
    they commute: the first dense layer is folded into "up" and the second into "down", exactly,
    and only the SiLU is evaluated on the grid::

        c   = up(x)                                   # (N, H, K): H x (0e + 1o + 2e + ...)
        f   = silu(c @ to_grid)                       # (N, H, G)
        out = down(concat(f @ from_grid, scalars(x)))

    (Facet's code also applies a SiLU after the second dense layer; without it the second
    layer folds away, which makes the mixer several times cheaper on the CPU.)
    ``forward(x (N, irreps_in.dim)) -> (N, irreps_out.dim)``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        channels: int,
        lmax: int = 2,
        grid_degree: int = 17,
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.channels, self.lmax = channels, lmax
        self.irreps_grid = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
        self.up = linear(self.irreps_in, self.irreps_grid)
        scalars_in = o3.Irreps([(mul, ir) for mul, ir in self.irreps_in if ir == o3.Irrep("0e")])
        self.down = linear(self.irreps_grid + scalars_in, self.irreps_out)
        self.grid = SphericalGrid(lmax, grid_degree)
        self.fast_up = FastLinear(self.up)
        self.fast_down = FastLinear(self.down)
        # scalars of the input sit at these positions of x (for the pass-around)
        index = [
            i
            for (_, ir), sl in zip(self.irreps_in, self.irreps_in.slices())
            if ir == o3.Irrep("0e")
            for i in range(sl.start, sl.stop)
        ]
        self.register_buffer("scalar_index", torch.tensor(index, dtype=torch.long), persistent=False)
        #: the reference (e3nn) or fast path; set by the layer's ``set_backend`` (``nn.backend``)
        self.backend: Backend = KERNEL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._reference(x) if self.backend.reference else self._fast(x)

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """Plain path: e3nn linears, coefficients rearranged to ``(N, H, K)``, dense grid maps."""
        n, c = x.shape[0], self.channels
        up = self.up(x)
        blocks, start = [], 0
        for l in range(self.lmax + 1):
            d = 2 * l + 1
            blocks.append(up[:, start : start + c * d].view(n, c, d))
            start += c * d
        return self.down(self._through_grid(torch.cat(blocks, dim=2), x))

    def _fast(self, x: torch.Tensor) -> torch.Tensor:
        """Fast path: the linears per order straight into and out of the ``(N, H, K)`` layout
        that makes each grid projection one matrix product (no rearranging copies)."""
        coeffs = []
        for l in range(self.lmax + 1):
            w = self.fast_up.weight_of_order(l, self.up.weight)  # (mul_in_l, H)
            xl = self.fast_up.input_of_order(l, x)  # (N, mul_in_l, 2l+1)
            coeffs.append(torch.einsum("nid,ih->nhd", xl, w))
        kernel = self.backend is KERNEL
        grid = self._through_grid(torch.cat(coeffs, dim=2), x, use_kernel=kernel)
        return self.fast_down(grid, self.down.weight, use_kernel=kernel)

    def _through_grid(self, coeffs: torch.Tensor, x: torch.Tensor, use_kernel: bool = False) -> torch.Tensor:
        """``coeffs (..., N, H, K)`` -> SiLU on the grid -> back to coefficients, in e3nn's layout
        ``(..., N, H x (0e + 1o + ...))``, followed by the input scalars of ``x (..., N, dim)``:
        the input of "down" (leading dims: a stacked committee's members). ``use_kernel``: the
        grid step by the compiled CPU kernel where it serves (:class:`_GridSiLU`)."""
        lead = x.shape[:-1]
        backend = _grid_kernel(coeffs, self.channels) if use_kernel else None
        scalars = x.index_select(-1, self.scalar_index)
        if backend is not None:  # in e3nn's layout already
            back = _GridSiLU.apply(coeffs, backend, *self.grid.kernel_tables(x.dtype))
            return torch.cat([back, scalars], dim=-1)
        values = nn.functional.silu(coeffs @ self.grid.to_grid.to(x.dtype))  # (..., N, H, G)
        back = values @ self.grid.from_grid.to(x.dtype)  # (..., N, H, K)
        parts, start = [], 0
        for l in range(self.lmax + 1):
            d = 2 * l + 1
            parts.append(back[..., start : start + d].reshape(*lead, -1))  # e3nn layout (H x d)
            start += d
        parts.append(scalars)
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _grid_kernel(coeffs: torch.Tensor, channels: int):
    """The compiled CPU launcher when it serves this grid step, else ``None``."""
    backend = cpu_launcher_for(coeffs)
    if backend is None or not backend.grid_fits(channels, coeffs.shape[-1], coeffs.dtype):
        return None
    return backend


class _GridSiLU(torch.autograd.Function):
    """``silu(coeffs @ values.T) @ weights`` for ``coeffs (..., N, H, K)`` and the grid tables
    ``values``, ``weights`` ``(G, K)`` (:meth:`SphericalGrid.kernel_tables`), node by node in
    registers (``_kernels/s2_grid.cpp``), returned as ``(..., N, H K)`` in e3nn's layout of ``H x
    (0e + 1o + 2e + ...)``; the backward recomputes the grid values from ``coeffs``.
    Differentiable once (as the fused convolution: the kernel backend's contract)."""

    @staticmethod
    def forward(ctx, coeffs, backend, values, weights):
        shape = coeffs.shape
        flat = coeffs.reshape(-1, shape[-2], shape[-1]).contiguous()
        out = flat.new_empty((flat.shape[0], shape[-2] * shape[-1]))
        if not backend.grid_silu(flat, None, values, weights, out):
            raise RuntimeError("the compiled S2 grid step refused shapes grid_fits accepted")
        ctx.save_for_backward(flat, values, weights)
        ctx.backend, ctx.shape = backend, shape
        return out.view(*shape[:-2], -1)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the compiled S2 grid step is differentiable once: second derivatives (force training, "
                "Hessians, create_graph=True) need model.set_backend('torch')"
            )
        flat, values, weights = ctx.saved_tensors
        grad_flat = grad.reshape(flat.shape[0], -1).contiguous()
        out = torch.empty_like(flat)
        if not ctx.backend.grid_silu(flat, grad_flat, values, weights, out):
            raise RuntimeError("the compiled S2 grid step refused shapes grid_fits accepted")
        return out.view(ctx.shape), None, None, None


def equivariance_error(mixer: S2Mixer, n_nodes: int = 64, n_rotations: int = 8, seed: int = 0) -> float:
    """Relative rotation-equivariance error of ``mixer`` in float64:
    ``max_R |mixer(D_in(R) x) - D_out(R) mixer(x)| / |mixer(x)|`` over random ``x`` and ``R``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_nodes, mixer.irreps_in.dim, generator=generator, dtype=torch.float64)
    worst = 0.0
    with torch.no_grad():
        reference = mixer(x)
        for _ in range(n_rotations):
            u = torch.rand(3, generator=generator, dtype=torch.float64)
            angles = (2 * math.pi * u[0], torch.acos(1 - 2 * u[1]), 2 * math.pi * u[2])  # uniform on SO(3)
            d_in = mixer.irreps_in.D_from_angles(*angles)
            d_out = mixer.irreps_out.D_from_angles(*angles)
            diff = mixer(x @ d_in.T) - reference @ d_out.T
            worst = max(worst, (diff.norm() / reference.norm()).item())
    return worst
