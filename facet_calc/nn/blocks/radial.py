"""Radial functions: the cubic spline table that gives per-edge tensor-product weights.

A converted potential never evaluates a radial MLP. Each interaction layer stores a table of
values ``y[k]`` and slopes ``m[k]`` of its weight vector at uniform knots ``r_k = k * h`` on
``[0, r_cut]``; between knots the weights are the cubic Hermite interpolant of that table.
When the slopes come from :func:`fit_clamped_cubic_spline` the result is the C2 interpolating
cubic spline of the sampled function (C1 only at knots the caller marks as breaks, where the
source function itself has a jump in its second derivative).

Example::

    >>> import torch
    >>> r = torch.linspace(0, 5, 11, dtype=torch.float64)
    >>> y = torch.stack([torch.cos(r), torch.sin(r)], dim=1)
    >>> dy = torch.stack([-torch.sin(r), torch.cos(r)], dim=1)
    >>> table = SplineRadial(y, dy, r_max=5.0)
    >>> table(torch.tensor([0.25], dtype=torch.float64)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .derived import DerivedCache


class SplineRadial(nn.Module):
    """Cubic Hermite spline ``w(r)`` of a vector-valued function on uniform knots.

    Args:
        values: ``(n_knots, n_out)`` function values at ``r_k = k * r_max / (n_knots - 1)``.
        slopes: ``(n_knots, n_out)`` derivatives dw/dr at the same knots (per Angstrom).
        r_max: the last knot in Angstrom; ``w(r) = 0`` for ``r >= r_max``.
        c1_only_at: distances (A) of interior knots where the spline is only C1 (the source
            function has a jump in its second derivative there); ``None``: the table is a plain
            Hermite table, with values and slopes independent (C1).

    Input ``r``: ``(n_edges,)`` distances in Angstrom. Output: ``(n_edges, n_out)``.

    Training. ``values`` and ``slopes`` are parameters. When the table is a C2 spline
    (``c1_only_at`` given), only the values are trained: in training mode the slopes are the
    C2 spline's, ``slopes = A @ values + c``, where ``A`` solves the clamped-spline system and
    ``c`` carries the fixed slopes at the ends and breaks, so the trained function stays C2
    (C1 at the breaks). The last knot's value and slope are held at exactly zero in training
    mode, so the cutoff stays smooth. Leaving training mode (``.eval()``) writes the derived
    slopes back into the ``slopes`` parameter, which inference then reads directly.
    """

    def __init__(
        self,
        values: torch.Tensor,
        slopes: torch.Tensor,
        r_max: float,
        c1_only_at: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if values.shape != slopes.shape or values.dim() != 2 or values.shape[0] < 2:
            raise ValueError(
                f"spline table needs values and slopes of equal shape (n_knots >= 2, n_out); "
                f"got {tuple(values.shape)} and {tuple(slopes.shape)}"
            )
        self.r_max = float(r_max)
        self.n_intervals = values.shape[0] - 1
        self.h = self.r_max / self.n_intervals
        # Parameters rather than buffers, so that a potential file holds exactly the model's
        # parameters and nothing derived.
        self.values = nn.Parameter(values.clone())
        self.slopes = nn.Parameter(slopes.clone())
        self.c2 = c1_only_at is not None
        self._trained = False  # set by train(True); eval() then writes the derived slopes back
        self._derived = DerivedCache()
        if self.c2:
            breaks = [int(round(b / self.h)) for b in c1_only_at]
            eye = np.eye(self.n_intervals + 1)
            # slopes of the C2 spline through unit values with zero prescribed slopes: A[:, k]
            a = fit_clamped_cubic_spline(eye, np.zeros_like(eye), self.h, breaks)
            self.register_buffer("c2_operator", torch.from_numpy(a), persistent=False)  # float64; .to(dtype) rounds
            fixed = np.zeros(self.n_intervals + 1, dtype=bool)
            fixed[[0, *breaks, self.n_intervals]] = True
            self.register_buffer("fixed_slope_knots", torch.from_numpy(fixed), persistent=False)

    @property
    def n_out(self) -> int:
        return self.values.shape[1]

    def table(self) -> torch.Tensor:
        """``(2 * n_knots, n_out)``: knot values stacked over knot slopes, as :func:`hermite_spline`
        reads them; in training mode derived from the trainable values (see class docstring)."""
        if not self._trained:  # inference: the same table at every call while the knots stay
            return self._derived.get("table", (self.values, self.slopes),
                                     lambda: torch.cat((self.values, self.slopes), dim=0))  # fmt: skip
        values = torch.cat((self.values[:-1], torch.zeros_like(self.values[-1:])), dim=0)
        if not self.c2:
            slopes = torch.cat((self.slopes[:-1], torch.zeros_like(self.slopes[-1:])), dim=0)
            return torch.cat((values, slopes), dim=0)
        return torch.cat((values, self.c2_slopes(values)), dim=0)

    def c2_slopes(self, values: torch.Tensor) -> torch.Tensor:
        """Slopes of the C2 spline through ``values`` that keeps the slopes at the ends and
        breaks fixed (the one at the cutoff zero); ``(n_knots, n_out)``."""
        # the clamped spline is linear in (values, fixed slopes); the fixed slopes' part is
        # computed once, when training mode is entered
        return self.c2_operator.to(values.dtype) @ values + self.c2_offset

    def train(self, mode: bool = True) -> SplineRadial:
        # derived (C2) slopes only while the values train; a frozen table is left as stored
        mode_derived = mode and self.values.requires_grad
        if mode_derived and self.c2:
            fixed = self.fixed_slope_knots.unsqueeze(1)
            end_slopes = torch.where(fixed, self.slopes.detach(), torch.zeros_like(self.slopes))
            end_slopes[-1] = 0.0
            breaks = torch.nonzero(self.fixed_slope_knots[1:-1]).flatten().add(1).tolist()
            zeros = np.zeros(tuple(end_slopes.shape))
            offset = fit_clamped_cubic_spline(zeros, end_slopes.cpu().double().numpy(), self.h, breaks)
            self.register_buffer("c2_offset", torch.from_numpy(offset).to(end_slopes), persistent=False)
        elif not mode and self._trained:
            # leaving training: store the slopes the trained values imply, for inference
            with torch.no_grad():
                table = self.table()
                n = self.n_intervals + 1
                self.values.copy_(table[:n])
                self.slopes.copy_(table[n:])
        self._trained = mode_derived
        return super().train(mode)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return hermite_spline(r, self.table(), self.r_max)

    def extra_repr(self) -> str:
        return f"n_intervals={self.n_intervals}, r_max={self.r_max}, n_out={self.n_out}, c2={self.c2}"


def spline_basis(r: torch.Tensor, n_intervals: int, r_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and coefficients of the cubic Hermite spline on uniform knots over ``[0, r_max]``.

    For a table that stacks the ``n_intervals + 1`` knot values over the knot slopes (per A),
    ``w(r) = sum_c beta[:, c] * table[rows[:, c]]``.

    Returns ``rows (n_edges, 4)`` int64 and ``beta (n_edges, 4)`` (zero for ``r >= r_max``),
    differentiable with respect to ``r``.
    """
    n = n_intervals
    h = r_max / n
    t = r / h
    # clamp keeps r == r_max (and round-off beyond it) in the last interval, where u = 1
    # selects the last knot, whose value is zero for a potential with a cutoff envelope.
    k = torch.clamp(t.detach().floor().long(), 0, n - 1)
    u = t - k.to(t.dtype)
    u2 = u * u
    u3 = u2 * u
    beta = torch.stack((2 * u3 - 3 * u2 + 1, -2 * u3 + 3 * u2, (u3 - 2 * u2 + u) * h, (u3 - u2) * h), dim=1)
    beta = beta * (r < r_max).unsqueeze(1).to(beta.dtype)
    rows = torch.stack((k, k + 1, k + n + 1, k + n + 2), dim=1)
    return rows, beta


