"""A trained model written as a potential folder ``<run>/potential`` (index in
``<run>/index.json``) with a model card that says how it was made."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..potential import save_potential


@dataclass
class TrainResult:
    """``potential_dir``: the folder ``FacetCalculator`` loads; ``history``: one row of metrics
    per epoch; ``shift_change_eV``: the per-element shift changes fitted before training."""

    potential_dir: Path
    history: list[dict[str, float]]
    shift_change_eV: dict[str, float] = field(default_factory=dict)


def stamp() -> dict[str, str]:
    """The facet_calc version and the date, for the provenance of a trained potential."""
    return {"facet_calc_version": __version__, "date": datetime.date.today().isoformat()}


def save_trained(out_dir: Path, config: dict[str, Any], model: torch.nn.Module, card: str) -> Path:
    """Save ``model``'s parameters with ``config`` and ``card`` as ``out_dir/potential``."""
    tensors = {k: v.detach().cpu() for k, v in model.named_parameters()}
    folder = Path(out_dir) / "potential"
    save_potential(folder, config, tensors, card)
    return folder


def data_bullet(info: dict[str, Any]) -> str:
    """The card's line on the training and validation data (from :meth:`DataFiles.provenance`)."""
    return (
        f"- Training data: `{info['train_file']}` (sha256 `{info['train_sha256']}`), {info['n_train']} "
        f"configurations;\n  validation: {info['valid_file'] or 'a seeded split of the training file'}, "
        f"{info['n_valid']} configurations."
    )


def render_card(
    config: dict[str, Any], info: dict[str, Any], history: list[dict[str, float]], how: str, facts: list[str],
    weaknesses: str,
) -> str:  # fmt: skip
    """The model card: ``how`` the model was made (e.g. "Fine-tuned"), ``facts`` (markdown
    bullet lines; the number of epochs is added), the final validation errors, the settings
    and ``weaknesses`` (a paragraph)."""
    last = history[-1] if history else {}
    metrics = "\n".join(
        f"| {k.removeprefix('valid_')} | {v:.4g} |"
        for k, v in last.items()
        if k.startswith("valid_") and "loss" not in k
    )
    bullets = "\n".join([*facts, f"- Epochs run: {len(history)}."])
    settings = json.dumps(info["settings"], indent=1)
    return f"""# {config["name"]}

{config["description"]}. {how} with facet_calc {info["facet_calc_version"]} on {info["date"]}.

{bullets}

## Final validation errors (EMA weights, the ones saved)

| metric | value |
|---|---|
{metrics}

## Settings

```json
{settings}
```

## Known weaknesses

{weaknesses}
"""
