"""Training and fine-tuning: bad data is refused, the loss falls, EMT forces are learned,
resume is exact, and the saved potential runs on the fast path with the physics intact."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from facet_calc import FacetCalculator, load_potential
from facet_calc.testing import (
    emt_cu_frames,
    finite_difference_forces,
    finite_difference_stress,
    force_mae,
    random_rotation,
    relative_error,
)
from facet_calc.train import DataError, LabelKeys, Trainer, TrainSettings, finetune, read_configurations
from facet_calc.train.data import split

SETTINGS = dict(epochs=10, batch_size=4, lr=3e-4, dtype="float32", ema_decay=0.9, warmup_epochs=0.5, seed=1)


@pytest.fixture(scope="module")
def emt_run(tmp_path_factory):
    """One fine-tuning run of 7net-0-spline on EMT-labelled Cu, shared by the tests below."""
    folder = tmp_path_factory.mktemp("emt")
    write(folder / "train.extxyz", emt_cu_frames(16, seed=1))
    write(folder / "valid.extxyz", emt_cu_frames(4, seed=2))
    result = finetune(
        "7net-0-spline",
        folder / "train.extxyz",
        folder / "run",
        TrainSettings(**SETTINGS),
        valid=folder / "valid.extxyz",
        progress=False,
    )
    return folder, result


def test_finetuning_on_emt_learns_emt_forces(emt_run):
    folder, result = emt_run
    held_out = emt_cu_frames(6, seed=3)
    base = force_mae(FacetCalculator("7net-0-spline", dtype="float64"), held_out)
    tuned = force_mae(FacetCalculator(result.potential_dir, dtype="float64"), held_out)
    history = result.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]  # the loss falls
    # measured: base 0.144 eV/A, fine-tuned 0.07 eV/A after 6 short epochs of 16 structures
    assert tuned < 0.6 * base


def test_saved_potential_fast_path_matches_reference_and_keeps_the_cutoff(emt_run):
    _, result = emt_run
    fast = load_potential(result.potential_dir, dtype="float64")
    plain = load_potential(result.potential_dir, dtype="float64", backend="e3nn")
    assert fast.model.backend != "e3nn"
    atoms = emt_cu_frames(1, seed=4)[0].repeat((2, 1, 1))
    out = {}
    for name, potential in (("fast", fast), ("plain", plain)):
        probe = atoms.copy()
        probe.calc = FacetCalculator(potential)
        out[name] = (probe.get_potential_energy(), probe.get_forces(), probe.get_stress())
    assert abs(out["fast"][0] - out["plain"][0]) / abs(out["plain"][0]) < 1e-12  # measured 0 (Si: 0)
    for k in (1, 2):
        assert relative_error(out["fast"][k], out["plain"][k]) < 1e-12  # measured ~2e-14 (Si: 1.8e-14)
    for layer in fast.model.layers:
        radial = layer.convolution.radial
        assert radial.values[-1].abs().max() == 0 and radial.slopes[-1].abs().max() == 0


def test_saved_potential_passes_the_physics_checks(emt_run):
    _, result = emt_run
    calc = FacetCalculator(result.potential_dir, dtype="float64")
    atoms = emt_cu_frames(1, seed=5)[0]
    atoms.calc = calc
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert relative_error(forces, finite_difference_forces(atoms, calc)) < 1e-6
    assert relative_error(stress, finite_difference_stress(atoms, calc)) < 1e-5
    rotated = atoms.copy()
    rot = random_rotation(7)
    rotated.set_cell(atoms.cell @ rot.T, scale_atoms=True)
    rotated.calc = calc
    assert rotated.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(rotated.get_forces(), forces @ rot.T, atol=1e-9)


def test_finetune_writes_card_index_and_log(emt_run):
    folder, result = emt_run
    card = (result.potential_dir / "card.md").read_text()
    assert "7net-0-spline" in card and "train.extxyz" in card and "sha256" in card
    log = (folder / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 1 + SETTINGS["epochs"] and log[0].startswith("epoch,")


def test_shift_refit_recovers_a_constant_offset(tmp_path):
    """Data from another code: energies offset by 1.7 eV/atom; the refit finds the offset."""
    base = FacetCalculator("7net-0-spline", dtype="float64")
    frames = []
    for atoms in emt_cu_frames(5, seed=6):
        atoms = atoms.copy()
        atoms.calc = base
        energy = atoms.get_potential_energy() + 1.7 * len(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=atoms.get_forces())
        frames.append(atoms)
    from facet_calc.train import refit_shifts
    from facet_calc.train.data import read_configurations as read

    potential = load_potential("7net-0-spline", dtype="float64")
    import copy

    model = copy.deepcopy(potential.model)
    delta = refit_shifts(model, read(frames, potential.atomic_numbers, potential.cutoff), torch.float64)
    cu = potential.atomic_numbers.index(29)
    assert delta[cu].item() == pytest.approx(1.7, abs=1e-9)
    assert torch.count_nonzero(delta) == 1


def _tiny_trainer(configs, out_dir, on_step=None):
    potential = load_potential("7net-0-spline", dtype="float64")
    import copy

    model = copy.deepcopy(potential.model).requires_grad_(False)
    for name, param in model.named_parameters():  # a few parameters: a fast, exact check
        if name.startswith(("layers.4.", "readout", "shift")):
            param.requires_grad_(True)
    settings = TrainSettings(epochs=3, batch_size=2, lr=1e-3, dtype="float64", seed=3, ema_decay=0.9)
    return Trainer(model, configs[:4], configs[4:], settings, out_dir, progress=False, on_step=on_step)


def test_an_edge_budget_splits_training_batches(tmp_path):
    """With ``max_edges`` a batch of ``batch_size`` structures is split by the same edge-budget
    grouping the calculator uses; every structure is still used once per epoch, in order."""
    import dataclasses

    potential = load_potential("7net-0-spline")
    configs = read_configurations(emt_cu_frames(6, seed=8), potential.atomic_numbers, potential.cutoff)
    trainer = _tiny_trainer(configs, tmp_path)
    edges = [c.graph.n_edges for c in trainer.train_set]
    unbounded = trainer._batches(trainer.train_set, shuffle_epoch=1)
    trainer.settings = dataclasses.replace(trainer.settings, max_edges=max(edges))  # one structure fits, two do not
    bounded = trainer._batches(trainer.train_set, shuffle_epoch=1)
    assert [c for b in bounded for c in b] == [c for b in unbounded for c in b]
    assert len(bounded) > len(unbounded)
    assert all(len(b) == 1 or sum(c.graph.n_edges for c in b) <= max(edges) for b in bounded)


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    potential = load_potential("7net-0-spline")
    configs = read_configurations(emt_cu_frames(6, seed=8), potential.atomic_numbers, potential.cutoff)
    straight = _tiny_trainer(configs, tmp_path / "straight")
    straight.run()

    class Killed(Exception):
        pass

    def kill(trainer, epoch, step):
        if epoch == 1 and step == 0:
            raise Killed

    interrupted = _tiny_trainer(configs, tmp_path / "resumed", on_step=kill)
    with pytest.raises(Killed):
        interrupted.run()
    assert interrupted.epoch == 1
    resumed = _tiny_trainer(configs, tmp_path / "resumed")
    resumed.run(resume=True)
    assert resumed.epoch == 3
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
    for name in straight.ema.shadow:
        assert torch.equal(straight.ema.shadow[name], resumed.ema.shadow[name]), name


def _write(path: Path, frames) -> Path:
    write(path, frames, format="extxyz")
    return path


def _labelled(atoms, **results):
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


BAD_DATA = {
    "missing energy": (lambda: [_labelled(bulk("Cu"), forces=np.zeros((1, 3)))], "no energy found"),
    "NaN forces": (
        lambda: [_labelled(bulk("Cu"), energy=-3.0, forces=np.full((1, 3), np.nan))],
        "forces contain NaN",
    ),
    "unknown element": (
        lambda: [_labelled(Atoms("Og", cell=[5, 5, 5], pbc=True), energy=1.0)],
        r"no parameters for element\(s\) Og",
    ),
    "stress without cell": (
        lambda: [_labelled(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), energy=-1.0, stress=np.zeros(6))],
        "stress label needs a periodic cell",
    ),
    "NaN energy": (lambda: [_labelled(bulk("Cu"), energy=float("nan"))], "energy must be one finite number"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_training_data_is_refused_with_the_configuration_named(case, tmp_path):
    make, message = BAD_DATA[case]
    frames = make()
    with pytest.raises(DataError, match=message) as err:
        read_configurations(frames, load_potential("7net-0-spline").atomic_numbers, 5.0)
    assert "structures[0]" in str(err.value)


def test_user_named_keys_and_wrong_shapes(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["REF_energy"] = -14.0
    atoms.arrays["REF_forces"] = np.zeros((4, 3))
    atoms.info["REF_stress"] = np.zeros(6)
    path = _write(tmp_path / "ref.extxyz", [atoms])
    keys = LabelKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")
    (config,) = read_configurations(path, [29], 5.0, keys)
    labels = config.graph.labels
    assert labels.energy.tolist() == [-14.0] and labels.forces.shape == (4, 3) and labels.stress.shape == (1, 3, 3)
    assert config.has_forces and config.has_stress
    atoms.info["REF_stress"] = np.zeros(5)
    _write(tmp_path / "bad.extxyz", [atoms])
    with pytest.raises(DataError, match=r"bad.extxyz\[0\]: stress has shape \(5,\)"):
        read_configurations(tmp_path / "bad.extxyz", [29], 5.0, keys)
    with pytest.raises(DataError, match="does not exist"):
        read_configurations(tmp_path / "nothing.extxyz", [29], 5.0)


def test_split_is_seeded():
    items = list(range(20))
    assert split(items, 0.25, seed=4) == split(items, 0.25, seed=4)
    assert split(items, 0.25, seed=4) != split(items, 0.25, seed=5)
    train, valid = split(items, 0.25, seed=4)
    assert sorted(train + valid) == items and len(valid) == 5


def test_cli_finetune_writes_potential_log_and_plots(tmp_path, capsys):
    from facet_calc.cli import main

    write(tmp_path / "train.extxyz", emt_cu_frames(6, seed=9))
    out = tmp_path / "run"
    args = ["finetune", "7net-0-spline", "--train", str(tmp_path / "train.extxyz"), "--out", str(out),
            "--epochs", "1", "--batch-size", "3", "--quiet", "--readout-only"]  # fmt: skip
    assert main(args) == 0
    for name in ("potential/config.json", "potential/weights.safetensors", "potential/card.md", "index.json",
                 "log.csv", "learning_curves.png", "parity_valid.png",
                 "checkpoint/checkpoint.safetensors"):  # fmt: skip
        assert (out / name).is_file(), name
    assert "potential" in capsys.readouterr().out
    # only the readout, scale and shift changed
    base, tuned = load_potential("7net-0-spline"), load_potential(out / "potential")
    for (name, a), (_, b) in zip(base.model.named_parameters(), tuned.model.named_parameters()):
        if not torch.equal(a, b.to(a.dtype)):
            assert name.startswith(("readout", "scale", "shift")), name
    # the guard keeps epoch 1 unless it is worse than the base on validation (then it says so)
    guard = tuned.config["finetune"]["guard"]
    changed = not torch.equal(base.model.readout_out.weight, tuned.model.readout_out.weight)
    assert changed == (guard["best_epoch"] == 1), guard


def test_cli_finetune_errors_are_one_sentence(tmp_path, capsys):
    from facet_calc.cli import main

    write(tmp_path / "bad.extxyz", [_labelled(bulk("Cu"), energy=float("nan"))])
    args = ["finetune", "7net-0-spline", "--train", str(tmp_path / "bad.extxyz"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.extxyz[0]: the energy must be one finite number" in err and "Traceback" not in err
    assert main(["finetune", "7net-0-spline", "--train", str(tmp_path / "none.xyz"), "--out", "o"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_early_stopping_stops_when_the_valid_loss_stalls(tmp_path):
    potential = load_potential("7net-0-spline")
    configs = read_configurations(emt_cu_frames(6, seed=10), potential.atomic_numbers, potential.cutoff)
    trainer = _tiny_trainer(configs, tmp_path)
    trainer.settings.early_stopping_patience = 2
    for group in trainer.optimizer.param_groups:  # a step too small to change the loss
        group["lr"] = 0.0
    trainer.scheduler.base_lrs = [0.0]
    history = trainer.run()
    assert len(history) == 2 + 1 and trainer.epochs_without_improvement == 2


def test_train_from_scratch_with_a_yaml_recipe(tmp_path, capsys):
    """A small facet-spline-nequip model trained from scratch on EMT Cu: the loss falls and
    the saved potential is a working calculator."""
    from facet_calc.cli import main

    write(tmp_path / "train.extxyz", emt_cu_frames(12, seed=11))
    (tmp_path / "recipe.yaml").write_text(
        "out: run\n"
        "train: train.extxyz\n"
        "valid_fraction: 0.25\n"
        "name: cu-tiny\n"
        "model:\n"
        "  architecture: facet-spline-nequip\n"
        "  hyperparameters: {atomic_numbers: [29], channels: 8, lmax: 1, n_layers: 2, cutoff: 4.0, n_intervals: 40}\n"
        "settings: {epochs: 8, batch_size: 3, lr: 0.01, dtype: float64, ema_decay: 0.5, warmup_epochs: 0.5}\n"
    )
    assert main(["train", str(tmp_path / "recipe.yaml"), "--quiet"]) == 0
    history = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    loss = history[0].index("train_loss")
    assert float(history[-1][loss]) < 0.5 * float(history[1][loss])
    potential = load_potential(tmp_path / "run" / "potential", dtype="float64")
    assert potential.name == "potential" and potential.config["name"] == "cu-tiny"
    # the card and config say honestly how it was made: no base potential, nothing fine-tuned
    card = (tmp_path / "run" / "potential" / "card.md").read_text()
    assert "facet-spline-nequip trained from scratch on train.extxyz" in card
    assert "fine-tun" not in card.lower() and "untrained" not in card and "Base potential" not in card
    assert "finetune" not in potential.config and potential.config["training"]["n_train"] == 9
    atoms = emt_cu_frames(1, seed=12)[0]
    atoms.calc = FacetCalculator(potential)
    assert relative_error(atoms.get_forces(), finite_difference_forces(atoms, atoms.calc)) < 1e-6
    (tmp_path / "bad.yaml").write_text("out: x\ntrain: train.extxyz\nmodel: {hyperparameters: {channels: 8}}\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "hyperparameters" in capsys.readouterr().err
