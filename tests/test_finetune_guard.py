"""Fine-tuning cannot quietly ruin a model (issue 23): the labels are diagnosed against the base
(a Pulay-like stress offset, energy outliers, duplicates, validation frames in the training
set), the loss is balanced, and the guard keeps the base when training only makes it worse."""

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.units import GPa

from facet_calc import FacetCalculator, load_potential
from facet_calc.testing import emt_cu_frames, force_mae
from facet_calc.train import Trainer, TrainSettings, finetune, read_configurations
from facet_calc.train.diagnostics import TrainingDataWarning, diagnose
from facet_calc.train.guard import GuardWarning

OFFSET_GPA = 30.0


@pytest.fixture(scope="module")
def potential():
    return load_potential("7net-0-spline")


def test_a_pulay_offset_is_flagged_and_the_finetuned_model_is_not_worse(tmp_path):
    """EMT labels + 30 GPa on the stress diagonal: the diagnostics name the offset, and the
    fine-tuned potential is not worse than the base on held-out forces (before issue 23 the
    offset was trained on silently; on GPAW MgO it made held-out forces 81 -> 305 meV/A)."""
    train, valid, held_out = (emt_cu_frames(n, seed, OFFSET_GPA) for n, seed in ((8, 11), (4, 12), (6, 13)))
    write(tmp_path / "train.extxyz", train)
    write(tmp_path / "valid.extxyz", valid)
    settings = TrainSettings(epochs=3, batch_size=4, lr=1e-4, dtype="float32", ema_decay=0.9, warmup_epochs=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune("7net-0-spline", tmp_path / "train.extxyz", tmp_path / "run", settings,
                          valid=tmp_path / "valid.extxyz", progress=False)  # fmt: skip
    messages = [str(w.message) for w in caught if issubclass(w.category, TrainingDataWarning)]
    pulay = [m for m in messages if "Pulay" in m and "offset from the base model" in m]
    assert pulay, messages
    named = float(re.search(r"offset from the base model by ([+-][0-9.]+) GPa", pulay[0]).group(1))
    # the reference: the base's own isotropic stress error against EMT (measured ~1.4 GPa), plus 30
    base = FacetCalculator("7net-0-spline", dtype="float64")
    own = []
    for atoms in train + valid:
        probe = atoms.copy()
        probe.calc = base
        own.append((atoms.get_stress()[:3] - probe.get_stress()[:3]).mean() / GPa)
    assert named == pytest.approx(float(np.mean(own)), abs=0.1 * OFFSET_GPA)
    assert named == pytest.approx(OFFSET_GPA, rel=0.1)
    card = (result.potential_dir / "card.md").read_text()
    assert "Label diagnostics" in card and "Pulay" in card and "Guard" in card
    tuned = force_mae(FacetCalculator(result.potential_dir, dtype="float64"), held_out)
    reference = force_mae(base, held_out)
    assert tuned <= reference * (1 + 1e-9), (tuned, reference)


def _findings(potential, train, valid=()):
    configs = read_configurations(train, potential.atomic_numbers, potential.cutoff)
    held = read_configurations(list(valid), potential.atomic_numbers, potential.cutoff) if valid else []
    return diagnose(potential.model, configs, held, torch.float32, "cpu").findings


def test_clean_emt_labels_raise_no_finding(potential):
    assert _findings(potential, emt_cu_frames(10, seed=21), emt_cu_frames(3, seed=22)) == []


def test_a_frame_in_mev_is_an_outlier(potential):
    frames = emt_cu_frames(10, seed=21)
    atoms = frames[3]
    atoms.calc = SinglePointCalculator(
        atoms, energy=atoms.get_potential_energy() * 1000, forces=atoms.get_forces(), stress=atoms.get_stress()
    )
    found = _findings(potential, frames)
    assert [f.kind for f in found] == ["outlier"] and found[0].frames == ["structures[3]"]
    assert "meV instead of eV" in found[0].message and "Remove the frame" in found[0].message


def test_duplicates_and_train_valid_overlap_are_flagged(potential):
    frames = emt_cu_frames(8, seed=21)
    valid = emt_cu_frames(3, seed=22)
    twin = frames[5].copy()
    twin.calc = SinglePointCalculator(twin, **frames[5].calc.results)
    found = _findings(potential, [*frames, twin], [*valid, frames[2]])
    kinds = sorted(f.kind for f in found)
    assert kinds == ["duplicate", "overlap"], [f.message for f in found]
    duplicate = next(f for f in found if f.kind == "duplicate")
    overlap = next(f for f in found if f.kind == "overlap")
    assert duplicate.frames == ["structures[8]", "structures[5]"]
    assert overlap.frames == ["structures[3]"] and "1 validation frame(s)" in overlap.message


def _trainer(potential, train, valid, out_dir, **settings):
    model = copy.deepcopy(potential.model).requires_grad_(False)
    for name, param in model.named_parameters():  # a few parameters: fast
        if name.startswith(("layers.4.", "readout", "shift")):
            param.requires_grad_(True)
    options = dict(epochs=4, batch_size=2, lr=1e-3, dtype="float64", seed=3, ema_decay=None, warmup_epochs=0.1)
    return Trainer(model, train, valid, TrainSettings(**{**options, **settings}), out_dir, progress=False)


def test_the_guard_restores_the_base_when_training_only_makes_it_worse(tmp_path):
    potential = load_potential("7net-0-spline", dtype="float64")
    configs = read_configurations(emt_cu_frames(6, seed=31), potential.atomic_numbers, potential.cutoff)
    trainer = _trainer(potential, configs[:4], configs[4:], tmp_path, lr=3.0, schedule="constant", guard_patience=2)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    history = trainer.run()
    assert len(history) == 2  # stopped after two epochs worse than the base
    assert all(row["valid_forces_mae_meV_per_A"] > trainer.guard.base["forces"] for row in history)
    with pytest.warns(GuardWarning, match="the saved potential is the BASE"):
        model = trainer.finish()
    for name, param in model.named_parameters():
        if name.endswith("radial.slopes"):  # derived from the values (the C2 spline's) once trained
            scale = before[name].abs().max()
            assert (param - before[name]).abs().max() < 1e-4 * scale, name
        else:
            assert torch.equal(param, before[name]), name


def test_without_a_validation_set_the_guard_says_it_cannot_run(tmp_path):
    potential = load_potential("7net-0-spline", dtype="float64")
    configs = read_configurations(emt_cu_frames(2, seed=41), potential.atomic_numbers, potential.cutoff)
    trainer = _trainer(potential, configs, [], tmp_path)
    with pytest.warns(GuardWarning, match="no validation set: the fine-tuning guard cannot check"):
        trainer.start()
    assert trainer.guard is None


def test_the_balanced_loss_divides_each_term_by_the_starting_rms_error(tmp_path):
    """The scales are the starting model's RMS errors on the training set, measured here
    independently through the ASE calculator."""
    potential = load_potential("7net-0-spline", dtype="float64")
    frames = emt_cu_frames(4, seed=51, stress_offset_gpa=OFFSET_GPA)
    configs = read_configurations(frames, potential.atomic_numbers, potential.cutoff)
    trainer = _trainer(potential, configs, [], tmp_path, guard=False)
    trainer.start()
    calc = FacetCalculator(potential)
    de, df, ds = [], [], []
    for atoms in frames:
        probe = atoms.copy()
        probe.calc = calc
        de.append((probe.get_potential_energy() - atoms.get_potential_energy()) / len(atoms))
        df.append(probe.get_forces() - atoms.get_forces())
        ds.append((probe.get_stress(voigt=False) - atoms.get_stress(voigt=False)) / GPa)
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in (("energy", de), ("forces", df), ("stress", ds))}
    for key in ("energy", "forces", "stress"):
        assert trainer.scales[key] == pytest.approx(rms[key], rel=1e-6), key
    # the offset dominates (30 GPa on 3 of 9 components, RMS ~18 GPa): unbalanced, it swamped the loss
    assert rms["stress"] > 15
