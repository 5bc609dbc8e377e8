"""The torch-sim adapter: torch-sim's own conformance check, and FacetCalculator structure by
structure as the reference."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

ts = pytest.importorskip("torch_sim", reason="the torch-sim adapter needs the torchsim extra")

from facet_calc import FacetCalculator  # noqa: E402
from facet_calc.torchsim import FacetTorchSimModel  # noqa: E402


@pytest.fixture(scope="module")
def model64(potential64):
    return FacetTorchSimModel(potential64, device="cpu")


def _structures():
    rng = np.random.default_rng(3)
    frames = [
        bulk("Si", "diamond", a=5.43, cubic=True),
        bulk("NaCl", "rocksalt", a=5.6),
        bulk("Fe", "bcc", a=2.87),
        bulk("Cu", "fcc", a=3.6) * (2, 1, 1),
    ]
    cell = np.diag([4.1, 4.6, 3.3]) + rng.normal(0, 0.3, (3, 3))
    frames.append(Atoms("LiFeO2", scaled_positions=rng.uniform(0, 1, (4, 3)), cell=cell, pbc=True))
    for atoms in frames:
        atoms.rattle(0.05, seed=int(rng.integers(1000)))
    return frames


def test_passes_torch_sims_own_validation(model64, potential32):
    from torch_sim.models.interface import validate_model_outputs

    validate_model_outputs(model64, torch.device("cpu"), torch.float64)
    validate_model_outputs(FacetTorchSimModel(potential32, device="cpu"), torch.device("cpu"), torch.float32)


def test_matches_the_ase_calculator_structure_by_structure(model64, potential64):
    frames = _structures()
    state = ts.io.atoms_to_state(frames, torch.device("cpu"), torch.float64)
    out = model64(state)
    assert out["energy"].shape == (len(frames),) and out["stress"].shape == (len(frames), 3, 3)
    start = 0
    for k, atoms in enumerate(frames):
        calc = FacetCalculator(potential64)
        calc.calculate(atoms.copy(), ["energy", "forces", "stress"])
        ref = calc.results
        n = len(atoms)
        # measured agreement 1e-14 relative; the promise is 1e-6
        assert out["energy"][k].item() == pytest.approx(ref["energy"], rel=1e-12)
        np.testing.assert_allclose(out["forces"][start : start + n].numpy(), ref["forces"], rtol=0, atol=1e-11)
        stress = out["stress"][k].numpy()
        voigt = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        np.testing.assert_allclose(voigt, ref["stress"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(stress, stress.T, atol=1e-14)
        start += n


def test_an_edge_budget_splits_a_state_into_batches_with_the_same_numbers(model64, potential64):
    """A state with more edges than ``max_edges`` is evaluated in several model calls (memory
    bounded as in calculate_many); the results equal one call's."""
    frames = _structures()
    state = ts.io.atoms_to_state(frames, torch.device("cpu"), torch.float64)
    whole = model64(state)
    small = FacetTorchSimModel(potential64, device="cpu", max_edges=500)  # each system alone
    parts = small(state)
    for key in ("energy", "forces", "stress"):
        assert (parts[key] - whole[key]).abs().max() < 1e-12, key


def test_forces_and_stress_are_derivatives_of_the_energy(model64):
    """Independent of the calculator: finite differences of the batched energy."""
    frames = _structures()[:2]
    state = ts.io.atoms_to_state(frames, torch.device("cpu"), torch.float64)
    out = model64(state)
    h = 1e-5
    for atom, axis in ((1, 0), (9, 2)):  # an atom of each system
        system = int(state.system_idx[atom])
        energies = []
        for sign in (1, -1):
            moved = state.clone()
            moved.positions[atom, axis] += sign * h
            energies.append(model64(moved)["energy"][system].item())
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(out["forces"][atom, axis].item(), abs=1e-6)
    # stress: d E / d strain / V for a strain of the first system's cell (positions follow)
    eps = np.zeros((3, 3))
    eps[0, 1] = eps[1, 0] = 0.5
    energies = []
    for sign in (1, -1):
        strained = frames[0].copy()
        strained.set_cell(frames[0].cell.array @ (np.eye(3) + sign * h * eps), scale_atoms=True)
        strained_state = ts.io.atoms_to_state([strained], torch.device("cpu"), torch.float64)
        energies.append(model64(strained_state)["energy"][0].item())
    dE = (energies[0] - energies[1]) / (2 * h)
    sigma_xy = out["stress"][0, 0, 1].item()
    assert dE / frames[0].get_volume() == pytest.approx(sigma_xy, abs=1e-7)


