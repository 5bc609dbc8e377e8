"""The spline radial table against independent references (scipy, exact polynomials)."""

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from facet_calc.nn.blocks.radial import SplineRadial, fit_clamped_cubic_spline


def _table(f, df, n=40, r_max=5.0, breaks=()):
    r = np.linspace(0, r_max, n + 1)
    y, dy = f(r)[:, None], df(r)[:, None]
    slopes = fit_clamped_cubic_spline(y, dy, r_max / n, breaks=breaks)
    return SplineRadial(torch.tensor(y), torch.tensor(slopes), r_max).double().requires_grad_(False)


def test_cubic_polynomials_are_reproduced_exactly():
    f = lambda r: 0.3 * r**3 - 2 * r**2 + r - 4  # noqa: E731
    df = lambda r: 0.9 * r**2 - 4 * r + 1  # noqa: E731
    table = _table(f, df)
    r = torch.linspace(0, 4.999, 997, dtype=torch.float64)
    np.testing.assert_allclose(table(r)[:, 0].numpy(), f(r.numpy()), rtol=0, atol=1e-12)


def test_matches_scipy_clamped_cubic_spline():
    r_knots = np.linspace(0, 5.0, 51)
    y = np.sin(2 * r_knots) * np.exp(-r_knots)
    d0, d1 = 2.0, 0.3
    dy = np.zeros_like(y)
    dy[0], dy[-1] = d0, d1
    slopes = fit_clamped_cubic_spline(y[:, None], dy[:, None], 0.1)
    table = SplineRadial(torch.tensor(y[:, None]), torch.tensor(slopes), 5.0).double().requires_grad_(False)
    reference = CubicSpline(r_knots, y, bc_type=((1, d0), (1, d1)))
    r = np.linspace(0, 4.9999, 1001)
    np.testing.assert_allclose(table(torch.tensor(r))[:, 0].numpy(), reference(r), atol=1e-12)


def test_second_derivative_is_continuous_except_at_breaks():
    f = lambda r: np.cos(3 * r) * np.exp(-0.2 * r)  # noqa: E731
    df = lambda r: -3 * np.sin(3 * r) * np.exp(-0.2 * r) - 0.2 * np.cos(3 * r) * np.exp(-0.2 * r)  # noqa: E731
    table = _table(f, df, n=50, breaks=[25])
    h = 5.0 / 50

    def second_derivative(r):
        x = torch.tensor([r], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(table(x).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g.sum(), x)
        return g2.item()

    for k in (10, 37):  # interior knots: C2
        assert second_derivative(k * h - 1e-9) == pytest.approx(second_derivative(k * h + 1e-9), abs=1e-5)
    # at the break only C1 is imposed, so the one-sided second derivatives may differ
    left, right = second_derivative(25 * h - 1e-9), second_derivative(25 * h + 1e-9)
    assert abs(left - right) > 1e-6


def test_zero_beyond_r_max_and_gradient_flows():
    table = _table(lambda r: (5 - r) ** 2, lambda r: -2 * (5 - r))
    r = torch.tensor([1.0, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    w = table(r)[:, 0]
    assert w[1].item() == 0.0 and w[2].item() == 0.0
    (g,) = torch.autograd.grad(w.sum(), r)
    assert g[0].item() == pytest.approx(-8.0, abs=1e-9)


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match="equal shape"):
        SplineRadial(torch.zeros(5, 2), torch.zeros(4, 2), 5.0)


def test_spline_basis_slopes_are_the_basis_derivative():
    """The written-out d beta / d r against autograd through spline_basis, across the knots and
    at and beyond the cutoff (where both are zero)."""
    from facet_calc.nn.blocks.radial import spline_basis, spline_basis_slopes

    r = torch.cat([torch.linspace(0.01, 4.99, 97, dtype=torch.float64), torch.tensor([5.0, 5.3], dtype=torch.float64)])
    r.requires_grad_(True)
    rows, beta = spline_basis(r, 8, 5.0)
    auto = torch.stack([torch.autograd.grad(beta[:, c].sum(), r, retain_graph=True)[0] for c in range(4)], dim=1)
    torch.testing.assert_close(spline_basis_slopes(r.detach(), rows, 8, 5.0), auto, rtol=0, atol=1e-12)
    assert float(auto.abs().max()) > 0.1  # the comparison has something to compare
