"""Training a model from scratch: a model config (any registered architecture), freshly
initialised, fitted to labelled structures and saved as a potential.

    from facet_calc.nn.families.nequip_spline import nequip_spline_config
    config = nequip_spline_config(atomic_numbers=[29], channels=16, lmax=1, n_layers=2, cutoff=4.5)
    result = train_from_scratch(config, "cu.extxyz", "runs/cu", TrainSettings(epochs=50, lr=1e-2))
    calc = FacetCalculator(result.potential_dir)

As in fine-tuning, the per-element energy shifts are fitted by least squares before the first
epoch (the fresh model's energies are near zero; the data's are not).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..nn import build_model, initialise_for_training
from .data import LabelKeys
from .datafiles import DataFiles
from .fit import fit_on_files
from .output import TrainResult, data_bullet, prepare_run_folder, render_card, run_inputs, save_trained, stamp
from .settings import TrainSettings

WEAKNESSES = """A model trained from scratch knows only its training data: it has seen no other elements,
structures, temperatures or pressures, and can be arbitrarily wrong away from them. Test it on
the structures you care about before using it there."""


def untrained_model(config: dict[str, Any], dtype: str, seed: int) -> torch.nn.Module:
    """The model ``config`` describes, every parameter given a seeded starting value and
    trainable."""
    model = build_model(config, getattr(torch, dtype))
    initialise_for_training(model, seed)
    return model.requires_grad_(True)


def train_from_scratch(
    config: dict[str, Any], train: str | Path, out_dir: str | Path, settings: TrainSettings | None = None,
    valid: str | Path | None = None, valid_fraction: float = 0.1, keys: LabelKeys | None = None,
    freeze: tuple[str, ...] = (), train_only: str | None = None, name: str | None = None, resume: bool = False,
    progress: bool = True, plots: bool = False, overwrite: bool = False,
) -> TrainResult:  # fmt: skip
    """Train the model ``config`` describes (a full model config: ``architecture``,
    ``atomic_numbers``, ``cutoff``, ...) on the structures in ``train``; writes the same run
    folder as :func:`.finetune.finetune` (``<out_dir>/potential``, ``log.csv``, checkpoint,
    plots with ``plots=True``)."""
    settings = settings or TrainSettings()
    out_dir = Path(out_dir)
    model = untrained_model(config, settings.dtype, settings.seed).to(device=settings.device)
    data = DataFiles(Path(train), None if valid is None else Path(valid), valid_fraction, keys or LabelKeys())
    config_digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    run = {"model config (sha256)": config_digest, "frozen": list(freeze), "train only": train_only}
    prepare_run_folder(out_dir, run_inputs(data, settings, **run), model, settings, resume, overwrite)
    result, provenance = fit_on_files(
        model, list(config["atomic_numbers"]), float(config["cutoff"]), data, settings, out_dir, freeze=freeze,
        train_only=train_only, resume=resume, progress=progress, plots=plots,
    )  # fmt: skip
    config = dict(config)
    config["name"] = name or out_dir.name
    config["description"] = f"{config['architecture']} trained from scratch on {Path(train).name}"
    n_parameters = sum(p.numel() for p in result.model.parameters())
    provenance = {"from_scratch": True, "n_parameters": n_parameters, **provenance, **stamp()}
    config["training"] = provenance
    n_elements = len(config["atomic_numbers"])
    card = render_card(config, provenance, result.history, "Trained", [
        f"- Architecture: `{config['architecture']}`, {n_parameters} parameters, {n_elements} "
        f"element{'s' if n_elements != 1 else ''}, cutoff {config['cutoff']} A (the full config is in config.json).",
        data_bullet(provenance),
        f"- Per-element energy shifts fitted before training (eV): {provenance['shift_change_eV'] or 'none'}.",
    ], WEAKNESSES)  # fmt: skip
    folder = save_trained(out_dir, config, result.model, card)
    return TrainResult(folder, result.history, provenance["shift_change_eV"])
