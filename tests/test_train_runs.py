"""A training run's folder and checkpoint: an existing run is neither overwritten nor resumed
with other inputs by accident, the checkpoint is one atomic file (a kill at any moment of a
save resumes to the weights of an uninterrupted run), a full disk is found before training,
and log.csv never lists an epoch the checkpoint lacks."""

import errno
import shutil
from pathlib import Path

import pytest
import torch
from ase.io import write
from test_train import _tiny_trainer

from facet_calc import load_potential
from facet_calc.cli import main
from facet_calc.potential import save_potential
from facet_calc.testing import emt_cu_frames
from facet_calc.train import DataError, TrainSettings, finetune, read_configurations
from facet_calc.train import checkpoint as checkpoint_module
from facet_calc.train import trainer as trainer_module
from facet_calc.train.checkpoint import CheckpointSpaceError
from facet_calc.train.scratch import train_from_scratch


class Killed(BaseException):
    """A kill -9 stand-in: nothing after it runs."""


@pytest.fixture(scope="module")
def configs():
    potential = load_potential("7net-0-spline")
    return read_configurations(emt_cu_frames(6, seed=8), potential.atomic_numbers, potential.cutoff)


@pytest.fixture(scope="module")
def straight(configs, tmp_path_factory):
    trainer = _tiny_trainer(configs, tmp_path_factory.mktemp("straight"))
    trainer.run()
    return trainer


@pytest.mark.parametrize("when", ["before the rename", "after the rename"])
def test_a_kill_while_saving_resumes_to_the_uninterrupted_weights(configs, straight, tmp_path, monkeypatch, when):
    """Killed while the epoch-2 checkpoint is renamed into place (before: the epoch-1 one
    stays; after: the epoch-2 one is complete). The two-file checkpoint paired epoch-2
    weights with epoch-1 counters here, and resuming trained epoch 2 twice."""
    interrupted = _tiny_trainer(configs, tmp_path)
    real_replace = checkpoint_module.os.replace

    def replace(src, dst):
        if interrupted.epoch == 2:
            if when == "after the rename":
                real_replace(src, dst)
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    with pytest.raises(Killed):
        interrupted.run()
    monkeypatch.undo()
    resumed = _tiny_trainer(configs, tmp_path)
    resumed.run(resume=True)
    assert resumed.epoch == 3 and len(resumed.history) == 3
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), (name, float((a - b).abs().max()))
    for name in straight.ema.shadow:
        assert torch.equal(straight.ema.shadow[name], resumed.ema.shadow[name]), name
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]


def test_log_never_lists_an_epoch_the_checkpoint_lacks(configs, tmp_path, monkeypatch):
    real_save = trainer_module.save_checkpoint

    def save(folder, model, ema, optimizer, state, **options):
        if state["epoch"] == 2:
            raise Killed
        real_save(folder, model, ema, optimizer, state, **options)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    with pytest.raises(Killed):
        _tiny_trainer(configs, tmp_path).run()
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1"]


