"""A training run's folder: claimed before training (:func:`prepare_run_folder`: an existing
run is neither overwritten nor resumed with other inputs by accident) and, at the end, the
trained model written as a potential folder ``<run>/potential`` (index in
``<run>/index.json``) with a model card that says how it was made."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..potential import save_potential, sha256_of
from .checkpoint import check_free_space, has_checkpoint
from .data import DataError
from .datafiles import DataFiles
from .settings import TrainSettings

#: what a training run writes into its folder (an existing one is a run: refused unless
#: ``overwrite``, then removed; ``index.json`` is left, ``save_potential`` updates its entry)
RUN_OUTPUTS = ("checkpoint", "log.csv", "potential", "learning_curves.png", "parity_valid.png")
#: the inputs of the run that wrote the checkpoint, beside it; compared on resume
RUN_INPUTS = "run.json"


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


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's parameter names and values (as float64: the same for a float32 and
    a float64 load of one potential)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_inputs(data: DataFiles, settings: TrainSettings, **model: Any) -> dict[str, Any]:
    """What decides a run besides the number of epochs: the data files' sha256, the split and
    the label keys, the settings, and ``model`` (e.g. the base potential's weights digest,
    what is frozen); readable names, as resume's refusal shows them."""
    for path in (data.train, data.valid):
        if path is not None and not Path(path).is_file():
            raise DataError(f"training data file {str(path)!r} does not exist")
    inputs = {
        "training data (sha256)": sha256_of(Path(data.train)),
        "validation data (sha256)": None if data.valid is None else sha256_of(Path(data.valid)),
        "validation fraction": None if data.valid is not None else data.valid_fraction,
        "label keys": dataclasses.asdict(data.keys),
        **{f"setting {k}": v for k, v in settings.to_dict().items() if k != "epochs"},
        **model,
    }
    return json.loads(json.dumps(inputs, default=str))  # as read back from run.json


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text[:13] + '..."' if isinstance(value, str) and len(value) == 64 else text  # a sha256: its start


def prepare_run_folder(
    out_dir: Path, inputs: dict[str, Any], model: torch.nn.Module, settings: TrainSettings, resume: bool,
    overwrite: bool,
) -> None:  # fmt: skip
    """Claim ``out_dir`` for a run of ``inputs`` (:func:`run_inputs`) before anything is
    trained: a new run refuses a folder that holds one unless ``overwrite`` (which removes it);
    ``resume`` refuses a folder without a checkpoint, or whose run had other inputs (naming
    each one that changed); either refuses a disk without room for the checkpoint."""
    out_dir = Path(out_dir)
    checkpoint = out_dir / "checkpoint"
    if resume:
        if overwrite:
            raise DataError("--resume continues the run in the folder and --overwrite replaces it: give one of them")
        if not has_checkpoint(checkpoint):
            raise DataError(f"--resume: no checkpoint in {checkpoint} to resume from")
        recorded_file = checkpoint / RUN_INPUTS
        if recorded_file.is_file():  # runs of facet_calc before it have none (settings are still compared)
            recorded = json.loads(recorded_file.read_text())
            changed = [
                f"{key}: {_shown(recorded.get(key))} then, {_shown(inputs.get(key))} now"
                for key in sorted(set(recorded) | set(inputs))
                if recorded.get(key) != inputs.get(key)
            ]
            if changed:
                raise DataError(
                    f"--resume: the run in {out_dir} was started with other inputs ({'; '.join(changed)}); resume "
                    "with the same ones, or start a new run (another --out, or --overwrite)"
                )
        check_free_space(out_dir, model, settings.ema_decay is not None)
        return
    # a checkpoint folder without a checkpoint: a run stopped in its first epoch, nothing to lose
    existing = [name for name in RUN_OUTPUTS if (out_dir / name).exists() and name != "checkpoint"]
    existing += ["checkpoint"] if has_checkpoint(checkpoint) else []
    if existing and not overwrite:
        raise DataError(
            f"{out_dir} already holds a training run ({', '.join(existing)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )
    for path in (out_dir / name for name in RUN_OUTPUTS if name in existing or name == "checkpoint"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    check_free_space(out_dir, model, settings.ema_decay is not None)
    checkpoint.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint / (RUN_INPUTS + ".tmp")
    tmp.write_text(json.dumps(inputs, indent=1))
    os.replace(tmp, checkpoint / RUN_INPUTS)
