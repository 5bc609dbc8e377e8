"""``facet-calc train CONFIG.yaml``: a training run described by a YAML file (configuration
is data). Two kinds of start: from a potential (:func:`.finetune.finetune`) or from scratch
(:func:`.scratch.train_from_scratch`):

.. code-block:: yaml

    out: runs/cu-small            # run folder: checkpoint, log.csv, plots, potential/
    train: data/train.extxyz      # labelled structures (all frames)
    valid: data/valid.extxyz      # optional; else valid_fraction of train (seeded)
    valid_fraction: 0.1
    keys: {energy: REF_energy, forces: REF_forces, stress: REF_stress}   # optional
    model:
      base: 7net-0-spline         # start from a potential (fine-tuning) ...
      # ... or from scratch, any registered architecture, by hyperparameters or a full config:
      # architecture: facet-spline-nequip
      # hyperparameters: {atomic_numbers: [29], channels: 16, lmax: 1, n_layers: 2, cutoff: 4.5}
      # config: {...}
    freeze: []                    # parameter prefixes (fine-tuning)
    settings: {epochs: 50, batch_size: 4, lr: 0.001, loss: {energy: 1, forces: 1, stress: 1}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..graph import Structure, neighbour_list
from ..nn import FAMILIES
from .data import DataError, LabelKeys
from .finetune import finetune
from .scratch import train_from_scratch
from .settings import TrainSettings

_KNOWN = {"out", "train", "valid", "valid_fraction", "keys", "model", "freeze", "train_only", "settings", "name"}


def config_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The full model config of ``{"architecture": ..., "hyperparameters" | "config": ...}``."""
    if "config" in spec:
        return dict(spec["config"])
    if "hyperparameters" not in spec:
        raise DataError("model: give 'base' (a potential to start from), 'hyperparameters' or 'config'")
    architecture = spec.get("architecture", "facet-spline-nequip")
    if architecture not in FAMILIES:
        raise DataError(
            f"no hyperparameter builder for architecture {architecture!r}; known: "
            f"{', '.join(sorted(FAMILIES))}; or give the full model config under model.config"
        )
    try:
        return FAMILIES[architecture].config_from_hyperparameters(**spec["hyperparameters"])
    except TypeError as err:
        raise DataError(f"model.hyperparameters: {err}") from err


def train_from_yaml(path: Path, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Run the training that the YAML file at ``path`` describes; returns the potential folder."""
    import yaml

    if not path.is_file():
        raise DataError(f"training config {str(path)!r} does not exist")
    recipe = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(recipe) - _KNOWN)
    if unknown:
        raise DataError(f"{path}: unknown keys {unknown}; known keys: {sorted(_KNOWN)}")
    for key in ("out", "train", "model"):
        if key not in recipe:
            raise DataError(f"{path}: the key {key!r} is required")
    root = path.resolve().parent  # relative paths in the recipe are relative to the recipe

    def where(p):
        return None if p is None else (root / p if not Path(p).is_absolute() else Path(p))

    try:
        settings = TrainSettings(**recipe.get("settings", {}))
    except TypeError as err:
        raise DataError(f"{path}: settings: {err}") from err
    spec = dict(recipe["model"])
    if "hyperparameters" in spec and "avg_num_neighbors" not in spec["hyperparameters"]:
        spec["hyperparameters"] = {
            **spec["hyperparameters"],
            "avg_num_neighbors": mean_neighbours(where(recipe["train"]), spec["hyperparameters"].get("cutoff", 5.0)),
        }
    run = dict(
        valid=where(recipe.get("valid")),
        valid_fraction=float(recipe.get("valid_fraction", 0.1)),
        keys=LabelKeys(**recipe.get("keys", {})),
        freeze=tuple(recipe.get("freeze", ())),
        train_only=recipe.get("train_only"),
        name=recipe.get("name"),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        plots=True,
    )
    if "base" in spec:
        result = finetune(spec["base"], where(recipe["train"]), where(recipe["out"]), settings, **run)
    else:
        result = train_from_scratch(config_from_spec(spec), where(recipe["train"]), where(recipe["out"]), settings,
                                    **run)  # fmt: skip
    return result.potential_dir


def mean_neighbours(path: Path, cutoff: float) -> float:
    """Mean number of neighbours within ``cutoff`` per atom over the structures in ``path``
    (the convolution's normalisation for a model trained from scratch)."""
    from ase.io import read

    frames = read(path, index=":")
    edges = sum(len(neighbour_list(Structure.from_atoms(atoms), cutoff).senders) for atoms in frames)
    return edges / max(1, sum(len(atoms) for atoms in frames))
