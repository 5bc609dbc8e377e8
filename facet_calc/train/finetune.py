"""Fine-tuning a shipped or saved potential on the user's own labelled structures.

    from facet_calc.train import finetune, TrainSettings
    result = finetune("7net-0-spline", "my_dft.extxyz", "runs/ft1", TrainSettings(epochs=30, lr=1e-4))
    calc = FacetCalculator(result.potential_dir)

Every parameter is trainable by default (spline tables included; they stay exactly zero, with
zero slope, at the cutoff); ``freeze`` names parameter prefixes to keep, and
``train_only="readout"`` trains only the readout, scale and shift. Before training, the
per-element energy shifts are refitted by least squares on the training set, so data from
another code or functional does not spend the first epochs on a constant offset.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols

from .. import __version__
from ..potential import Potential, load_potential, save_potential, sha256_of
from .data import Configuration, DataError, LabelKeys, batch_of, read_configurations, split
from .trainer import Trainer, TrainSettings, predict

READOUT_PREFIXES = ("readout_hidden.", "readout_out.", "readout_weight", "scale", "shift")


@dataclass
class FinetuneResult:
    potential_dir: Path
    history: list[dict[str, float]]
    shift_change_eV: dict[str, float] = field(default_factory=dict)


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


@torch.no_grad()
def refit_shifts(model: torch.nn.Module, configs: list[Configuration], dtype: torch.dtype) -> torch.Tensor:
    """Change the per-species shifts by the least-squares (minimum-norm) correction that best
    matches the reference energies of ``configs``; returns the change per species (eV)."""
    model.eval()
    residual, counts = [], []
    n_species = model.shift.shape[0]
    for k in range(0, len(configs), 16):
        chunk = configs[k : k + 16]
        batch = batch_of(chunk, dtype, model.device)
        pred = predict(model, batch, create_graph=False, with_stress=False, with_forces=False)
        residual.append((batch.labels.energy - pred["energy"]).double().cpu())
        counts += [torch.bincount(c.species, minlength=n_species).double() for c in chunk]
    a, b = torch.stack(counts), torch.cat(residual)
    present = a.sum(0) > 0
    delta = torch.zeros(n_species, dtype=torch.float64)
    # the minimum-norm solution leaves unidentifiable combinations (fixed stoichiometry) alone
    delta[present] = torch.linalg.lstsq(a[:, present], b.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    model.shift.add_(delta.to(model.shift))
    return delta


def finetune(
    base: str | Path | Potential,
    train: str | Path,
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    valid: str | Path | None = None,
    valid_fraction: float = 0.1,
    keys: LabelKeys | None = None,
    freeze: tuple[str, ...] = (),
    train_only: str | None = None,
    shift_refit: bool = True,
    name: str | None = None,
    resume: bool = False,
    progress: bool = True,
    plots: bool = False,
) -> FinetuneResult:
    """Fine-tune ``base`` on the structures in ``train``; the result is a potential folder
    ``<out_dir>/potential`` (index in ``<out_dir>/index.json``) that ``FacetCalculator`` loads,
    plus ``log.csv``, the checkpoint and, with ``plots=True``, ``learning_curves.png`` and
    ``parity_valid.png``."""
    settings = settings or TrainSettings()
    keys = keys or LabelKeys()
    out_dir = Path(out_dir)
    potential = (
        base if isinstance(base, Potential) else load_potential(base, dtype=settings.dtype, device=settings.device)
    )
    model = copy.deepcopy(potential.model).to(dtype=getattr(torch, settings.dtype), device=settings.device)
    numbers, cutoff = potential.atomic_numbers, potential.cutoff
    use_stress = settings.loss.stress > 0
    train_configs = read_configurations(train, numbers, cutoff, keys, use_stress)
    if valid is not None:
        valid_configs = read_configurations(valid, numbers, cutoff, keys, use_stress)
    else:
        train_configs, valid_configs = split(train_configs, valid_fraction, settings.seed)
    shift_change: dict[str, float] = {}
    if shift_refit and not resume:
        delta = refit_shifts(model, train_configs, getattr(torch, settings.dtype))
        shift_change = {chemical_symbols[numbers[i]]: float(d) for i, d in enumerate(delta) if d != 0}
    set_trainable(model, freeze, train_only)
    trainer = Trainer(model, train_configs, valid_configs, settings, out_dir, progress=progress)
    if resume and not trainer.resume():
        raise DataError(f"--resume: no checkpoint in {out_dir / 'checkpoint'} to resume from")
    history = trainer.run()
    model = trainer.finish()
    if plots and history:
        from .plots import plot_learning_curves, plot_parity

        plot_learning_curves(history, out_dir / "learning_curves.png")
        plot_parity(trainer.predictions(valid_configs), out_dir / "parity_valid.png", "validation set")
    config = copy.deepcopy(potential.config)
    config["name"] = name or out_dir.name
    config["description"] = f"{potential.name} fine-tuned on {Path(train).name}"
    provenance = {
        "base_potential": potential.name,
        "train_file": str(train),
        "train_sha256": sha256_of(Path(train)),
        "valid_file": None if valid is None else str(valid),
        "valid_sha256": None if valid is None else sha256_of(Path(valid)),
        "n_train": len(train_configs),
        "n_valid": len(valid_configs),
        "settings": settings.to_dict(),
        "freeze": list(freeze),
        "train_only": train_only,
        "shift_change_eV": shift_change,
        "facet_calc_version": __version__,
        "date": datetime.date.today().isoformat(),
    }
    config["finetune"] = provenance
    tensors = {k: v.detach().cpu() for k, v in model.named_parameters()}
    folder = out_dir / "potential"
    save_potential(folder, config, tensors, _card(config, provenance, history))
    return FinetuneResult(folder, history, shift_change)


def _card(config: dict[str, Any], info: dict[str, Any], history: list[dict[str, float]]) -> str:
    last = history[-1] if history else {}
    metrics = "\n".join(
        f"| {k.removeprefix('valid_')} | {v:.4g} |"
        for k, v in last.items()
        if k.startswith("valid_") and "loss" not in k
    )
    settings = json.dumps(info["settings"], indent=1)
    return f"""# {config["name"]}

{config["description"]}. Fine-tuned with facet_calc {info["facet_calc_version"]} on {info["date"]}.

- Base potential: `{info["base_potential"]}` (its card describes the architecture, the
  original training data and its licence; cite it).
- Training data: `{info["train_file"]}` (sha256 `{info["train_sha256"]}`), {info["n_train"]} configurations;
  validation: {info["valid_file"] or "a seeded split of the training file"}, {info["n_valid"]} configurations.
- Per-element shift change before training (eV): {info["shift_change_eV"] or "none"}.
- Frozen: {info["freeze"] or "nothing"}{"; trained: readout, scale and shift only" if info["train_only"] else ""}.
- Epochs run: {len(history)}.

## Final validation errors (EMA weights, the ones saved)

| metric | value |
|---|---|
{metrics}

## Settings

```json
{settings}
```

## Known weaknesses

A fine-tuned potential is only as good as its data: away from the structures it was tuned on,
it can be worse than its base (forgetting). Compare it with the base on structures you care
about before using it there.
"""
