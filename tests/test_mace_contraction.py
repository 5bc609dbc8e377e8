"""The MACE family's symmetric contraction: the fast (monomial) path equals the plain nested
contraction (MACE's own order of operations), values and gradients, on random inputs."""

import pytest
import torch
from e3nn import o3

from facet_calc.nn.families.mace_spline.contraction import SymmetricContraction, coupling_basis


@pytest.mark.parametrize(("irreps_out", "correlation"), [("3x0e+3x1o", 3), ("3x0e+3x1o+3x2e", 2), ("3x0e", 1)])
def test_fast_contraction_equals_the_reference(irreps_out, correlation):
    irreps_a = o3.Irreps("0e+1o+2e+3o")
    n_params = [[coupling_basis(irreps_a, ir, nu).shape[-1] for nu in range(1, correlation + 1)]
                for _, ir in o3.Irreps(irreps_out)]  # fmt: skip
    block = SymmetricContraction(irreps_a, o3.Irreps(irreps_out), correlation, n_params, n_species=3).double()
    generator = torch.Generator().manual_seed(0)
    block.set_basis()
    with torch.no_grad():
        for name, param in block.named_parameters():
            if name.startswith("W_"):
                param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64))
    a = torch.randn(11, 3, irreps_a.dim, generator=generator, dtype=torch.float64, requires_grad=True)
    species = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1, 0, 0])
    ref = block.reference(a, species)
    (grad_ref,) = torch.autograd.grad((ref * torch.cos(ref)).sum(), a)
    whole = block(a, species)  # one chunk, several species
    assert (whole - ref).abs().max() < 1e-12 * ref.abs().max()
    block.max_chunk_elements = 64  # several chunks: the checkpointed path too
    fast = block(a, species)
    (grad_fast,) = torch.autograd.grad((fast * torch.cos(fast)).sum(), a)
    assert ref.abs().max() > 0.1
    assert (fast - ref).abs().max() < 1e-12 * ref.abs().max()
    assert (grad_fast - grad_ref).abs().max() < 1e-12 * grad_ref.abs().max()


def test_the_coupling_basis_is_equivariant():
    """f(x) = U . x^(x nu) with x built from spherical harmonics of vectors: f(x(R v)) = R f(x(v))
    (an output 1o turns with the rotation matrix itself, in e3nn's basis)."""
    irreps_a = o3.Irreps("0e+1o+2e")
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    rot = o3.rand_matrix(dtype=torch.float64)
    # the l = 1 rotation in e3nn's basis, from harmonics of three vectors (exact to round-off,
    # unlike D_from_matrix, whose tables are float32)
    frame = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    y1 = o3.spherical_harmonics("1o", frame, normalize=False)  # rows: (3 vectors, 3 components)
    d_out = torch.linalg.solve(y1, o3.spherical_harmonics("1o", frame @ rot.T, normalize=False)).T

    def features(v):  # a sum of two vectors' harmonics: generic enough to reach every path
        return o3.spherical_harmonics(irreps_a, v, normalize=False).sum(0)

    for nu in (1, 2, 3):
        u = coupling_basis(irreps_a, o3.Irrep("1o"), nu)
        assert u.shape[-1] > 0

        def poly(x, t=u, nu=nu):
            for _ in range(nu):
                t = torch.einsum("M...ak,a->M...k", t, x)
            return t

        out = poly(features(vectors))
        assert out.abs().max() > 1e-3
        assert (poly(features(vectors @ rot.T)) - d_out @ out).abs().max() < 1e-12
