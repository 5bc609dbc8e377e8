"""The fast paths (compiled CPU kernel, pure-torch specialised ops) against e3nn's reference."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule

from facet_calc import FacetCalculator, load_potential
from facet_calc.nn._kernels import spline_conv_library
from facet_calc.testing import _triclinic

STRUCTURES = {
    "Si rattled": lambda: _rattled(bulk("Si", "diamond", a=5.43, cubic=True), 0.1),
    "triclinic LiFeO": lambda: _triclinic(1),
    "Pt slab": lambda: _rattled(fcc111("Pt", (2, 2, 3), vacuum=6.0), 0.05),
    "ethanol": lambda: molecule("CH3CH2OH"),
}


def _rattled(atoms, stdev):
    atoms.rattle(stdev, seed=11)
    return atoms


def _results(potential, atoms):
    atoms = atoms.copy()
    atoms.calc = FacetCalculator(potential)
    out = {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces()}
    out["energies"] = atoms.get_potential_energies()
    if atoms.cell.rank == 3:
        out["stress"] = atoms.get_stress()
    return out


def _set_kernels(potential, enabled):
    potential.model.set_backend("kernel" if enabled else "torch")


@pytest.fixture(scope="module")
def reference64():
    return load_potential("7net-0-spline", dtype="float64", backend="e3nn")


@pytest.fixture(scope="module")
def reference32():
    return load_potential("7net-0-spline", dtype="float32", backend="e3nn")


KERNEL_MODES = [pytest.param(False, id="torch-ops")]
if spline_conv_library() is not None:
    KERNEL_MODES.append(pytest.param(True, id="compiled-kernel"))


@pytest.mark.parametrize("kernels", KERNEL_MODES)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_fast_path_matches_e3nn_reference_float64(potential64, reference64, name, kernels):
    assert potential64.model.backend != "e3nn" and reference64.model.backend == "e3nn"
    atoms = STRUCTURES[name]()
    _set_kernels(potential64, kernels)
    try:
        fast, plain = _results(potential64, atoms), _results(reference64, atoms)
    finally:
        _set_kernels(potential64, True)
    for key, value in plain.items():
        scale = max(np.abs(value).max(), 1e-3)
        assert np.abs(fast[key] - value).max() / scale < 1.5e-12, key  # measured: up to 1.7e-13 (ethanol forces)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_fast_path_matches_e3nn_reference_float32(potential32, reference32, name):
    atoms = STRUCTURES[name]()
    fast, plain = _results(potential32, atoms), _results(reference32, atoms)
    assert abs(fast["energy"] - plain["energy"]) / len(atoms) < 5e-6  # eV/atom; measured up to 6.4e-7
    assert np.abs(fast["forces"] - plain["forces"]).max() < 2e-4  # eV/A; measured up to 3.0e-5


def test_one_selector_sets_and_reports_the_backend(potential64):
    model = potential64.model
    try:
        for name in ("e3nn", "torch"):
            assert model.set_backend(name).backend == name
        expected = "kernel" if spline_conv_library() is not None else "torch"
        assert model.set_backend("auto").backend == expected
        with pytest.raises(ValueError, match="unknown backend 'fast'"):
            model.set_backend("fast")
    finally:
        model.set_backend("auto")


def test_unsorted_edges_fall_back_to_tensor_ops(potential64):
    """The compiled kernel needs edges sorted by receiver; any other order must still be right."""
    from dataclasses import replace

    from facet_calc.nn import evaluate

    atoms = _triclinic(2)
    graph = potential64.graph(atoms)
    perm = torch.randperm(graph.n_edges, generator=torch.Generator().manual_seed(0))
    shuffled_graph = replace(graph, **{k: getattr(graph, k)[perm] for k in ("edge_vectors", "senders", "receivers")})
    sorted_out = evaluate(potential64.model, graph)
    kernel = potential64.model.backend == "kernel"
    with pytest.warns(UserWarning, match="not sorted by receiver") if kernel else nullcontext():
        shuffled = evaluate(potential64.model, shuffled_graph)
    assert torch.allclose(sorted_out["forces"], shuffled["forces"], rtol=0, atol=6e-13)  # measured 6.0e-14
    assert torch.allclose(sorted_out["virial"], shuffled["virial"], rtol=0, atol=6e-13)  # measured 5.5e-14


#: chunked against whole evaluations, absolute per key (eV, eV/A, eV/A^3) at about 10x the
#: torch-ops chunks' measured difference (energy 0, forces 1.3e-14, energies 1.8e-15, stress
#: 1.4e-16); the fused kernel's chunks measured exactly 0. Energy: a few ulps of the 8-atom cell's.
CHUNK_TOL = {"energy": 1e-13, "forces": 1.5e-13, "energies": 2e-14, "stress": 2e-15}


def test_chunked_checkpointed_tensor_ops_give_the_same_results(potential64):
    """Large systems on GPUs go through edge chunks recomputed in the backward pass."""
    atoms = STRUCTURES["Si rattled"]()
    convolutions = [layer.fast["convolution"] for layer in potential64.model.layers]
    _set_kernels(potential64, False)
    try:
        whole = _results(potential64, atoms)
        for conv in convolutions:
            conv.max_chunk_elements = 5000  # about 40 edges per chunk
        chunked = _results(potential64, atoms)
    finally:
        for conv in convolutions:
            conv.max_chunk_elements = 2**28
        _set_kernels(potential64, True)
    for key, value in whole.items():
        assert np.abs(chunked[key] - value).max() < CHUNK_TOL[key], key


@pytest.mark.skipif(spline_conv_library() is None, reason="needs the compiled CPU kernels")
def test_fused_kernel_in_many_edge_chunks_gives_the_same_results(potential64):
    """Large systems go through the fused kernel in chunks of receivers (forward) and of
    senders (backward), with the per-edge coupling recomputed per chunk."""
    atoms = STRUCTURES["Si rattled"]()
    convolutions = [layer.fast["convolution"] for layer in potential64.model.layers]
    whole = _results(potential64, atoms)
    try:
        for conv in convolutions:
            conv.max_fused_chunk_elements = 3000  # a few receivers per chunk, hundreds of chunks
        chunked = _results(potential64, atoms)
    finally:
        for conv in convolutions:
            conv.max_fused_chunk_elements = 2**24
    for key, value in whole.items():
        assert np.abs(chunked[key] - value).max() < CHUNK_TOL[key], key


def test_the_kernel_switch_is_read_at_every_evaluation(potential64, monkeypatch):
    """FACET_CALC_KERNELS=0 set after the first evaluation takes effect at the next one (nothing
    caches it), and the model then reports the torch path."""
    if spline_conv_library() is None:
        pytest.skip("no compiled kernel here")
    _set_kernels(potential64, True)
    assert potential64.model.backend == "kernel"
    monkeypatch.setenv("FACET_CALC_KERNELS", "0")
    assert potential64.model.backend == "torch"
    monkeypatch.delenv("FACET_CALC_KERNELS")
    assert potential64.model.backend == "kernel"


@pytest.mark.integration
@pytest.mark.parametrize(
    "env, expect_library",
    [
        ({"FACET_CALC_KERNELS": "0"}, False),
        ({"FACET_CALC_CACHE": "/proc/no-such-dir"}, spline_conv_library() is not None),
    ],
)
def test_without_kernels_the_calculator_still_works(env, expect_library, tmp_path):
    """Disabled kernels fall back to the pure-torch path; a cache that cannot be written to a
    private temporary directory (or, without a compiler, the pure-torch path): same numbers."""
    import os
    import sys

    import processes

    code = (
        "from ase.build import bulk\n"
        "from facet_calc import FacetCalculator\n"
        "import torch\n"
        "from facet_calc.nn._kernels import kernel_launcher\n"
        "a = bulk('Si', 'diamond', a=5.43); a.rattle(0.05, seed=0)\n"
        "a.calc = FacetCalculator(dtype='float64')\n"
        "print(kernel_launcher(torch.device('cpu')) is None, repr(a.get_potential_energy()))\n"
    )
    what = f"a calculator in a fresh interpreter with {env}"  # measured 19.5 s, 21.3 s with a build
    run = processes.run([sys.executable, "-c", code], what=what, timeout=200, env={**os.environ, **env})
    assert run.returncode == 0, run.stderr[-2000:]
    no_library, energy = run.stdout.split()
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=0)
    atoms.calc = FacetCalculator(load_potential("7net-0-spline", dtype="float64"))
    assert no_library == str(not expect_library)
    assert float(energy) == pytest.approx(atoms.get_potential_energy(), abs=2e-14)  # measured 1.8e-15 (1 ulp)


@pytest.mark.skipif(spline_conv_library() is None, reason="no C++ compiler")
def test_compiled_edges_by_sender_equals_a_stable_argsort():
    """The kernels' counting sort of edges by sender against torch's stable sort, on graphs
    with empty nodes and without edges; inconsistent offsets are refused."""
    from facet_calc.nn._kernels import kernel_launcher
    from facet_calc.nn.blocks.fast_convolution import _edges_by_sender, _offsets

    backend = kernel_launcher(torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for n_nodes, n_edges in [(1, 0), (9, 40), (1000, 28000), (50, 3)]:
        senders = torch.randint(0, n_nodes, (n_edges,), generator=gen)
        ptr = _offsets(senders, n_nodes)
        assert torch.equal(backend.edges_by_sender(senders, ptr), torch.argsort(senders, stable=True))
        assert torch.equal(_edges_by_sender(senders, ptr), torch.argsort(senders, stable=True))
    with pytest.raises(ValueError, match="out of range or the offsets do not match"):
        backend.edges_by_sender(torch.tensor([0, 5]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="out of range or the offsets do not match"):
        backend.edges_by_sender(torch.tensor([0, 0]), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("kernels", KERNEL_MODES)
def test_per_edge_work_is_done_once_per_evaluation(potential64, kernels, monkeypatch):
    """Sortedness, CSR offsets and the spline basis are shared by all layers: each is computed
    once per model evaluation, and the results equal those of per-layer bookkeeping."""
    import facet_calc.nn.blocks.fast_convolution as fc
    from facet_calc.nn import evaluate

    model = potential64.model
    atoms = STRUCTURES["triclinic LiFeO"]()
    graph = potential64.graph(atoms)
    calls = {"basis": 0, "index": 0}
    real_basis, real_index = fc.spline_basis, fc._EdgeIndex.__init__

    def counted_basis(*a, **k):
        calls["basis"] += 1
        return real_basis(*a, **k)

    def counted_index(self, *a, **k):
        calls["index"] += 1
        real_index(self, *a, **k)

    monkeypatch.setattr(fc, "spline_basis", counted_basis)
    monkeypatch.setattr(fc._EdgeIndex, "__init__", counted_index)
    _set_kernels(potential64, kernels)
    try:
        shared = evaluate(model, graph)
        counts = dict(calls)
        # the per-layer bookkeeping of before: every layer builds its own context
        real_forward = model.forward

        def per_layer_forward(species, edge_vec, senders, receivers):
            x = model.embedding(torch.nn.functional.one_hot(species, model.n_species).to(edge_vec.dtype))
            sh = model.spherical_harmonics(edge_vec)
            r = torch.linalg.norm(edge_vec, dim=-1)
            for layer in model.layers:
                x = layer(x, sh, r, senders, receivers)
            out = model.readout_out(model.readout_hidden(x)).squeeze(-1)
            return out * model.scale[species] + model.shift[species]

        monkeypatch.setattr(model, "forward", per_layer_forward)
        calls.update(basis=0, index=0)
        separate = evaluate(model, graph)
        n_layers = len(model.layers)
        assert calls["basis"] == n_layers  # the check above counts what it claims to
        monkeypatch.setattr(model, "forward", real_forward)
    finally:
        _set_kernels(potential64, True)
    assert counts == {"basis": 1, "index": 1 if kernels else 0}
    for key in ("energy", "forces", "virial"):  # measured: 0, 4.5e-14, 1.0e-13
        assert torch.allclose(shared[key], separate[key], rtol=0, atol=1e-12), key


def test_frozen_parameter_caches_follow_in_place_changes():
    """Inference reuses matrices and tables derived from frozen parameters
    (nn.derived.DerivedCache); changing a parameter in place must invalidate them: the
    changed model equals a fresh one built from its state dict, on the fast paths and the
    e3nn reference alike."""
    atoms = STRUCTURES["triclinic LiFeO"]()
    for backend in ("kernel", "torch", "e3nn"):
        potential = load_potential("7net-0-spline", dtype="float64", backend=backend)
        before = _results(potential, atoms)["energy"]  # fills the caches
        with torch.no_grad():
            for name, param in potential.model.named_parameters():
                if name.endswith(("weight", "values")):
                    param.mul_(1.02)
        changed = _results(potential, atoms)
        fresh = load_potential("7net-0-spline", dtype="float64", backend=backend)
        fresh.model.load_state_dict(potential.model.state_dict())
        expected = _results(fresh, atoms)
        assert abs(float(changed["energy"] - before)) > 0.2, backend  # measured 2.38 eV
        # measured 0 (the same arithmetic); a few ulps allowed
        assert abs(float(changed["energy"] - expected["energy"])) < 2e-15 * abs(float(expected["energy"])), backend
        assert np.abs(changed["forces"] - expected["forces"]).max() < 1e-13, backend


def test_derived_cache_is_bypassed_while_sources_train():
    from facet_calc.nn.blocks.derived import DerivedCache

    cache, calls = DerivedCache(), []
    weight = torch.ones(3)

    def make():
        calls.append(1)
        return weight * 2

    assert cache.get("w", (weight,), make) is cache.get("w", (weight,), make) and len(calls) == 1
    weight.add_(1.0)  # in place: the version changes
    assert torch.equal(cache.get("w", (weight,), make), torch.full((3,), 4.0)) and len(calls) == 2
    other = weight.clone()  # equal values, another tensor: not the cached one's source
    cache.get("w", (other,), make)
    assert len(calls) == 3
    weight.requires_grad_(True)
    out = cache.get("w", (weight,), make)
    assert out.requires_grad and len(calls) == 4  # training: recomputed, in the graph
    with torch.no_grad():
        cache.get("w", (weight,), make)
        cache.get("w", (weight,), make)
    assert len(calls) == 5


LINEAR_MODES = [pytest.param(False, id="torch")]
if spline_conv_library() is not None:
    LINEAR_MODES.append(pytest.param(True, id="compiled"))


@pytest.mark.parametrize("use_kernel", LINEAR_MODES)
@pytest.mark.parametrize(
    "irreps_in, irreps_out, kernel_serves",
    [
        ("128x0e+64x1e+32x2e", "128x0e+64x1e+32x2e", True),  # 7net-0's layers (torch: kron(W_l, I))
        ("3x1o+4x0e+2x1o+2x3o+5x2e", "2x0e+3x1o+1x2e+2x3o+4x1o", False),  # gathers, a permuted output, l = 3
        ("4x0e+3x1e", "4x0e+2x2e+3x1e", False),  # an output order no input reaches: zeros
        ("2x0e+120x1o", "4x0e+120x1o", True),  # mul d above kron_max_width (torch: the transposing product)
        ("8x0e+37x1o+21x2e+5x3o", "8x0e+48x1o+16x2e+16x3o", True),  # odd input widths, l = 1..3
    ],
)
def test_fast_linear_matches_e3nn_linear_frozen_and_training(irreps_in, irreps_out, kernel_serves, use_kernel,
                                                              monkeypatch):  # fmt: skip
    """FastLinear's frozen plan (one autograd node; with the compiled per-order products or
    torch's) and its training path equal e3nn's Linear, values and gradients, float64."""
    from e3nn import o3

    from facet_calc.nn._kernels.cpu import CpuBackend
    from facet_calc.nn.blocks.fast_linear import FastLinear

    compiled = []
    original = CpuBackend.component_linear

    def counted(self, x, weight, out, d):
        done = original(self, x, weight, out, d)
        compiled.append(done)
        return done

    monkeypatch.setattr(CpuBackend, "component_linear", counted)
    torch.manual_seed(0)
    lin = o3.Linear(irreps_in, irreps_out).double()
    fast = FastLinear(lin)
    x = torch.randn(7, lin.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, lin.irreps_out.dim, dtype=torch.float64)
    want = lin(x)
    want_x, want_w = torch.autograd.grad(want, [x, lin.weight], g)
    got = fast(x, lin.weight, use_kernel=use_kernel)  # training: autograd through the per-order products
    got_x, got_w = torch.autograd.grad(got, [x, lin.weight], g)
    assert torch.allclose(got, want, atol=1e-13) and torch.allclose(got_x, want_x, atol=1e-13)
    assert torch.allclose(got_w, want_w, atol=1e-13)
    lin.weight.requires_grad_(False)
    for _ in range(2):  # the second call reuses the cached plan
        frozen = fast(x, lin.weight, use_kernel=use_kernel)
        (frozen_x,) = torch.autograd.grad(frozen, [x], g)
        assert torch.allclose(frozen, want, atol=1e-13) and torch.allclose(frozen_x, want_x, atol=1e-13)
    # differentiable backward (create_graph, as force training through a frozen linear): the
    # gradient of <grad_x, v> with respect to the output gradient g
    v, g = torch.randn_like(x), g.clone().requires_grad_(True)
    for module, kwargs in ((lin, {}), (fast, {"weight": lin.weight, "use_kernel": use_kernel})):
        (gx,) = torch.autograd.grad(module(x, **kwargs), [x], g, create_graph=True)
        (second,) = torch.autograd.grad((gx * v).sum(), [g])
        if module is lin:
            want_second = second
    assert torch.allclose(second, want_second, atol=1e-13)
    # the kernel multiplies the orders l > 0 whose output channels fill its vectors (float64:
    # 8 lanes with AVX-512, 4 below) and that are read from a column span; torch the others
    assert any(compiled) == (use_kernel and kernel_serves), compiled


@pytest.mark.parametrize("acts", [("silu", "silu"), ("tanh", "sigmoid"), ("ssp", "sigmoid")])
def test_fast_gate_matches_e3nn_gate(acts):
    """FastGate equals e3nn's Gate, values and input gradients, float64."""
    from e3nn import o3
    from e3nn.nn import Gate

    from facet_calc.nn.blocks.activations import activation
    from facet_calc.nn.blocks.fast_gate import FastGate

    torch.manual_seed(0)
    gate = Gate(o3.Irreps("8x0e"), [activation(acts[0])], o3.Irreps("5x0e"), [activation(acts[1])],
                o3.Irreps("3x1o+2x2e")).double()  # fmt: skip
    x = torch.randn(6, gate.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, gate.irreps_out.dim, dtype=torch.float64)
    want = gate(x)
    (want_x,) = torch.autograd.grad(want, [x], g)
    got = FastGate(gate)(x)
    (got_x,) = torch.autograd.grad(got, [x], g)
    assert torch.allclose(got, want, atol=1e-14) and torch.allclose(got_x, want_x, atol=1e-14)


