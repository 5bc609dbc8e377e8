"""Fine-tuning a shipped or saved potential on the user's own labelled structures.

    from facet_calc.train import finetune, TrainSettings
    result = finetune("7net-0-spline", "my_dft.extxyz", "runs/ft1", TrainSettings(epochs=30, lr=1e-4))
    calc = FacetCalculator(result.potential_dir)

Every parameter is trainable by default (spline tables included; they stay exactly zero, with
zero slope, at the cutoff); ``freeze`` names parameter prefixes to keep, and
``train_only="readout"`` trains only the readout, scale and shift. Before training, the
per-element energy shifts are refitted by least squares on the training set, so data from
another code or functional does not spend the first epochs on a constant offset. The training
itself is :func:`.fit.fit`; training from scratch is :mod:`.scratch`.

Before anything is trained, the labels are diagnosed against the base (:mod:`.diagnostics`:
errors per property, stress offsets, energies against forces and stresses, outliers,
duplicates, validation frames in the training set), each finding a warning that names its fix,
all of it in the card. During training the guard (:mod:`.guard`) keeps the model from ending
worse than the base on the validation set without a loud warning.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..potential import Potential, load_potential
from . import output
from .data import LabelKeys
from .datafiles import DataFiles
from .diagnostics import card_section
from .fit import READOUT_PREFIXES, fit_on_files, set_trainable
from .guard import guard_summary
from .output import TrainResult, data_bullet, render_card, save_trained, stamp
from .settings import TrainSettings
from .shifts import refit_shifts

__all__ = ["READOUT_PREFIXES", "FinetuneResult", "finetune", "refit_shifts", "set_trainable"]

#: the result of :func:`finetune` (the same fields as a run from scratch)
FinetuneResult = TrainResult

WEAKNESSES = """A fine-tuned potential is only as good as its data: away from the structures it was tuned on,
it can be worse than its base (forgetting). Compare it with the base on structures you care
about before using it there."""


def finetune(
    base: str | Path | Potential, train: str | Path, out_dir: str | Path, settings: TrainSettings | None = None,
    valid: str | Path | None = None, valid_fraction: float = 0.1, keys: LabelKeys | None = None,
    freeze: tuple[str, ...] = (), train_only: str | None = None, shift_refit: bool = True, name: str | None = None,
    resume: bool = False, progress: bool = True, plots: bool = False, overwrite: bool = False,
) -> FinetuneResult:  # fmt: skip
    """Fine-tune ``base`` on the structures in ``train``; the result is a potential folder
    ``<out_dir>/potential`` (index in ``<out_dir>/index.json``) that ``FacetCalculator`` loads,
    plus ``log.csv``, the checkpoint and, with ``plots=True``, ``learning_curves.png`` and
    ``parity_valid.png``."""
    settings = settings or TrainSettings()
    out_dir = Path(out_dir)
    potential = (
        base if isinstance(base, Potential) else load_potential(base, dtype=settings.dtype, device=settings.device)
    )
    model = copy.deepcopy(potential.model).to(dtype=getattr(torch, settings.dtype), device=settings.device)
    data = DataFiles(Path(train), None if valid is None else Path(valid), valid_fraction, keys or LabelKeys())
    run = {"base potential": potential.name, "base weights (sha256)": output.weights_digest(potential.model),
           "frozen": list(freeze), "train only": train_only, "shift refit": shift_refit}  # fmt: skip
    output.prepare_run_folder(out_dir, output.run_inputs(data, settings, **run), model, settings, resume, overwrite)
    result, provenance = fit_on_files(
        model, potential.atomic_numbers, potential.cutoff, data, settings, out_dir, freeze=freeze,
        train_only=train_only, shift_refit=shift_refit, resume=resume, progress=progress, plots=plots,
        base_diagnostics=True,
    )  # fmt: skip
    config = copy.deepcopy(potential.config)
    config["name"] = name or out_dir.name
    config["description"] = f"{potential.name} fine-tuned on {Path(train).name}"
    provenance = {"base_potential": potential.name, **provenance, **stamp()}
    config["finetune"] = provenance
    card = render_card(config, provenance, result.history, "Fine-tuned", [
        f"- Base potential: `{potential.name}` (its card describes the architecture, the\n"
        "  original training data and its licence; cite it).",
        data_bullet(provenance),
        f"- Per-element shift change before training (eV): {provenance['shift_change_eV'] or 'none'}.",
        f"- Frozen: {list(freeze) or 'nothing'}{'; trained: readout, scale and shift only' if train_only else ''}.",
        guard_summary(provenance["guard"]),
    ], WEAKNESSES)  # fmt: skip
    card += "\n" + card_section(provenance["label_diagnostics"])
    folder = save_trained(out_dir, config, result.model, card)
    return FinetuneResult(folder, result.history, provenance["shift_change_eV"])
