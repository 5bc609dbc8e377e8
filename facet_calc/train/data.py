"""Labelled structures for training: read, checked, turned into labelled graphs once, batched.

A configuration's labels come from the calculator results attached to it (what ASE writes
into extxyz files) or from the info/arrays keys the user names (``REF_energy``,
``REF_forces``, ``REF_stress``, as MACE and janus-core call them). Units: eV, eV/A, eV/A^3
with ASE's sign (tensile positive), Voigt-6 or 3x3. Bad data is refused with a message naming
the configuration and the problem; nothing is trained on silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from ..graph import AtomicGraph, Labels, Structure, build_graph, collate
from ..species import SpeciesTable, UnknownElementError


class DataError(ValueError):
    """Training data that cannot be used: the message names the configuration and the fix."""


@dataclass(frozen=True)
class LabelKeys:
    """Where the labels are. ``None`` means the attached calculator results (``atoms.calc``)."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    weight: str = "config_weight"
    #: per-atom energies (an arrays key; None: the attached results' ``energies``, if any)
    energies: str | None = None


@dataclass
class Configuration:
    """One labelled structure: its name (for messages), atomic numbers and labelled graph (CPU,
    float64; :func:`batch_of` joins and casts).

    Labels: ``energy`` eV; ``forces (n, 3)`` eV/A (zeros and masked when the frame has none);
    ``stress (3, 3)`` eV/A^3, ASE sign (masked when absent); ``weight`` in the loss.
    """

    name: str
    numbers: np.ndarray
    graph: AtomicGraph

    @property
    def n_atoms(self) -> int:
        return self.graph.n_atoms

    @property
    def species(self) -> torch.Tensor:
        return self.graph.species

    @property
    def has_forces(self) -> bool:
        return bool(self.graph.labels.force_mask.any())

    @property
    def has_stress(self) -> bool:
        return bool(self.graph.labels.stress_mask.any())


def _label(atoms: Atoms, key: str | None, what: str, name: str):
    if key is None:
        results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        return results.get(what)
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    return None


def configuration_from_atoms(
    atoms: Atoms,
    name: str,
    species: SpeciesTable,
    cutoff: float,
    keys: LabelKeys | None = None,
    use_stress: bool = True,
) -> Configuration:
    """Check one labelled structure and build its graph; :class:`DataError` if it is unusable."""
    keys = keys or LabelKeys()
    numbers = atoms.numbers
    if len(atoms) == 0:
        raise DataError(f"{name}: the configuration has no atoms")
    try:
        species.indices(numbers)
    except UnknownElementError as err:
        raise DataError(
            f"{name}: {err}; remove these configurations or start from a potential that has them"
        ) from None
    if not np.all(np.isfinite(atoms.positions)):
        raise DataError(f"{name}: positions contain NaN or infinite values")
    energy = _label(atoms, keys.energy, "energy", name)
    if energy is None:
        where = f"info key {keys.energy!r}" if keys.energy else "attached results (atoms.calc)"
        raise DataError(f"{name}: no energy found in the {where}; name the key with energy_key=...")
    energy = float(np.asarray(energy).reshape(-1)[0]) if np.size(energy) == 1 else None
    if energy is None or not np.isfinite(energy):
        raise DataError(f"{name}: the energy must be one finite number")
    forces = _label(atoms, keys.forces, "forces", name)
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise DataError(f"{name}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise DataError(f"{name}: forces contain NaN or infinite values")
    stress = _label(atoms, keys.stress, "stress", name) if use_stress else None
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        elif stress.shape == (9,):
            stress = stress.reshape(3, 3)
        if stress.shape != (3, 3):
            raise DataError(f"{name}: stress has shape {stress.shape}, expected Voigt (6,) or (3, 3)")
        if not np.all(np.isfinite(stress)):
            raise DataError(f"{name}: stress contains NaN or infinite values")
        if atoms.cell.rank < 3 or not atoms.pbc.all():
            raise DataError(f"{name}: a stress label needs a periodic cell with three lattice vectors")
    atom_energies = _label(atoms, keys.energies, "energies", name)
    if atom_energies is not None:
        atom_energies = np.asarray(atom_energies, dtype=np.float64)
        if atom_energies.shape != (len(atoms),):
            raise DataError(f"{name}: per-atom energies have shape {atom_energies.shape}, expected ({len(atoms)},)")
        if not np.all(np.isfinite(atom_energies)):
            raise DataError(f"{name}: per-atom energies contain NaN or infinite values")
    weight = float(atoms.info.get(keys.weight, 1.0))
    if not np.isfinite(weight) or weight < 0:
        raise DataError(f"{name}: weight {weight} must be a finite number >= 0")
    try:
        graph = build_graph(Structure.from_atoms(atoms), cutoff, species)
    except ValueError as err:
        raise DataError(f"{name}: {err}") from err
    n = len(atoms)
    labels = Labels(
        energy=torch.tensor([energy], dtype=torch.float64),
        forces=torch.zeros(n, 3, dtype=torch.float64) if forces is None else torch.from_numpy(forces),
        force_mask=torch.full((n,), forces is not None),
        stress=torch.zeros(1, 3, 3, dtype=torch.float64) if stress is None else torch.from_numpy(stress)[None],
        stress_mask=torch.tensor([stress is not None]),
        weight=torch.tensor([weight], dtype=torch.float64),
        atom_energies=torch.zeros(n, dtype=torch.float64) if atom_energies is None else torch.from_numpy(atom_energies),
        atom_energy_mask=torch.full((n,), atom_energies is not None),
    )
    return Configuration(name=name, numbers=np.array(numbers), graph=graph.with_labels(labels))


def read_configurations(
    source: str | Path | Sequence[Atoms],
    atomic_numbers: Sequence[int],
    cutoff: float,
    keys: LabelKeys | None = None,
    use_stress: bool = True,
) -> list[Configuration]:
    """All configurations of an ASE-readable file (every frame) or a list of Atoms."""
    if isinstance(source, (str, Path)):
        from ase.io import read

        path = Path(source)
        if not path.is_file():
            raise DataError(f"training data file {str(path)!r} does not exist")
        try:
            frames = read(path, index=":")
        except Exception as err:  # ASE raises many types for unreadable files
            raise DataError(f"could not read {str(path)!r} ({type(err).__name__}: {err})") from err
        label = path.name
    else:
        frames, label = list(source), "structures"
    if not frames:
        raise DataError(f"{label} holds no configurations")
    species = SpeciesTable(atomic_numbers, "the potential")
    return [
        configuration_from_atoms(atoms, f"{label}[{i}]", species, cutoff, keys, use_stress)
        for i, atoms in enumerate(frames)
    ]


def split(configs: list[Configuration], valid_fraction: float, seed: int) -> tuple[list, list]:
    """Train and validation sets by a fixed seed (the same split on every run)."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    order = torch.randperm(len(configs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = max(1, round(valid_fraction * len(configs)))
    if n_valid >= len(configs):
        raise DataError(f"{len(configs)} configurations are too few to split off a validation set")
    return [configs[i] for i in order[n_valid:]], [configs[i] for i in order[:n_valid]]


def batch_of(configs: Sequence[Configuration], dtype: torch.dtype, device: torch.device | str) -> AtomicGraph:
    """The configurations' labelled graphs joined into one, on ``device`` in ``dtype``."""
    return collate([c.graph for c in configs]).to(device, dtype)
