"""The model core as training needs it: parameters that the fast paths follow, second
derivatives that are right or refused, a batch index, and the architecture registry."""

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from facet_calc import FacetCalculator, load_potential
from facet_calc.graph import collate
from facet_calc.nn import build_model, evaluate
from facet_calc.nn._kernels import spline_conv_library

HAS_KERNEL = spline_conv_library() is not None


def _graph_tensors(potential, atoms):
    graph = potential.graph(atoms)
    return graph, graph.species, graph.edge_vectors, graph.senders, graph.receivers


def _si():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture(scope="module")
def model64():
    """A private float64 copy that the tests may modify."""
    return copy.deepcopy(load_potential("7net-0-spline", dtype="float64").model)


def _hvp_and_fd(model, atoms, potential):
    """d/dt of (grad E . v) along v, by double backward and by central differences of forces."""
    graph, species, _, senders, receivers = _graph_tensors(potential, atoms)
    pos0 = graph.positions.clone()
    cell, shifts = graph.cell[0], graph.shifts
    v = torch.randn(pos0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def grad_e(pos, create_graph):
        pos = pos.clone().requires_grad_(True)
        vec = pos[senders] - pos[receivers] + shifts @ cell
        energy = model(species, vec, senders, receivers).sum()
        (g,) = torch.autograd.grad(energy, pos, create_graph=create_graph)
        return pos, g

    pos, g = grad_e(pos0, True)
    (hv,) = torch.autograd.grad((g * v).sum(), pos)
    eps = 1e-4
    fd = (grad_e(pos0 + eps * v, False)[1] - grad_e(pos0 - eps * v, False)[1]) / (2 * eps)
    return hv, fd


def test_hessian_vector_product_is_right_on_the_torch_backend(model64):
    potential = load_potential("7net-0-spline", dtype="float64")
    model64.set_backend("torch")
    hv, fd = _hvp_and_fd(model64, _si(), potential)
    # measured: 3.6e-7 relative, the central difference's own truncation error (eps 1e-4)
    assert (hv - fd).abs().max() / fd.abs().max() < 1e-6


@pytest.mark.skipif(not HAS_KERNEL, reason="no compiled kernel here")
def test_hessian_vector_product_through_the_kernel_raises(model64):
    potential = load_potential("7net-0-spline", dtype="float64")
    model64.set_backend("kernel")
    try:
        with pytest.raises(RuntimeError, match="differentiable once"):
            _hvp_and_fd(model64, _si(), potential)
    finally:
        model64.set_backend("auto")


def test_fast_paths_follow_the_parameters_and_nothing_derived_is_saved(model64):
    potential = load_potential("7net-0-spline", dtype="float64")
    saved = model64.state_dict()
    assert not [k for k in saved if ".fast." in k]  # the fast paths' tables are not saved
    assert {name for name, _ in model64.named_parameters()} <= set(saved)
    graph = potential.graph(_si())
    before = {b: evaluate(model64.set_backend(b), graph)["energy"] for b in ("torch",)}
    with torch.no_grad():
        model64.layers[0].linear_in.weight.mul_(1.1)
        model64.layers[2].convolution.radial.values.mul_(0.9)
    try:
        after = {}
        for backend in ("e3nn", "torch", "kernel"):
            after[backend] = evaluate(model64.set_backend(backend), graph)
        assert abs(after["torch"]["energy"] - before["torch"]).item() > 1e-3
        for backend in ("torch", "kernel"):
            for key in ("energy", "forces", "virial"):
                ref = after["e3nn"][key]
                assert (after[backend][key] - ref).abs().max() / ref.abs().max() < 1e-10, (backend, key)
    finally:
        with torch.no_grad():
            model64.layers[0].linear_in.weight.div_(1.1)
            model64.layers[2].convolution.radial.values.div_(0.9)
        model64.set_backend("auto")


def test_kernel_refuses_to_silently_drop_parameter_gradients(model64):
    if not HAS_KERNEL:
        pytest.skip("no compiled kernel here")
    potential = load_potential("7net-0-spline", dtype="float64")
    graph = potential.graph(_si())
    model64.requires_grad_(True).set_backend("kernel")
    try:
        with pytest.raises(RuntimeError, match="no gradients for the spline tables"):
            evaluate(model64, graph)
    finally:
        model64.requires_grad_(False).set_backend("auto")


def test_trained_spline_stays_c2_and_zero_at_the_cutoff(model64):
    radial = copy.deepcopy(model64.layers[1].convolution.radial).requires_grad_(True).train()
    r = torch.linspace(0.5, 5.0, 400, dtype=torch.float64)
    loss = (radial(r) ** 2).sum()
    loss.backward()
    assert radial.values.grad[-1].abs().max() == 0  # the cutoff knot is not trained
    with torch.no_grad():
        radial.values -= 1e-2 * radial.values.grad / radial.values.grad.abs().max()
    table = radial.table().detach()
    radial.eval()
    n, h = radial.n_intervals, radial.h
    values, slopes = table[: n + 1], table[n + 1 :]
    assert torch.equal(radial.values.detach(), values) and torch.equal(radial.slopes.detach(), slopes)
    assert values[-1].abs().max() == 0 and slopes[-1].abs().max() == 0
    # second derivative of the Hermite cubic at both ends of each interval; C2: they agree at
    # interior knots, except at the break r_on = 4.5 A where the source is C1
    y0, y1, m0, m1 = values[:-1], values[1:], slopes[:-1], slopes[1:]
    d2_left = (6 * (y1 - y0) / h - 4 * m0 - 2 * m1) / h  # at the start of the interval
    d2_right = (-6 * (y1 - y0) / h + 2 * m0 + 4 * m1) / h  # at its end
    jump = (d2_left[1:] - d2_right[:-1]).abs().max(dim=1).values  # at knots 1..n-1
    breaks = {round(4.5 / h) - 1}
    interior = [k for k in range(n - 1) if k not in breaks]
    scale = d2_left.abs().max()
    assert jump[interior].max() / scale < 1e-9  # measured: 7.6e-13
    assert jump[list(breaks)].max() / scale > 1e-6  # C1 only there, as in the source


def test_batched_evaluation_equals_one_structure_at_a_time():
    potential = load_potential("7net-0-spline", dtype="float64")
    structures = [_si(), bulk("NaCl", "rocksalt", a=5.6, cubic=True), molecule("CH3CH2OH")]
    structures[2].cell = [12, 12, 12]
    structures[2].pbc = True
    out = evaluate(potential.model, collate([potential.graph(atoms) for atoms in structures]))
    start = 0
    for i, atoms in enumerate(structures):
        calc = FacetCalculator(potential)
        atoms.calc = calc
        stop = start + len(atoms)
        assert out["energy"][i].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(out["forces"][start:stop].numpy(), atoms.get_forces(), atol=1e-9)
        stress = out["virial"][i].numpy() / atoms.get_volume()
        np.testing.assert_allclose(stress.flat[[0, 4, 8, 5, 2, 1]], atoms.get_stress(), atol=1e-11)
        start = stop


def test_registry_rejects_unknown_architecture_and_format():
    config = dict(load_potential("7net-0-spline").config)
    known = "known architectures: facet, facet-spline-mace, facet-spline-nequip"
    with pytest.raises(ValueError, match=f"unknown architecture 'mace'; {known}"):
        build_model({**config, "architecture": "mace"})
    with pytest.raises(ValueError, match="format_version 7 is not supported"):
        build_model({**config, "format_version": 7})
    assert torch.get_default_dtype() == torch.float32  # build_model never changes it
