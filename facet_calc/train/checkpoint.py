"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

``<dir>/checkpoint.safetensors`` holds the model parameters (``model.<name>``), the EMA
weights (``ema.<name>``) and the optimizer's state tensors (``optim.<i>.<key>``);
``<dir>/checkpoint.json`` the counters, the schedule's state, the history and the settings.
Both are written to temporary files and renamed, JSON last, so a run killed while writing
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.named_parameters()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    opt = optimizer.state_dict()
    for index, entry in opt["state"].items():
        for key, value in entry.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = tensor.detach().cpu().contiguous()
    state = {**state, "optimizer_param_groups": opt["param_groups"]}
    tmp = folder / (TENSORS + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / TENSORS)
    tmp = folder / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, folder / STATE)


def has_checkpoint(folder: Path) -> bool:
    return (folder / STATE).is_file() and (folder / TENSORS).is_file()


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    ema: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """Restore model, EMA and optimizer in place; return the JSON state."""
    state = json.loads((folder / STATE).read_text())
    tensors = load_file(str(folder / TENSORS))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[f"model.{name}"])
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
