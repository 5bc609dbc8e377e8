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
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .graph import AtomicGraph, graph_from_atoms
from .index import INDEX_FILE, list_potentials, list_user_potentials, potentials_dir, user_potentials_dir  # noqa: F401  (re-exported)
from .index import read_index as _read_index
from .nn import build_model
from .nn.config_checks import ConfigError
from .options import resolve_device, resolve_dtype, same_device
from .paths import broken_link
from .species import SpeciesTable

#: The potential used when none is named.
DEFAULT_POTENTIAL = "7net-0-spline"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.md"
#: files every potential folder has; all of them are checked against the index
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
CHECKED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
#: the fix a symlink loop among a potential's files is reported with
LOOP_FIX = "replace it with the real file or folder"

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Potential:
    """A loaded potential.

    Attributes:
        name: potential name (folder name).
        config: the model config and metadata from ``config.json``.
        model: the model its ``architecture`` names (see ``facet_calc.nn.families``), in eval
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
    def species(self) -> SpeciesTable:
        """The potential's elements and their species indices."""
        table = self.__dict__.get("_species")
        if table is None:
            table = self.__dict__["_species"] = SpeciesTable(self.atomic_numbers, f"potential {self.name!r}")
        return table

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def graph(self, atoms) -> AtomicGraph:
        """The :class:`~facet_calc.graph.AtomicGraph` of an ``ase.Atoms`` within this
        potential's cutoff, on its device with edge vectors in its dtype (validated as every
        engine validates)."""
        return graph_from_atoms(atoms, self.cutoff, self.species).to(self.device, self.dtype)

    @property
    def device(self) -> torch.device:
        return self.model.device


def _is_path(potential: str | Path) -> bool:
    """A ``Path``, or a string that looks like one (has a separator, or starts with ``.`` or
    ``~``), names a folder; any other string is the name of a shipped potential. A folder that
    merely has a shipped name in the working directory is never picked up instead of it."""
    if isinstance(potential, Path):
        return True
    text = str(potential)
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return any(s in text for s in separators) or text.startswith((".", "~"))


def _locate(potential: str | Path) -> tuple[Path, dict[str, str] | None]:
    """Folder of a potential and the sha256 digests its index lists (None if it has none).

    A bare name resolves to a shipped potential first, then to one in the user potential
    directory (:func:`~facet_calc.index.user_potentials_dir`), whose names never shadow shipped
    ones; a path to that folder, whose digests come from the ``index.json`` in the folder's
    parent (an index the user controls)."""
    if _is_path(potential):
        path = Path(potential).expanduser()
        if not path.is_dir():
            why = broken_link(path, LOOP_FIX) or ("is a file, not a folder" if path.exists() else "does not exist")
            raise FileNotFoundError(f"potential folder {str(path)!r} {why}")
        entry = _read_index(path.resolve().parent).get(path.resolve().name)
        if entry is not None and not isinstance(entry.get("sha256"), dict):
            raise ValueError(f"{path.resolve().parent / INDEX_FILE} has no sha256 table for {path.name!r}")
        return path, None if entry is None else entry["sha256"]
    shipped = potentials_dir()
    index = _read_index(shipped)
    name = str(potential)
    if name not in index:
        user_dir = user_potentials_dir()
        user_index = _read_index(user_dir)
        if name in user_index:
            if not isinstance(user_index[name].get("sha256"), dict):
                raise ValueError(f"{user_dir / INDEX_FILE} has no sha256 table for {name!r}")
            return user_dir / name, user_index[name]["sha256"]
        known = ", ".join(sorted(index)) or "(none installed)"
        if user_index:
            known += f"; yours ({user_dir}): " + ", ".join(sorted(user_index))
        hint = ""
        if Path(name).is_dir():
            hint = f" (to load the folder {name!r} in the working directory, pass it as a path: './{name}')"
        raise ValueError(
            f"unknown potential {name!r}: known potentials are {known}; or pass the path of a potential folder{hint}"
        )
    return shipped / name, index[name]["sha256"]


def _missing(folder: Path, fname: str) -> FileNotFoundError:
    why = broken_link(folder / fname, LOOP_FIX)
    return FileNotFoundError(f"potential folder {folder}: {fname} {why}" if why else
                             f"potential folder {folder} has no {fname}")  # fmt: skip


