"""A Potential is a model plus its metadata, loaded by name or path, checked by sha256.

On disk a potential is a folder::

    <name>/config.json          model config and metadata (JSON; no code)
    <name>/weights.safetensors  named tensors (safetensors; never unpickled)
    <name>/card.md              the model card

and ``index.json`` beside the folders records, per potential, the sha256 of each file. Loading
refuses a file whose digest differs from the index, so a corrupted or altered download is never
used. Nothing in a potential file is executed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .index import INDEX_FILE, potentials_dir
from .index import read_index as _read_index
from .nn.registry import build_model

#: The potential used when none is named.
DEFAULT_POTENTIAL = "7net-0-spline"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.md"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


@dataclass
class Potential:
    """A loaded potential.

    Attributes:
        name: potential name (folder name).
        config: the model config and metadata from ``config.json``.
        model: the model its ``architecture`` names (see ``facet_calc.nn.registry``), in eval
            mode with frozen parameters, on ``device`` with ``dtype``.
        path: the folder it was loaded from.
    """

    name: str
    config: dict[str, Any]
    model: torch.nn.Module
    path: Path
    #: the fidelity a multi-fidelity potential was loaded with (lower case); None for others
    head: str | None = None

    @property
    def cutoff(self) -> float:
        return float(self.config["cutoff"])

    @property
    def atomic_numbers(self) -> list[int]:
        return list(self.config["atomic_numbers"])

    @property
    def dtype(self) -> torch.dtype:
        return self.model.scale.dtype

    @property
    def device(self) -> torch.device:
        return self.model.scale.device


def _locate(potential: str | Path) -> tuple[Path, dict[str, str] | None]:
    """Folder of a potential and the sha256 digests its index lists (None if it has none)."""
    path = Path(potential)
    if path.is_dir():
        entry = _read_index(path.resolve().parent).get(path.resolve().name)
        return path, None if entry is None else entry["sha256"]
    shipped = potentials_dir()
    index = _read_index(shipped)
    if str(potential) not in index:
        known = ", ".join(sorted(index)) or "(none installed)"
        raise ValueError(
            f"unknown potential {str(potential)!r}: known potentials are {known}; "
            "or pass the path of a potential folder"
        )
    return shipped / str(potential), index[str(potential)]["sha256"]


def _verify(folder: Path, digests: dict[str, str] | None, require_digest: bool) -> None:
    for fname in (CONFIG_FILE, WEIGHTS_FILE):
        fpath = folder / fname
        if not fpath.is_file():
            raise FileNotFoundError(f"potential folder {folder} has no {fname}")
        if digests is None:
            if require_digest:
                raise ValueError(
                    f"potential folder {folder} is not listed in an {INDEX_FILE} beside it, so "
                    "its files cannot be checked; pass verify=False to load it unchecked"
                )
            continue
        actual = sha256_of(fpath)
        if actual != digests.get(fname):
            raise ValueError(
                f"{fpath} is corrupted or was modified: its sha256 is {actual}, the index "
                f"expects {digests.get(fname)}; reinstall facet_calc or regenerate the "
                "potential with its recipe in models/"
            )


def load_potential(
    potential: str | Path = DEFAULT_POTENTIAL,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    verify: bool = True,
    backend: str = "auto",
    head: str | None = None,
) -> Potential:
    """Load a potential by name (see :func:`list_potentials`) or folder path.

    ``head`` picks the fidelity of a multi-fidelity potential (case-insensitive; default: its
    ``default_head``); for any other potential it must be None.

    Every file is checked against the sha256 in the index; ``verify=False`` skips that check
    for a folder that no index lists (your own conversions). ``backend`` chooses the
    implementation (``"auto"``, ``"kernel"``, ``"torch"``, or ``"e3nn"``, the reference; same
    results), see :mod:`facet_calc.nn.backend`. The parameters are frozen
    (``requires_grad=False``); ``facet_calc.train`` unfreezes the ones it trains.
    """
    torch_dtype = resolve_dtype(dtype)
    folder, digests = _locate(potential)
    _verify(folder, digests, require_digest=verify)
    config = json.loads((folder / CONFIG_FILE).read_text())
    head = _resolve_head(folder.name, config, head)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except SafetensorError as err:
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {err}") from err
    model = build_model(config, torch_dtype)
    load_parameters(model, tensors, source=str(folder / WEIGHTS_FILE))
    model = model.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    model.set_backend(backend)
    if head is not None:
        model.set_head(config["heads"].index(head))
    return Potential(name=folder.name, config=config, model=model, path=folder, head=head)


def _resolve_head(name: str, config: dict[str, Any], head: str | None) -> str | None:
    heads = config.get("heads")
    if not heads:
        if head is not None:
            raise ValueError(
                f"potential {name!r} has a single fidelity, so head={head!r} does not apply; heads "
                "belong to multi-fidelity potentials such as 7net-mf-0-spline (pbe, r2scan)"
            )
        return None
    chosen = str(head if head is not None else config["default_head"]).lower()
    if chosen not in heads:
        raise ValueError(f"potential {name!r} has no head {head!r}; its heads are {', '.join(heads)}")
    return chosen


def load_parameters(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "tensors") -> None:
    """Copy named tensors into the model's parameters; the names must match exactly."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise ValueError(f"{source} does not match the model: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, param in params.items():
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise ValueError(
                    f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                    f"the model needs {tuple(param.shape)}"
                )
            param.data = tensors[name].to(param.device).clone()


def save_potential(
    folder: str | Path,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    card: str,
) -> dict[str, str]:
    """Write a potential folder and record its sha256 digests in ``index.json`` beside it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
    (folder / CARD_FILE).write_text(card)
    digests = {f: sha256_of(folder / f) for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)}
    index_path = folder.resolve().parent / INDEX_FILE
    index = _read_index(folder.resolve().parent)
    index[folder.name] = {"sha256": digests, "description": config.get("description", "")}
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return digests
