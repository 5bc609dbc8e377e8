"""The indexes of the potentials: the shipped ones (``potentials/index.json``) and the user's
own (:func:`user_potentials_dir`, where ``facet-calc convert --name`` installs): names,
descriptions and sha256 digests. Plain JSON and no torch, so that ``facet-calc list`` answers
at once."""

from __future__ import annotations

import json
import os
import re
import sys
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


#: environment variable that names the user potential directory
USER_DIR_VARIABLE = "FACET_CALC_POTENTIALS"
#: a potential name: letters, digits, '.', '_', '-', starting with a letter or digit
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def user_potentials_dir() -> Path:
    """Folder of the user's own potentials (created by ``facet-calc convert --name``, not here):
    ``$FACET_CALC_POTENTIALS`` if set, else the user data folder: ``$XDG_DATA_HOME`` or
    ``~/.local/share`` on Linux, ``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%``
    on Windows, then ``facet_calc/potentials``."""
    chosen = os.environ.get(USER_DIR_VARIABLE)
    if chosen:
        return Path(chosen).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "facet_calc" / "potentials"


def list_user_potentials() -> list[str]:
    """Names of the user's own potentials (in :func:`user_potentials_dir`), shipped names left out."""
    shipped = set(list_potentials())
    return sorted(set(read_index(user_potentials_dir())) - shipped)


def check_user_name(name: str) -> str:
    """``name`` if it can name a user potential: the pattern of :data:`NAME_PATTERN`, and not the
    name of a shipped potential (a user potential never shadows one); ``ValueError`` otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} cannot name a potential: use letters, digits, '.', '_' and '-' (starting with a "
            "letter or digit, at most 100 characters)"
        )
    if name in list_potentials():
        raise ValueError(
            f"{name!r} is the name of a shipped potential; a potential you install cannot shadow it: choose "
            "another name (e.g. 'my-" + name + "')"
        )
    return name
