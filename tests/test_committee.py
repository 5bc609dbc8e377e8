"""Committees: the shared-edge evaluation against each member evaluated on its own, the
calculator's mean and spread against numpy over separately evaluated members, K=1, and the MD
monitor that stops a run when the members disagree."""

import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from facet_calc import FacetCalculator
from facet_calc.committee import load_committee, save_committee
from facet_calc.graph import collate, graph_from_atoms
from facet_calc.nn import build_model, initialise_for_training
from facet_calc.nn.committee import evaluate_committee, evaluate_members
from facet_calc.nn.families.facet import facet_config
from facet_calc.workflows import UncertaintyExceeded, UncertaintyMonitor, UncertaintyWarning, run_md

CONFIG = facet_config([29], hidden="4x0e+2x1o+2x2e", embedding=4, n_layers=2, mixer={"channels": 4, "grid_degree": 11},
                      scalar_mlp=[4], cutoff=4.0, n_intervals=8, avg_num_neighbors=12.0)  # fmt: skip
#: float64 round-off of a mean and a std over three members (measured ~1e-13)
TOL = 1e-9


def member(seed: int, noise: float = 0.3) -> dict[str, torch.Tensor]:
    """A tiny Cu model's weights: seeded start plus seeded noise (the zero-initialised residual
    scales would otherwise make every layer the identity and every force zero)."""
    model = build_model(CONFIG, torch.float64)
    initialise_for_training(model, seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("radial.slopes"):
                p.add_(noise * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    model.eval()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def committee_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("committee") / "cu-committee"
    save_committee(folder, [(dict(CONFIG, description="test member"), member(s), "# test\n") for s in range(3)])
    return folder


@pytest.fixture()
def atoms():
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    a.rattle(0.05, seed=3)
    return a


@pytest.mark.parametrize("backend", ["kernel", "torch"])
@pytest.mark.parametrize("how", ["stacked", "shared"])
def test_committee_evaluation_equals_members_alone(committee_dir, atoms, how, backend):
    """Both fast paths against each member evaluated on its own, on a batch of two structures
    (so the stacked path's per-member edge copies and the per-structure virials are exercised)."""
    committee = load_committee(committee_dir, dtype="float64", device="cpu")
    for model in committee.models:
        model.set_backend(backend)
    other = atoms.copy()
    other.rattle(0.1, seed=7)
    graph = collate([graph_from_atoms(a, committee.cutoff, committee.species) for a in (atoms, other)])
    fast = evaluate_committee(committee.models, graph, how=how)
    plain = evaluate_members(committee.models, graph)
    for key in ("energy", "energies", "forces", "virial"):
        assert fast[key].shape[0] == 3
        torch.testing.assert_close(fast[key], plain[key], rtol=0, atol=TOL)
    assert float(fast["forces"].std(0).max()) > 1e-3  # the members differ: the test can fail


#: channels the compiled kernel can stack (multiples of its vectors' half width in float32 and
#: float64 at every instruction-set level): the members then share one kernel pass per layer; a
#: mixer of 16 channels, which the compiled grid step serves (AVX2 and AVX-512 builds)
STACKABLE = dict(CONFIG, hidden="8x0e+8x1o+8x2e", embedding=8, mixer=dict(CONFIG["mixer"], channels=16))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_members_stacked_in_one_kernel_pass_equal_members_alone(tmp_path, atoms, dtype):
    """The stacked kernel (the members' channels side by side, one edge loop, per-member
    gradients of the spherical harmonics and spline basis) against each member alone."""
    from facet_calc.nn._kernels import kernel_launcher
    from facet_calc.nn.committee import _stack_of

    if kernel_launcher(torch.device("cpu")) is None:
        pytest.skip("no compiled kernel here")
    torch.manual_seed(0)
    members = []
    for s in range(3):
        model = build_model(STACKABLE, torch.float64)
        initialise_for_training(model, s)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("radial.slopes"):
                    p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype))
        weights = {k: v.detach().clone() for k, v in model.named_parameters()}
        members.append((dict(STACKABLE, description="test member"), weights, "# test\n"))
    committee = load_committee(save_committee(tmp_path / "c", members), dtype=dtype, device="cpu")
    other = atoms.copy()
    other.rattle(0.1, seed=7)
    graph = collate([graph_from_atoms(a, committee.cutoff, committee.species) for a in (atoms, other)])
    fast = evaluate_committee(committee.models, graph, how="stacked")
    assert _stack_of(committee.models).layers[0]._kernel_blocks(torch.device("cpu")) is not None  # it ran
    plain = evaluate_members(committee.models, graph)
    tol = TOL if dtype == "float64" else 1e-5  # float32: summation order differs (measured 1e-6)
    for key in ("energy", "energies", "forces", "virial"):
        torch.testing.assert_close(fast[key], plain[key], rtol=0, atol=tol)
    assert float(fast["forces"].std(0).max()) > 1e-2  # the members differ: the test can fail


def test_stacked_committee_follows_changed_weights(committee_dir, atoms):
    """The stacked members' weights are copies: changing a member's parameters rebuilds them."""
    committee = load_committee(committee_dir, dtype="float32", device="cpu")
    graph = graph_from_atoms(atoms, committee.cutoff, committee.species)
    before = evaluate_committee(committee.models, graph, how="stacked")
    with torch.no_grad():
        committee.models[1].readout_weight.mul_(2.0)
    after = evaluate_committee(committee.models, graph, how="stacked")
    plain = evaluate_members(committee.models, graph)
    torch.testing.assert_close(after["forces"], plain["forces"], rtol=0, atol=1e-5)  # float32 round-off ~1e-7
    torch.testing.assert_close(after["forces"][0], before["forces"][0], rtol=0, atol=0)
    assert float((after["forces"][1] - before["forces"][1]).abs().max()) > 1e-3


