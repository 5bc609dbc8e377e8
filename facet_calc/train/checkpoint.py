"""Training checkpoints without pickle: one safetensors file, committed by one rename.

``<dir>/checkpoint.safetensors`` holds the model parameters (``model.<name>``), the EMA
weights (``ema.<name>``) and the optimizer's state tensors (``optim.<i>.<key>``); its
metadata entry ``state`` holds the counters, the schedule's state, the history and the
settings as JSON. The file is written under a temporary name, flushed to disk and renamed
over the previous one, so a run killed at any moment leaves either the new checkpoint or the
previous complete one, never the weights of one epoch with the counters of another.
Checkpoints of facet_calc versions before this one (tensors here, state in
``checkpoint.json``) are still read.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

TENSORS = "checkpoint.safetensors"
#: the state of checkpoints written before the single-file format (read, never written)
LEGACY_STATE = "checkpoint.json"
STATE_KEY = "state"
#: room beyond the checkpoint and the potential: log.csv, the plots, the card (bytes)
MARGIN_BYTES = 4 << 20


class CheckpointSpaceError(OSError):
    """Too little disk space for the checkpoint (found before training, or while writing)."""


def checkpoint_tensors(
    model: torch.nn.Module, ema: dict[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The tensors a checkpoint stores and the optimizer's parameter groups."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.named_parameters()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    opt = optimizer.state_dict()
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = tensor.detach().cpu().contiguous()
    return tensors, opt["param_groups"]


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the checkpoint atomically (see the module docstring); a full disk raises
    :class:`CheckpointSpaceError` and leaves the previous checkpoint in place. ``best``: the
    weights the fine-tuning guard keeps, stored as ``best.<name>`` in the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, groups = checkpoint_tensors(model, ema, optimizer)
    if best is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()})
    state = {**state, "optimizer_param_groups": groups}
    payload = save(tensors, metadata={STATE_KEY: json.dumps(state)})
    tmp = folder / (TENSORS + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointSpaceError(
                f"the disk holding {folder} is full: the checkpoint ({len(payload) / 2**20:.1f} MiB) "
                "could not be written (the previous one is kept); free space and continue with --resume",
            ) from err  # fmt: skip
        raise
    os.replace(tmp, folder / TENSORS)
    (folder / LEGACY_STATE).unlink(missing_ok=True)  # a legacy state beside a new file would be stale


def has_checkpoint(folder: Path) -> bool:
    return (folder / TENSORS).is_file()


def _read_state(folder: Path) -> dict[str, Any]:
    with safe_open(str(folder / TENSORS), framework="pt") as handle:
        text = (handle.metadata() or {}).get(STATE_KEY)
    if text is None:  # written before the single-file format
        text = (folder / LEGACY_STATE).read_text()
    return json.loads(text)


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """Restore model, EMA and optimizer in place; return the JSON state. A checkpoint of
    another model (other parameter names or shapes) raises ``ValueError`` naming the first
    difference, before anything is changed."""
    state = _read_state(folder)
    tensors = load_file(str(folder / TENSORS))
    params = dict(model.named_parameters())
    saved = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    for name, param in params.items():
        if name not in saved or saved[name].shape != param.shape:
            found = "missing" if name not in saved else f"of shape {tuple(saved[name].shape)}"
            raise ValueError(
                f"the checkpoint in {folder} is of another model: its parameter {name!r} is {found}, the "
                f"model's is of shape {tuple(param.shape)}; resume with the potential the run started from, "
                "or start a new run in another folder"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])
        if ema is not None:
            for name, value in ema.items():
                value.copy_(tensors[f"ema.{name}"])
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("optimizer_param_groups")})
    return state


def estimated_bytes(model: torch.nn.Module, ema: bool) -> int:
    """An upper estimate of a checkpoint of ``model`` (bytes): every parameter, the EMA and
    AdamW's two moments of the trainable ones, their step counters, and the JSON (history)."""
    total = trainable = 0
    for param in model.parameters():
        size = param.numel() * param.element_size()
        total += size
        if param.requires_grad:
            trainable += size + 8  # + the step counter
    return total + trainable * (2 + int(ema)) + (1 << 20)


def check_free_space(out_dir: Path, model: torch.nn.Module, ema: bool) -> None:
    """Refuse, before training, a run folder whose disk cannot hold the checkpoint (written
    beside the previous one, then renamed), the saved potential and the logs."""
    need = estimated_bytes(model, ema) + sum(p.numel() * p.element_size() for p in model.parameters()) + MARGIN_BYTES
    existing = next((p for p in [Path(out_dir), *Path(out_dir).parents] if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if free < need:
        raise CheckpointSpaceError(
            f"the disk holding {out_dir} has {free / 2**20:.1f} MiB free, but the run needs about "
            f"{need / 2**20:.1f} MiB (checkpoint, potential, logs); free space or choose another --out",
        )  # fmt: skip
