"""``fit``: train a model on labelled configurations, the core that fine-tuning and training
from scratch share. It knows nothing of potential files: it takes a model and configurations,
and hands back the trained model (EMA weights, eval mode) and its history.

    result = fit(model, train_configs, valid_configs, TrainSettings(epochs=30), "runs/a")
    result.model, result.history     # the run folder holds log.csv and checkpoint/

Only the parameters with ``requires_grad`` are trained (:func:`set_trainable` marks them).
:func:`fit_on_files` is the part that fine-tuning and training from scratch share: read the
files, fit the per-element shifts, mark the trainable parameters, ``fit``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import Configuration, DataError
from .datafiles import DataFiles
from .diagnostics import LabelReport, TrainingDataWarning, diagnose, subtract_stress_offset
from .settings import TrainSettings
from .shifts import refit_shifts_by_element
from .trainer import Trainer

#: parameters of the readout, scale and shift (``train_only="readout"`` trains only these)
READOUT_PREFIXES = ("readout_hidden.", "readout_out.", "readout_weight", "scale", "shift")


@dataclass
class FitResult:
    """``model``: the trained model (EMA weights in it, eval mode; an earlier epoch's, or the
    starting model's, when the guard kept them); ``history``: one row of metrics per epoch (the
    rows of ``log.csv``); ``guard``: what the guard measured and kept (None without a
    validation set); ``scales``: the balanced loss's scales (None: unbalanced)."""

    model: torch.nn.Module
    history: list[dict[str, float]]
    guard: dict[str, Any] | None = None
    scales: dict[str, float] | None = None


def set_trainable(model: torch.nn.Module, freeze: tuple[str, ...] = (), train_only: str | None = None) -> list[str]:
    """Mark parameters trainable except those under a ``freeze`` prefix (or all but the readout
    with ``train_only="readout"``); returns the names of the trainable ones."""
    if train_only not in (None, "readout"):
        raise ValueError(f"train_only must be None or 'readout', got {train_only!r}")
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in freeze if not any(n.startswith(p) for n in names)]
    if unknown:
        raise ValueError(f"freeze prefixes {unknown} match no parameter; parameter names start with e.g. {names[:3]}")
    trainable = []
    for name, param in model.named_parameters():
        keep = any(name.startswith(p) for p in freeze)
        if train_only == "readout":
            keep = keep or not name.startswith(READOUT_PREFIXES)
        param.requires_grad_(not keep)
        if not keep:
            trainable.append(name)
    return trainable


def fit(
    model: torch.nn.Module,
    train: Sequence[Configuration],
    valid: Sequence[Configuration],
    settings: TrainSettings,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    plots: bool = False,
) -> FitResult:
    """Train ``model`` in place on ``train``, validating on ``valid`` (may be empty) after
    every epoch; ``out_dir`` receives ``log.csv`` and ``checkpoint/`` after every epoch and,
    with ``plots=True``, ``learning_curves.png`` and ``parity_valid.png``. ``resume=True``
    continues from the checkpoint there (an error when there is none)."""
    out_dir = Path(out_dir)
    trainer = Trainer(model, train, valid, settings, out_dir, progress=progress)
    if resume and not trainer.resume():
        raise DataError(f"--resume: no checkpoint in {out_dir / 'checkpoint'} to resume from")
    history = trainer.run()
    if plots and history:  # drawn before finish(): the parity plot evaluates the EMA weights
        from .plots import plot_learning_curves, plot_parity

        plot_learning_curves(history, out_dir / "learning_curves.png")
        plot_parity(trainer.predictions(valid), out_dir / "parity_valid.png", "validation set")
    model = trainer.finish()
    guard = None
    if trainer.guard is not None:
        guard = {**trainer.guard.to_dict(), "stopped": trainer.stopped_by_guard, "epochs_run": trainer.epoch}
    return FitResult(model, history, guard, trainer.scales)


def fit_on_files(
    model: torch.nn.Module,
    atomic_numbers: list[int],
    cutoff: float,
    data: DataFiles,
    settings: TrainSettings,
    out_dir: Path,
    freeze: tuple[str, ...] = (),
    train_only: str | None = None,
    shift_refit: bool = True,
    resume: bool = False,
    progress: bool = True,
    plots: bool = False,
    base_diagnostics: bool = False,
) -> tuple[FitResult, dict[str, Any]]:
    """Read ``data`` for a model of ``atomic_numbers`` and ``cutoff`` (A), check the labels
    (:func:`.diagnostics.diagnose`; against ``model`` with ``base_diagnostics``, i.e. when it
    is a trained base), refit its per-element shifts (``shift_refit``; never on resume: the
    checkpoint has them), mark the trainable parameters and :func:`fit`; returns the result and
    the run's provenance (data files, settings, what was frozen, the shift changes in eV, the
    label diagnostics and what the guard kept)."""
    train_set, valid_set = data.read(atomic_numbers, cutoff, settings)
    report = check_labels(model if base_diagnostics else None, train_set, valid_set, settings, progress)
    shift_change: dict[str, float] = {}
    if shift_refit and not resume:
        shift_change = refit_shifts_by_element(model, train_set, getattr(torch, settings.dtype), atomic_numbers)
    set_trainable(model, freeze, train_only)
    result = fit(model, train_set, valid_set, settings, out_dir, resume=resume, progress=progress, plots=plots)
    provenance = {
        **data.provenance(len(train_set), len(valid_set)),
        "settings": settings.to_dict(),
        "freeze": list(freeze),
        "train_only": train_only,
        "shift_change_eV": shift_change,
        "label_diagnostics": report.to_dict(),
        "guard": result.guard,
        "loss_scales": result.scales,
    }
    return result, provenance


def check_labels(
    model: torch.nn.Module | None,
    train: list[Configuration],
    valid: list[Configuration],
    settings: TrainSettings,
    progress: bool = True,
) -> LabelReport:
    """Diagnose the labels (against ``model``, a trained base, when given), warn about every
    finding (:class:`.diagnostics.TrainingDataWarning`) and, with ``settings.stress_offset ==
    "auto"``, subtract a stress offset flagged as likely Pulay stress from the stress labels of
    both sets (in place)."""
    dtype = getattr(torch, settings.dtype)
    report = diagnose(model, train, valid, dtype, settings.device)
    if progress and report.errors:
        from tqdm.auto import tqdm

        tqdm.write("label diagnostics (base model against the labels, before training):")
        for line in report.lines():
            tqdm.write("  " + line)
    for finding in report.findings:
        warnings.warn(finding.message, TrainingDataWarning, stacklevel=3)
    offset = report.stress_offset_GPa
    if offset is not None and settings.loss.stress > 0 and any(c.has_stress for c in train):
        if settings.stress_offset == "auto":
            subtract_stress_offset([*train, *valid], offset)
            report.stress_offset_action = "subtracted"
            message = (f"subtracted the stress offset {offset:+.4g} GPa (isotropic) from every stress label before "
                       "training (stress_offset='auto'); to train on the stresses as they are, pass "
                       "--stress-offset keep, or --stress-weight 0 to ignore them")  # fmt: skip
        else:
            report.stress_offset_action = "kept"
            message = (f"training on stress labels offset by {offset:+.4g} GPa as they are (stress_offset='keep'); "
                       "expect the forces to get worse")  # fmt: skip
        warnings.warn(message, TrainingDataWarning, stacklevel=3)
    return report