def test_stacking_refuses_what_it_cannot_stack(committee_dir, atoms):
    committee = load_committee(committee_dir, dtype="float64", device="cpu")
    graph = graph_from_atoms(atoms, committee.cutoff, committee.species)
    with pytest.raises(ValueError, match="how='stacked' needs two or more Facet models"):
        evaluate_committee(committee.models[:1], graph, how="stacked")
    committee.models[2].set_backend("e3nn")  # the reference path is never stacked
    with pytest.raises(ValueError, match="how='stacked'"):
        evaluate_committee(committee.models, graph, how="stacked")
    with pytest.raises(ValueError, match="how must be"):
        evaluate_committee(committee.models, graph, how="fast")
    # auto falls back to the shared path, with the same numbers
    torch.testing.assert_close(evaluate_committee(committee.models, graph)["forces"],
                               evaluate_members(committee.models, graph)["forces"], rtol=0, atol=TOL)  # fmt: skip


def test_calculator_mean_and_std_against_members(committee_dir, atoms):
    calc = FacetCalculator(committee_dir, dtype="float64", device="cpu")
    atoms.calc = calc
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    singles = []
    for k in range(3):
        probe = atoms.copy()
        probe.calc = FacetCalculator(committee_dir / f"member-{k}", dtype="float64", device="cpu")
        singles.append((probe.get_potential_energy(), probe.get_forces(), probe.get_stress()))
    e = np.array([s[0] for s in singles])
    f = np.stack([s[1] for s in singles])
    s = np.stack([s[2] for s in singles])
    np.testing.assert_allclose(energy, e.mean(), atol=TOL)
    np.testing.assert_allclose(forces, f.mean(0), atol=TOL)
    np.testing.assert_allclose(stress, s.mean(0), atol=TOL)
    res = calc.results
    np.testing.assert_allclose(res["energy_std"], np.std(e), atol=TOL)
    np.testing.assert_allclose(res["forces_std"], np.sqrt((np.std(f, axis=0) ** 2).sum(-1)), atol=TOL)
    np.testing.assert_allclose(res["stress_std"], np.std(s, axis=0), atol=TOL)
    np.testing.assert_allclose(res["forces_members"], f, atol=TOL)
    assert res["forces_std"].shape == (len(atoms),)
    assert res["energy_std"] > 0
    np.testing.assert_allclose(calc.get_property("forces_std", atoms), res["forces_std"])
    # a list of the member folders is the same committee
    listed = FacetCalculator([committee_dir / f"member-{k}" for k in range(3)], dtype="float64", device="cpu")
    np.testing.assert_allclose(listed.get_forces(atoms), forces, atol=TOL)
    # calculate_many batches structures through the same path
    many = calc.calculate_many([atoms, atoms.copy()])
    np.testing.assert_allclose(many[1]["forces_std"], res["forces_std"], atol=TOL)


def test_one_member_has_zero_spread(committee_dir, atoms):
    calc = FacetCalculator([committee_dir / "member-1"], dtype="float64", device="cpu")
    atoms.calc = calc
    atoms.get_forces()
    single = FacetCalculator(committee_dir / "member-1", dtype="float64", device="cpu")
    np.testing.assert_allclose(calc.results["forces"], single.get_forces(atoms), atol=TOL)
    assert calc.results["energy_std"] == 0
    assert np.all(calc.results["forces_std"] == 0) and np.all(calc.results["stress_std"] == 0)


def test_members_must_agree_on_cutoff(committee_dir, tmp_path):
    from facet_calc.potential import save_potential

    other = dict(CONFIG, cutoff=3.5, radial=dict(CONFIG["radial"], r_max=3.5), name="other")
    save_potential(tmp_path / "other", other, member(5), "# other\n")
    with pytest.raises(ValueError, match="cutoff"):
        load_committee([committee_dir / "member-0", tmp_path / "other"], dtype="float64", device="cpu")


def test_monitor_stops_and_warns(committee_dir, atoms):
    atoms.calc = FacetCalculator(committee_dir, dtype="float64", device="cpu")
    spread = float(np.max(atoms.calc.get_property("forces_std", atoms)))
    # the threshold just below the starting spread: the first observer call stops the run
    monitor = UncertaintyMonitor(atoms, threshold=0.5 * spread, action="stop")
    dyn = VelocityVerlet(atoms, timestep=1 * units.fs)
    dyn.attach(monitor, interval=1)
    with pytest.raises(UncertaintyExceeded, match="exceeds the threshold"):
        dyn.run(5)
    assert dyn.nsteps == 0
    result = run_md(atoms, atoms.calc, ensemble="nve", steps=5, log_interval=1, progress=False,
                    observers=[UncertaintyMonitor(atoms, 0.5 * spread)])  # fmt: skip
    assert result.interrupted and "exceeds" in result.stop_reason and result.steps_done == 0
    high = run_md(atoms, atoms.calc, ensemble="nve", steps=3, log_interval=1, progress=False,
                  observers=[UncertaintyMonitor(atoms, 100 * spread)])  # fmt: skip
    assert not high.interrupted and high.steps_done == 3
    warn = UncertaintyMonitor(atoms, 0.5 * spread, action="warn")
    with pytest.warns(UncertaintyWarning):
        warn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn()  # once per crossing, not every step


def test_monitor_needs_a_committee(committee_dir, atoms):
    atoms.calc = FacetCalculator(committee_dir / "member-0", dtype="float64", device="cpu")
    with pytest.raises(ValueError, match="committee calculator"):
        UncertaintyMonitor(atoms, 0.1)()