def test_molecule_has_no_stress_and_unknown_elements_are_named(model64, potential64):
    state = ts.io.atoms_to_state([molecule("H2O")], torch.device("cpu"), torch.float64)
    out = model64(state)
    assert torch.isnan(out["stress"]).all()
    calc = FacetCalculator(potential64)
    calc.calculate(molecule("H2O"), ["energy", "forces"])
    np.testing.assert_allclose(out["forces"].numpy(), calc.results["forces"], atol=1e-12)
    bad = ts.io.atoms_to_state([Atoms("Fm", cell=np.eye(3) * 5, pbc=True)], torch.device("cpu"), torch.float64)
    with pytest.raises(ValueError, match=r"element\(s\) Fm"):
        model64(bad)
    with pytest.raises(ValueError, match="loaded with dtype=torch.float64, not torch.float32"):
        FacetTorchSimModel(potential64, dtype=torch.float32)


def test_switching_outputs_off(potential64):
    model = FacetTorchSimModel(potential64, device="cpu", compute_stress=False)
    state = ts.io.atoms_to_state(_structures()[:2], torch.device("cpu"), torch.float64)
    out = model(state)
    assert "stress" not in out and out["forces"].shape == (10, 3)
    model.compute_forces = False
    assert set(model(state)) == {"energy"}


def test_current_torch_sim_pbc_tensor_and_mixed_periodicity(model64, potential64):
    """torch-sim >= 0.4 holds ``state.pbc`` as a (3,) tensor and allows mixed periodicity."""
    from ase.build import fcc111

    slab = fcc111("Pt", (2, 2, 3), vacuum=5.0)
    slab.rattle(0.05, seed=2)
    slab.pbc = (True, True, False)
    state = ts.io.atoms_to_state([slab], torch.device("cpu"), torch.float64)
    state.pbc = torch.tensor([True, True, False])
    out = model64(state)
    calc = FacetCalculator(potential64)
    calc.calculate(slab.copy(), ["energy", "forces", "stress"])
    assert out["energy"][0].item() == pytest.approx(calc.results["energy"], rel=1e-12)
    np.testing.assert_allclose(out["forces"].numpy(), calc.results["forces"], atol=1e-11)
    isolated = state.clone()
    isolated.pbc = torch.tensor([False, False, False])  # no in-plane images: a different energy
    assert abs(model64(isolated)["energy"][0].item() - out["energy"][0].item()) > 1e-2


def test_a_committee_gives_mean_and_spread_per_system(tmp_path):
    """A committee of three tiny Cu models: energies, forces and stresses are the members' mean and
    the *_std keys their spread, per system, as FacetCalculator gives them structure by structure
    (the batch of two systems has one small and one larger cell, so both stacked and shared
    member evaluation may run)."""
    from facet_calc.committee import save_committee
    from facet_calc.nn import build_model, initialise_for_training
    from facet_calc.nn.families.facet import facet_config

    config = facet_config([29], hidden="4x0e+2x1o+2x2e", embedding=4, n_layers=2, scalar_mlp=[4], cutoff=4.0,
                          mixer={"channels": 4, "grid_degree": 11}, n_intervals=8, avg_num_neighbors=12.0)  # fmt: skip
    members = []
    for seed in range(3):
        model = initialise_for_training(build_model(config, torch.float64), seed)
        gen = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("radial.slopes"):  # noise: members that differ and layers that act
                    p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        members.append((config, {k: v.detach().clone() for k, v in model.named_parameters()}, "# test\n"))
    folder = save_committee(tmp_path / "committee", members)
    frames = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)]
    for k, atoms in enumerate(frames):
        atoms.rattle(0.05, seed=k)
    model = FacetTorchSimModel(folder, device="cpu", dtype=torch.float64)
    out = model(ts.io.atoms_to_state(frames, torch.device("cpu"), torch.float64))
    assert out["forces_std"].shape == (sum(len(a) for a in frames),)
    start = 0
    for k, atoms in enumerate(frames):
        calc = FacetCalculator(folder, dtype="float64", device="cpu")
        calc.calculate(atoms.copy(), ["energy", "forces", "stress"])
        ref, n = calc.results, len(atoms)
        assert out["energy"][k].item() == pytest.approx(ref["energy"], rel=1e-12)
        assert out["energy_std"][k].item() == pytest.approx(ref["energy_std"], rel=1e-9)
        np.testing.assert_allclose(out["forces"][start : start + n].numpy(), ref["forces"], rtol=0, atol=1e-11)
        np.testing.assert_allclose(out["forces_std"][start : start + n].numpy(), ref["forces_std"], rtol=0, atol=1e-11)
        voigt = [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]
        np.testing.assert_allclose(out["stress"][k].numpy()[voigt], ref["stress"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["stress_std"][k].numpy()[voigt], ref["stress_std"], rtol=0, atol=1e-12)
        start += n
    assert float(out["forces_std"].min()) > 1e-4  # the members differ: the spread is measured, not zero
