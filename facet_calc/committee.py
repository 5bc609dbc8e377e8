"""A committee of potentials: K members (e.g. students distilled with different seeds) whose mean
is the prediction and whose spread is the uncertainty.

On disk a committee is a folder of ordinary potential folders::

    <dir>/committee.json     {"format_version": 1, "members": ["member-0", "member-1", ...]}
    <dir>/index.json         sha256 of every member's files (save_potential writes it)
    <dir>/member-0/          config.json, weights.safetensors, card.md (a normal potential)

Each member loads (and is checked against the index) as any potential does; nothing is unpickled.
``FacetCalculator(<dir>)`` or ``FacetCalculator([pot_a, pot_b, pot_c])`` evaluates all members
on one graph (:func:`facet_calc.nn.committee.evaluate_committee`) and reports the mean as
``energy``/``forces``/``stress`` and the spread (:func:`committee_statistics`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .nn.committee import check_members
from .potential import Potential, load_potential, use_potential
from .species import SpeciesTable

COMMITTEE_FILE = "committee.json"
#: the spread a committee adds to a calculator's properties
COMMITTEE_PROPERTIES = ["energy_std", "forces_std", "stress_std"]


@dataclass
class Committee:
    """K loaded potentials that share cutoff, elements, dtype and device.

    Quacks like :class:`~facet_calc.potential.Potential` where the engines need it (``name``,
    ``config``, ``cutoff``, ``species``, ``dtype``, ``device``, ``model``: member 0's, for
    memory planning), plus ``members`` and ``models``."""

    name: str
    members: list[Potential]
    path: Path | None = None
    head: str | None = None

    def __post_init__(self) -> None:
        check_members(self.models)

    @property
    def models(self) -> list[torch.nn.Module]:
        return [m.model for m in self.members]

    @property
    def model(self) -> torch.nn.Module:
        return self.members[0].model

    @property
    def config(self) -> dict[str, Any]:
        return {**self.members[0].config, "committee": [m.name for m in self.members]}

    @property
    def cutoff(self) -> float:
        return self.members[0].cutoff

    @property
    def atomic_numbers(self) -> list[int]:
        return self.members[0].atomic_numbers

    @property
    def species(self) -> SpeciesTable:
        return self.members[0].species

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def __len__(self) -> int:
        return len(self.members)


def is_committee(potential: Any) -> bool:
    """A committee source: a :class:`Committee`, a list or tuple of potentials, or a folder
    holding ``committee.json``."""
    if isinstance(potential, (Committee, list, tuple)):
        return True
    if isinstance(potential, (str, Path)):
        text = str(potential)
        return ("/" in text or text.startswith((".", "~")) or isinstance(potential, Path)) and (
            Path(text).expanduser() / COMMITTEE_FILE
        ).is_file()
    return False


def load_committee(
    source: str | Path | Sequence[str | Path | Potential] | Committee,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    verify: bool = True,
) -> Committee:
    """A committee from a folder with ``committee.json``, or from a list of potential names,
    folders or loaded potentials (each loaded with ``dtype``/``device``, or checked as
    :func:`~facet_calc.potential.use_potential` checks a shared one)."""
    if isinstance(source, Committee):
        for member in source.members:
            use_potential(member, dtype, device)
        return source
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("a committee needs at least one potential; got an empty list")
        members = [
            use_potential(p, dtype, device) if isinstance(p, Potential)
            else load_potential(p, dtype=dtype, device=device, verify=verify)
            for p in source
        ]  # fmt: skip
        return Committee("committee(" + ", ".join(m.name for m in members) + ")", members)
    folder = Path(source).expanduser()
    spec_file = folder / COMMITTEE_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{folder} holds no {COMMITTEE_FILE}, so it is not a committee folder")
    try:
        spec = json.loads(spec_file.read_text())
        names = list(spec["members"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{spec_file} must be JSON with a 'members' list of folder names ({err})") from err
    bad = [n for n in names if not isinstance(n, str) or "/" in n or "\\" in n or n.startswith(".")]
    if bad or not names:
        raise ValueError(f"{spec_file}: members must be a non-empty list of sub-folder names, got {names!r:.200}")
    members = [load_potential(folder / n, dtype=dtype, device=device, verify=verify) for n in names]
    return Committee(folder.name, members, path=folder)


def save_committee(folder: str | Path, members: Sequence[tuple[dict, dict[str, torch.Tensor], str]]) -> Path:
    """Write a committee folder: each ``(config, tensors, card)`` as ``member-k`` (with its
    digests in ``index.json``), then ``committee.json``, written last (a folder without it
    is no committee)."""
    from .potential import save_potential

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, (config, tensors, card) in enumerate(members):
        name = f"member-{k}"
        save_potential(folder / name, {**config, "name": name}, tensors, card)
        names.append(name)
    tmp = folder / (COMMITTEE_FILE + ".tmp")
    tmp.write_text(json.dumps({"format_version": 1, "members": names}, indent=1) + "\n")
    tmp.replace(folder / COMMITTEE_FILE)
    return folder


def committee_statistics(
    energy: np.ndarray, forces: np.ndarray | None = None, stress: np.ndarray | None = None
) -> dict[str, Any]:
    """Mean and spread of the members' predictions of one structure (population standard
    deviations, ``np.std`` with ``ddof=0``).

    Args:
        energy: ``(K,)`` eV; forces: ``(K, n_atoms, 3)`` eV/A; stress: ``(K, 6)`` eV/A^3.

    Returns ``energy``, ``energy_std`` (eV), ``energy_members (K,)``; ``forces (n, 3)``,
    ``forces_std (n,)`` eV/A: per atom, the root of the summed variances of the three
    components, i.e. the RMS distance of the members' force vectors from the mean one;
    ``forces_members (K, n, 3)``; ``stress (6,)``, ``stress_std (6,)`` eV/A^3 per Voigt
    component, ``stress_members (K, 6)``.
    """
    out: dict[str, Any] = {
        "energy": float(np.mean(energy)),
        "energy_std": float(np.std(energy)),
        "energy_members": np.asarray(energy, dtype=np.float64),
    }
    if forces is not None:
        out["forces"] = forces.mean(axis=0)
        out["forces_std"] = np.sqrt(forces.var(axis=0).sum(axis=-1))
        out["forces_members"] = forces
    if stress is not None:
        out["stress"] = stress.mean(axis=0)
        out["stress_std"] = stress.std(axis=0)
        out["stress_members"] = stress
    return out
