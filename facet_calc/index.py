"""The index of the shipped potentials (``potentials/index.json``): names, descriptions and
sha256 digests. Plain JSON and no torch, so that ``facet-calc list`` answers at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INDEX_FILE = "index.json"


def potentials_dir() -> Path:
    """Folder of the shipped potentials: inside the installed wheel, or the source checkout."""
    try:
        from importlib.resources import files

        path = Path(str(files("facet_calc.potentials")))
        if (path / INDEX_FILE).is_file():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "potentials"


def read_index(folder: Path) -> dict[str, Any]:
    """The ``index.json`` in ``folder`` ({} if there is none); ``ValueError`` if it is malformed."""
    index = folder / INDEX_FILE
    if not index.is_file():
        return {}
    try:
        data = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{index} is not valid JSON ({err}); rewrite it or remove it") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{index} must map potential names to {{'sha256': {{file: digest}}}} entries")
    return data


def list_potentials() -> list[str]:
    """Names of the shipped potentials."""
    return sorted(read_index(potentials_dir()))