def test_a_full_disk_while_saving_is_one_sentence_and_keeps_the_checkpoint(configs, tmp_path, monkeypatch):
    trainer = _tiny_trainer(configs, tmp_path)
    real_open = open

    class FullDisk:
        def __init__(self, path, mode):
            self.handle = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            if trainer.epoch == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

        def fileno(self):
            return self.handle.fileno()

    monkeypatch.setattr(checkpoint_module, "open", FullDisk, raising=False)
    with pytest.raises(CheckpointSpaceError, match="is full: the checkpoint .* could not be written"):
        trainer.run()
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.safetensors"]  # no temporary left
    assert checkpoint_module._read_state(folder)["epoch"] == 1
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 2


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch):
    write(tmp_path / "train.extxyz", emt_cu_frames(4, seed=9))

    class Usage:
        total, used, free = 10 << 30, 10 << 30, 1 << 20

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage)
    settings = TrainSettings(epochs=1, batch_size=2)
    with pytest.raises(CheckpointSpaceError, match=r"has 1.0 MiB free, but the run needs about \d+"):
        finetune("7net-0-spline", tmp_path / "train.extxyz", tmp_path / "run", settings, progress=False)
    assert not (tmp_path / "run" / "log.csv").exists()
    assert not (tmp_path / "run" / "checkpoint" / "checkpoint.safetensors").exists()


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_finetune_refuses_to_overwrite_or_resume_another_run(tmp_path, capsys):
    """A second ``finetune --out`` onto a run, a ``--resume`` with other data or another base:
    each refused with one sentence naming what differs, and nothing in the folder changes."""
    write(tmp_path / "train.extxyz", emt_cu_frames(6, seed=9))
    write(tmp_path / "other.extxyz", emt_cu_frames(6, seed=10))
    base = load_potential("7net-0-spline")
    tensors = {k: v.detach().clone() for k, v in base.model.named_parameters()}
    tensors["shift"] += 0.01
    save_potential(tmp_path / "bases" / "nudged", base.config, tensors, "# nudged\n")
    out = tmp_path / "run"
    args = ["finetune", "7net-0-spline", "--train", str(tmp_path / "train.extxyz"), "--out", str(out),
            "--epochs", "1", "--batch-size", "3", "--quiet", "--readout-only"]  # fmt: skip
    assert main(args) == 0
    before = _outputs(out)
    capsys.readouterr()

    assert main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    other_data = [*args[:3], str(tmp_path / "other.extxyz"), *args[4:], "--resume"]
    assert main(other_data) == 2
    err = capsys.readouterr().err
    assert "other inputs (training data (sha256)" in err and "Traceback" not in err
    other_base = ["finetune", str(tmp_path / "bases" / "nudged"), *args[2:], "--resume"]
    assert main(other_base) == 2
    err = capsys.readouterr().err
    assert 'base potential: "7net-0-spline" then, "nudged" now' in err and "base weights (sha256)" in err
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert _outputs(out) == before

    more = [*args, "--resume"]
    more[more.index("--epochs") + 1] = "2"
    assert main(more) == 0  # the same inputs, more epochs: resumed
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert main([*args, "--overwrite"]) == 0
    assert len((out / "log.csv").read_text().splitlines()) == 2


def test_train_from_scratch_refuses_an_existing_run_and_another_model_on_resume(tmp_path):
    from facet_calc.nn.families.nequip_spline import nequip_spline_config

    write(tmp_path / "train.extxyz", emt_cu_frames(6, seed=11))
    settings = TrainSettings(epochs=1, batch_size=3, dtype="float64")
    avg = {"avg_num_neighbors": 12.0}
    config = nequip_spline_config([29], channels=4, lmax=1, n_layers=1, cutoff=4.0, n_intervals=20, **avg)
    train_from_scratch(config, tmp_path / "train.extxyz", tmp_path / "run", settings, progress=False)
    with pytest.raises(DataError, match="already holds a training run"):
        train_from_scratch(config, tmp_path / "train.extxyz", tmp_path / "run", settings, progress=False)
    wider = nequip_spline_config([29], channels=8, lmax=1, n_layers=1, cutoff=4.0, n_intervals=20, **avg)
    with pytest.raises(DataError, match=r"other inputs \(model config \(sha256\)"):
        train_from_scratch(wider, tmp_path / "train.extxyz", tmp_path / "run", settings, resume=True, progress=False)


def test_a_checkpoint_of_another_model_is_refused_by_name(configs, straight, tmp_path):
    """Below the run folder's check (a run of an earlier version has no run.json): a
    checkpoint whose parameters do not fit the model is a ValueError, not torch's RuntimeError."""
    trainer = _tiny_trainer(configs, tmp_path)
    with torch.no_grad():
        trainer.model.shift.data = torch.zeros(trainer.model.shift.shape[0] + 1, dtype=trainer.model.shift.dtype)
    with pytest.raises(ValueError, match="of another model: its parameter 'shift' is of shape"):
        checkpoint_module.load_checkpoint(straight.checkpoint_dir, trainer.model, None, trainer.optimizer)


def test_a_checkpoint_of_the_two_file_format_is_still_read(configs, straight, tmp_path):
    """Runs checkpointed before the single file (tensors here, state in checkpoint.json) resume."""
    import json

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    state = checkpoint_module._read_state(straight.checkpoint_dir)
    tensors = load_file(str(straight.checkpoint_dir / "checkpoint.safetensors"))
    save_file(tensors, str(folder / "checkpoint.safetensors"))  # no metadata
    (folder / "checkpoint.json").write_text(json.dumps(state))
    trainer = _tiny_trainer(configs, tmp_path)
    assert trainer.resume() and trainer.epoch == 3
    for (name, a), (_, b) in zip(straight.model.named_parameters(), trainer.model.named_parameters()):
        assert torch.equal(a, b), name