@pytest.mark.parametrize(
    "irreps, normalization",
    [("1x0e+1x1e+1x2e", "component"), ("1x0e+1x1o+1x2e", "integral"), ("0e+1o", "norm"), ("0e+1o+2e+3o", "component")],
)
def test_one_node_edge_geometry_matches_e3nn(irreps, normalization):
    """The one-node spherical harmonics and lengths: the same values as e3nn's module and
    |edge_vec|, and the same gradients (float64); l = 3 falls back to e3nn's module."""
    from e3nn import o3

    from facet_calc.nn.blocks.edge_geometry import edge_geometry

    torch.manual_seed(0)
    module = o3.SphericalHarmonics(irreps, normalize=True, normalization=normalization)
    vec = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    g_sh = torch.randn(50, module.irreps_out.dim, dtype=torch.float64)
    g_r = torch.randn(50, dtype=torch.float64)
    results = []
    for one_node in (False, True):
        sh, r = edge_geometry(module, vec, one_node=one_node)
        (grad,) = torch.autograd.grad((sh * g_sh).sum() + (r * g_r).sum(), [vec])
        results.append((sh, r, grad, type(sh.grad_fn).__name__))
    (sh0, r0, grad0, _), (sh1, r1, grad1, node) = results
    assert torch.equal(sh0, sh1) and torch.equal(r0, r1)
    assert torch.allclose(grad0, grad1, rtol=0, atol=1e-13)  # measured: up to 5.4e-15
    assert (node == "_EdgeGeometryBackward") == ("3o" not in irreps)


def test_a_copied_model_keeps_the_fused_kernel(potential64, monkeypatch):
    """A deep copy of a model (e.g. a float32 copy of a float64 one) runs the fused kernel as
    the original does: the backends are compared by identity, so copying or pickling one must
    give the same object back (a copy once fell silently to the torch path, 2.7x slower)."""
    import copy
    import pickle

    from facet_calc.nn.backend import BACKENDS
    from facet_calc.potential import Potential

    for backend in BACKENDS.values():
        assert copy.deepcopy(backend) is backend and pickle.loads(pickle.dumps(backend)) is backend
    if spline_conv_library() is None:
        pytest.skip("no compiled kernel here")
    from facet_calc.nn._kernels.cpu import CpuBackend

    _set_kernels(potential64, True)
    copied = copy.deepcopy(potential64.model).to(torch.float32)
    calls = []
    original = CpuBackend.forward_block
    monkeypatch.setattr(CpuBackend, "forward_block", lambda self, *args: calls.append(1) or original(self, *args))
    atoms = STRUCTURES["Si rattled"]()
    atoms.calc = FacetCalculator(Potential("copy", potential64.config, copied, potential64.path))
    atoms.get_forces()
    assert calls, "the copied model ran the torch path, not the fused kernel"