def _verify(folder: Path, digests: dict[str, str] | None, verify: bool) -> None:
    """Check every file of the potential against its sha256 in the index.

    Without an index entry the folder loads only with ``verify=False``, with a warning."""
    for fname in REQUIRED_FILES:
        if not (folder / fname).is_file():
            raise _missing(folder, fname)
    if digests is None:
        if verify:
            raise ValueError(
                f"potential folder {folder} is not listed in an {INDEX_FILE} beside it, so "
                "its files cannot be checked; write one with facet_calc.potential.save_potential, "
                "or pass verify=False (--no-verify) to load it unchecked"
            )
        warnings.warn(
            f"loading the potential folder {folder} without checking its files (verify=False): "
            "nothing guarantees they are the ones you converted",
            UserWarning,
            stacklevel=3,
        )
        return
    for fname in CHECKED_FILES:
        fpath = folder / fname
        if fname not in digests:
            raise ValueError(
                f"{folder.resolve().parent / INDEX_FILE} lists no sha256 for {folder.name}/{fname}; "
                "every file of a potential (config.json, weights.safetensors, card.md) must be listed"
            )
        if not fpath.is_file():
            raise _missing(folder, fname)
        actual = sha256_of(fpath)
        if actual != digests[fname]:
            raise ValueError(
                f"{fpath} is corrupted or was modified: its sha256 is {actual}, the index "
                f"expects {digests[fname]}; reinstall facet_calc or regenerate the "
                "potential with its recipe in models/"
            )


def load_potential(
    potential: str | Path = DEFAULT_POTENTIAL,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    verify: bool = True,
    backend: str = "auto",
    head: str | None = None,
) -> Potential:
    """Load a potential by name (see :func:`list_potentials`) or folder path.

    ``dtype`` and ``device`` as :mod:`facet_calc.options` resolves them (default float32 and
    ``"auto"``: CUDA when available). ``head`` picks the fidelity of a multi-fidelity potential
    (case-insensitive; default: its ``default_head``); for any other potential it must be None.

    A name (a string without a path separator) means a shipped potential, or else one that
    ``facet-calc convert --name`` installed in the user potential directory, never a folder of
    that name in the working directory; pass ``Path(...)`` or ``"./name"`` for a folder. Every
    file (config, weights, card) is checked against the sha256 in the index: the shipped one,
    or the ``index.json`` beside a folder (``save_potential`` writes it). ``verify=False``
    loads a folder that no index lists (your own conversions), with a warning. ``backend``
    chooses the implementation (``"auto"``, ``"kernel"``, ``"torch"``, or ``"e3nn"``, the
    reference; same results), see :mod:`facet_calc.nn.backend`. The parameters are frozen
    (``requires_grad=False``); ``facet_calc.train`` unfreezes the ones it trains.
    """
    torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    folder, digests = _locate(potential)
    _verify(folder, digests, verify)
    config = json.loads((folder / CONFIG_FILE).read_text())
    if not isinstance(config, dict):
        raise ConfigError(f"{folder / CONFIG_FILE} must hold a JSON object (a dict), not a {type(config).__name__}")
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


def use_potential(
    potential: str | Path | Potential,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    head: str | None = None,
) -> Potential:
    """``potential`` loaded (a name or folder) or, for a loaded :class:`Potential`, checked: a
    shared Potential is used as it is, never moved or converted, so a ``dtype``, ``device`` or
    ``head`` that differs from its own is an error. Every engine adapter starts here."""
    if not isinstance(potential, Potential):
        return load_potential(potential, dtype=dtype, device=device, head=head)
    wanted = {
        "device": None if device is None else resolve_device(device),
        "dtype": None if dtype is None else resolve_dtype(dtype),
        "head": None if head is None else str(head).lower(),
    }
    for key, have in (("device", potential.device), ("dtype", potential.dtype), ("head", potential.head)):
        if wanted[key] is None:
            continue
        if not (same_device(have, wanted[key]) if key == "device" else wanted[key] == have):
            raise ValueError(
                f"this Potential is loaded with {key}={have}, not {wanted[key]}; facet_calc never converts a "
                f"Potential it shares with others. Load one with load_potential({potential.name!r}, {key}=...), "
                "or pass the name instead"
            )
    return potential


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
