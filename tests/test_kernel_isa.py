"""The CPU kernel is built per instruction-set level (AVX-512, AVX2, baseline x86-64) and chosen
at run time from the CPU's flags: every build the CPU runs gives the torch path's numbers, the
level is part of the cache key, and a level the CPU lacks is refused before anything is built."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.nn import _kernels
from facet_calc.nn._kernels import find_compiler, kernel_isa, kernel_launcher, library_name, supported_isas

pytestmark = [
    pytest.mark.skipif(find_compiler() is None, reason="needs a C++ compiler"),
    pytest.mark.skipif(not _kernels._is_x86(), reason="the ISA levels are those of x86-64"),
]

AVX2_ONLY = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx avx2 fma bmi1 bmi2 f16c movbe abm xsave".split())


def _silicon():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.1, seed=3)
    return atoms


def _results(potential, atoms):
    atoms = atoms.copy()
    atoms.calc = FacetCalculator(potential)
    return {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces(),
            "stress": atoms.get_stress()}  # fmt: skip


def test_the_level_is_in_the_cache_key_and_the_file_name():
    compiler = find_compiler()
    names = {isa: library_name(compiler, isa) for isa in _kernels.ISA_LEVELS}
    assert len(set(names.values())) == len(names)
    assert all(f"_{isa}_" in name for isa, name in names.items())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("isa", supported_isas())
def test_every_build_this_cpu_runs_matches_the_torch_path(isa, dtype, potential64, potential32, monkeypatch):
    potential = potential64 if dtype == "float64" else potential32
    monkeypatch.setenv("FACET_CALC_ISA", isa)
    launcher = kernel_launcher(torch.device("cpu"))
    if launcher is None:
        pytest.skip(f"the compiler cannot build the {isa} level here")
    assert launcher.isa == isa
    atoms = _silicon()
    potential.model.set_backend("torch")
    try:
        plain = _results(potential, atoms)
    finally:
        potential.model.set_backend("kernel")
    assert potential.model.backend == "kernel"
    fast = _results(potential, atoms)
    for key, value in plain.items():
        error = np.abs(fast[key] - value).max() / max(np.abs(value).max(), 1e-3)
        # relative; measured up to 1.3e-14 (float64) and 6.1e-6 (float32, forces of the generic build)
        assert error < (1.5e-13 if dtype == "float64" else 6e-5), (key, error)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("isa", supported_isas())
def test_multiplicities_of_full_half_and_odd_vectors_match_the_torch_path(isa, dtype, threads, monkeypatch):
    """A Facet model with 16, 8 and 4 channels per order: with AVX-512 in float32 (16 lanes) they
    take the full-width kernel, the half-width one and the plain loops; in float64 (8 lanes) and
    with AVX2 the full and half ones, on one and on two OpenMP threads. Energy, forces and virial
    against the torch path."""
    from facet_calc.graph import graph_from_atoms
    from facet_calc.nn import build_model, initialise_for_training
    from facet_calc.nn.families.facet import facet_config
    from facet_calc.nn.forward import evaluate
    from facet_calc.species import SpeciesTable

    monkeypatch.setenv("FACET_CALC_ISA", isa)
    if kernel_launcher(torch.device("cpu")) is None:
        pytest.skip(f"the compiler cannot build the {isa} level here")
    config = facet_config([14], hidden="16x0e+8x1o+4x2e", embedding=16, n_layers=3, scalar_mlp=[8], cutoff=4.0,
                          n_intervals=12, mixer={"channels": 4, "grid_degree": 9}, avg_num_neighbors=8.0)  # fmt: skip
    model = initialise_for_training(build_model(config, dtype), seed=5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("residual.norm.weight"):
                p.fill_(0.5)  # layers that do something (zero makes each the identity)
    model.eval().requires_grad_(False)
    graph = graph_from_atoms(_silicon(), 4.0, SpeciesTable([14]))
    model.set_backend("torch")
    plain = evaluate(model, graph)
    model.set_backend("kernel")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = evaluate(model, graph)
    finally:
        torch.set_num_threads(before)
    for key in ("energy", "forces", "virial"):
        error = float((fast[key] - plain[key]).abs().max() / plain[key].abs().max().clamp_min(1e-3))
        # relative; measured up to 6.4e-15 (float64) and 1.5e-6 (float32)
        assert error < (1e-13 if dtype == torch.float64 else 1e-5), (isa, key, error)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("isa", supported_isas())
def test_the_per_order_linear_of_every_build_matches_torch(isa, dtype, threads, monkeypatch):
    """``component_linear.cpp`` at each level: orders 3, 5, 7, input and output as column
    slices of wider rows (row strides), node counts off the tile (odd), output channels in full
    tiles and a remainder vector, against the transposing product in float64."""
    monkeypatch.setenv("FACET_CALC_ISA", isa)
    launcher = kernel_launcher(torch.device("cpu"))
    if launcher is None:
        pytest.skip(f"the compiler cannot build the {isa} level here")
    lanes = launcher.lanes(dtype)
    generator = torch.Generator().manual_seed(1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for d in (3, 5, 7):
            for n, c_in, c_out in [(7, 13, lanes), (10, 40, 5 * lanes), (1, 3, 2 * lanes)]:
                wide = torch.randn(n, c_in * d + 9, generator=generator, dtype=torch.float64)
                weight = torch.randn(c_in, c_out, generator=generator, dtype=torch.float64)
                x = wide.to(dtype)[:, 4 : 4 + c_in * d]
                out = torch.full((n, c_out * d + 6), 7.0, dtype=dtype)
                assert launcher.component_linear(x, weight.to(dtype), out[:, 2 : 2 + c_out * d], d)
                want = torch.einsum("nid,io->nod", wide[:, 4 : 4 + c_in * d].view(n, c_in, d), weight)
                error = float((out[:, 2 : 2 + c_out * d].double() - want.reshape(n, -1)).abs().max())
                # measured up to 5.3e-15 (float64) and 7.0e-6 (float32, inputs rounded too) for sums of
                # up to 40 products of size ~1
                assert error < (5e-14 if dtype == torch.float64 else 7e-5), (d, n, c_in, c_out, error)
                assert (out[:, :2] == 7).all() and (out[:, 2 + c_out * d :] == 7).all()  # nothing outside
        assert not launcher.linear_fits(3, lanes + 1, dtype) and not launcher.linear_fits(9, lanes, dtype)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("isa", supported_isas())
def test_the_s2_grid_step_of_every_build_matches_torch(isa, dtype, monkeypatch):
    """``s2_grid.cpp`` at each level it serves (not the baseline, where torch is faster):
    ``silu(c @ Y^T) @ B`` (written in e3nn's layout) and its gradient for lmax 1 and 2, two
    vectors of channels, against torch in float64, with arguments up to |x| ~ 30 (SiLU's exp far
    from 1)."""
    from facet_calc.nn.blocks.s2_mixing import SphericalGrid

    monkeypatch.setenv("FACET_CALC_ISA", isa)
    launcher = kernel_launcher(torch.device("cpu"))
    if launcher is None:
        pytest.skip(f"the compiler cannot build the {isa} level here")
    lanes = launcher.lanes(dtype)
    if isa == "generic":
        assert not launcher.grid_fits(lanes, 9, dtype)
        return
    assert launcher.grid_fits(2 * lanes, 9, dtype) and not launcher.grid_fits(lanes + 1, 9, dtype)
    generator = torch.Generator().manual_seed(2)
    for lmax, degree in ((1, 5), (2, 9)):
        grid = SphericalGrid(lmax, degree)
        k = (lmax + 1) ** 2
        c = 8 * torch.randn(5, 2 * lanes, k, generator=generator, dtype=torch.float64)
        g = torch.randn(5, 2 * lanes, k, generator=generator, dtype=torch.float64)
        leaf = c.clone().requires_grad_(True)
        want = torch.nn.functional.silu(leaf @ grid.to_grid) @ grid.from_grid
        (want_grad,) = torch.autograd.grad(want, leaf, g)
        want = want.detach()
        def e3nn_layout(t):  # (n, H, K) -> (n, H x (0e + 1o + ...)): order by order, channel-major
            return torch.cat([t[:, :, l * l : (l + 1) ** 2].reshape(t.shape[0], -1) for l in range(lmax + 1)], 1)

        values, weights = grid.kernel_tables(dtype)
        got, got_grad = torch.empty(5, 2 * lanes * k, dtype=dtype), torch.empty(c.shape, dtype=dtype)
        assert launcher.grid_silu(c.to(dtype), None, values, weights, got)
        assert launcher.grid_silu(c.to(dtype), e3nn_layout(g).to(dtype), values, weights, got_grad)
        for name, a, b in (("values", got, e3nn_layout(want)), ("gradient", got_grad, want_grad)):
            error = float((a.double() - b).abs().max() / b.abs().max())
            # relative; measured up to 4.6e-16 (float64) and 3.4e-7 (float32)
            assert error < (5e-15 if dtype == torch.float64 else 3e-6), (isa, lmax, name, error)


def test_the_best_level_the_cpu_has_is_chosen(monkeypatch):
    monkeypatch.delenv("FACET_CALC_ISA", raising=False)
    monkeypatch.setattr(_kernels, "_cpu_flags", lambda: AVX2_ONLY)
    assert supported_isas() == ["avx2", "generic"]
    assert kernel_isa() == "avx2"
    monkeypatch.setattr(_kernels, "_cpu_flags", lambda: AVX2_ONLY | {"avx512f", "avx512bw", "avx512cd", "avx512dq",
                                                                     "avx512vl"})  # fmt: skip
    assert kernel_isa() == "avx512"
    monkeypatch.setattr(_kernels, "_cpu_flags", lambda: None)  # no /proc/cpuinfo: the baseline only
    assert supported_isas() == ["generic"]


def test_forcing_a_level_the_cpu_lacks_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(_kernels, "_cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setenv("FACET_CALC_ISA", "avx512")
    with pytest.raises(RuntimeError, match=r"lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl.*'avx2'"):
        kernel_launcher(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="cannot run on this CPU"):
        _kernels.load_spline_conv(tmp_path, "avx512")
    assert not list(tmp_path.iterdir()), "nothing is built for a level the CPU lacks"


def test_an_unknown_level_is_refused(monkeypatch):
    monkeypatch.setenv("FACET_CALC_ISA", "sse9")
    with pytest.raises(RuntimeError, match="not an instruction-set level.*'avx2'"):
        kernel_isa()