def spline_basis_slopes(r: torch.Tensor, rows: torch.Tensor, n_intervals: int, r_max: float) -> torch.Tensor:
    """``d beta / d r (n_edges, 4)`` per A of :func:`spline_basis` at ``r`` with its ``rows``
    (the derivative of its Hermite polynomials in ``u``, over the knot spacing; zero for ``r >=
    r_max``), for a backward pass written out by hand."""
    h = r_max / n_intervals
    u = r / h - rows[:, 0].to(r.dtype)
    u2 = u * u
    slopes = torch.stack((6 * u2 - 6 * u, -6 * u2 + 6 * u, (3 * u2 - 4 * u + 1) * h, (3 * u2 - 2 * u) * h), dim=1) / h
    return slopes * (r < r_max).unsqueeze(1).to(slopes.dtype)


def hermite_spline(r: torch.Tensor, table: torch.Tensor, r_max: float) -> torch.Tensor:
    """Evaluate the spline whose ``(2 * n_knots, n_out)`` table stacks knot values over knot
    slopes, at ``r (n_edges,)``. Returns ``(n_edges, n_out)``, zero for ``r >= r_max``.
    Differentiable with respect to ``r`` and ``table``, twice (force training, Hessians)."""
    rows, beta = spline_basis(r, table.shape[0] // 2 - 1, r_max)
    return spline_from_basis(rows, beta, table)


def spline_from_basis(rows: torch.Tensor, beta: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`hermite_spline` from a basis :func:`spline_basis` already computed (shared by
    every table on the same knots): ``(n_edges, n_out)``, differentiable twice."""
    return _WeightedRows.apply(beta, table, rows)


class _WeightedRows(torch.autograd.Function):
    """``out[e] = sum_c beta[e, c] * table[rows[e, c]]``.

    Forward and first derivatives by ``embedding_bag`` (one fused gather-and-weighted-sum,
    instead of ~20 passes over ``(n_edges, n_out)``); torch cannot differentiate its backward
    again, so under ``create_graph`` the backward is written in plain, differentiable ops.
    """

    @staticmethod
    def forward(ctx, beta, table, rows):
        ctx.save_for_backward(beta, table, rows)
        return nn.functional.embedding_bag(rows, table, per_sample_weights=beta, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        beta, table, rows = ctx.saved_tensors
        need_beta, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():  # create_graph: a backward that is itself differentiable
            # index_select, not table[rows]: its backward is an index_add, not a slow index_put
            gathered = table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[1])
            grad_beta = torch.einsum("eo,eco->ec", grad_out, gathered) if need_beta else None
            grad_table = None
            if need_table:
                contrib = beta.unsqueeze(2) * grad_out.unsqueeze(1)  # (E, 4, n_out)
                grad_table = table.new_zeros(table.shape).index_add(0, rows.reshape(-1), contrib.flatten(0, 1))
            return grad_beta, grad_table, None
        with torch.enable_grad():
            beta_ = beta.detach().requires_grad_(need_beta)
            table_ = table.detach().requires_grad_(need_table)
            out = nn.functional.embedding_bag(rows, table_, per_sample_weights=beta_, mode="sum")
            inputs = [t for t, need in ((beta_, need_beta), (table_, need_table)) if need]
            grads = iter(torch.autograd.grad(out, inputs, grad_out))
        return (next(grads) if need_beta else None), (next(grads) if need_table else None), None


def fit_clamped_cubic_spline(
    values: np.ndarray,
    end_slopes: np.ndarray,
    h: float,
    breaks: Sequence[int] = (),
) -> np.ndarray:
    """Knot slopes of the C2 cubic spline through ``values`` with prescribed end slopes.

    Solves, on each segment between consecutive entries of ``[0, *breaks, n]``, the tridiagonal
    system ``m[k-1] + 4 m[k] + m[k+1] = 3 (y[k+1] - y[k-1]) / h`` with the slopes at the segment
    ends fixed ("complete" spline; error O(h^4)).

    Args:
        values: ``(n + 1, n_out)`` samples at uniform knots with spacing ``h``.
        end_slopes: ``(n + 1, n_out)`` exact slopes; only those at 0, n and each break are used.
        h: knot spacing.
        breaks: interior knot indices where the C2 condition is not imposed (the slope there is
            taken from ``end_slopes``), for functions that are only C1 at that point.

    Returns: ``(n + 1, n_out)`` slopes.
    """
    y = np.asarray(values, dtype=np.float64)
    slopes = np.array(end_slopes, dtype=np.float64, copy=True)
    n = y.shape[0] - 1
    edges = [0, *sorted(breaks), n]
    for a, b in zip(edges[:-1], edges[1:]):
        inner = b - a - 1
        if inner <= 0:
            continue
        rhs = 3.0 * (y[a + 2 : b + 1] - y[a : b - 1]) / h
        rhs[0] -= slopes[a]
        rhs[-1] -= slopes[b]
        # Thomas algorithm for the constant tridiagonal (1, 4, 1) system.
        c = np.empty(inner)
        d = np.empty_like(rhs)
        c[0] = 1.0 / 4.0
        d[0] = rhs[0] / 4.0
        for i in range(1, inner):
            denom = 4.0 - c[i - 1]
            c[i] = 1.0 / denom
            d[i] = (rhs[i] - d[i - 1]) / denom
        for i in range(inner - 2, -1, -1):
            d[i] -= c[i] * d[i + 1]
        slopes[a + 1 : b] = d
    return slopes


#: Radial initialisation: this many spherical Bessel functions j0(n pi r / r_cut), as SevenNet's
#: default radial basis has.
N_RADIAL_BASIS = 8


def _polynomial_envelope(x: torch.Tensor, p: int = 6) -> torch.Tensor:
    """NequIP's cutoff polynomial of ``x = r / r_cut``: 1 at 0, and value, slope and curvature
    zero at ``x = 1``."""
    return 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)


def random_radial_table(
    n_knots: int, n_out: int, r_max: float, generator: torch.Generator, breaks: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Knot values and C2 spline slopes of a smooth random radial function, float64.

    Each of the ``n_out`` columns is ``env(r / r_max) * sum_n a_n j0(n pi r / r_max)``
    (``n = 1..N_RADIAL_BASIS``, ``a_n ~ N(0, 1)``, ``j0(x) = sin(x) / x``), scaled to unit RMS
    over the knots, so that the tensor products start with the O(1) weights e3nn's path
    normalisation assumes. ``env`` vanishes with its first two derivatives at the cutoff: the
    table's last value and slope are exactly zero.

    Returns ``values, slopes``, both ``(n_knots, n_out)``: the samples and the slopes of the C2
    cubic spline through them, clamped with the function's exact slopes at the ends (and at
    ``breaks``, knot indices where the table is only C1).
    """
    coefficients = torch.randn(N_RADIAL_BASIS, n_out, generator=generator, dtype=torch.float64)
    k = torch.arange(1, N_RADIAL_BASIS + 1, dtype=torch.float64)

    def radial(r: torch.Tensor) -> torch.Tensor:
        x = r / r_max
        basis = torch.sinc(k * x.unsqueeze(-1))  # sin(n pi x) / (n pi x); 1 at x = 0
        return (basis @ coefficients) * _polynomial_envelope(x).unsqueeze(-1)

    r = torch.linspace(0.0, r_max, n_knots, dtype=torch.float64)
    with torch.no_grad():
        values, slopes = torch.func.jvp(radial, (r,), (torch.ones_like(r),))
    rms = values.square().mean(dim=0).sqrt()
    values, slopes = values / rms, slopes / rms
    values[-1] = 0.0  # exactly, not to round-off
    slopes[-1] = 0.0
    h = r_max / (n_knots - 1)
    spline_slopes = fit_clamped_cubic_spline(values.numpy(), slopes.numpy(), h, breaks)
    return values, torch.from_numpy(spline_slopes)
