"""Labelled structures for training: read, checked, turned into graphs once, batched.

A configuration's labels come from the calculator results attached to it (what ASE writes
into extxyz files) or from the info/arrays keys the user names (``REF_energy``,
``REF_forces``, ``REF_stress``, as MACE and janus-core call them). Units: eV, eV/A, eV/A^3
with ASE's sign (tensile positive), Voigt-6 or 3x3. Bad data is refused with a message naming
the configuration and the problem; nothing is trained on silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from ..graph import build_graph


class DataError(ValueError):
    """Training data that cannot be used: the message names the configuration and the fix."""


@dataclass(frozen=True)
class LabelKeys:
    """Where the labels are. ``None`` means the attached calculator results (``atoms.calc``)."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    weight: str = "config_weight"


@dataclass
class Configuration:
    """One labelled structure with its graph (float64 on the CPU; batches are cast).

    Attributes: ``species (n,)`` int64 model species indices; ``numbers (n,)`` atomic numbers;
    ``edge_vec (E, 3)`` A; ``senders``/``receivers (E,)``; ``energy`` eV; ``forces (n, 3)``
    eV/A or ``None``; ``stress (3, 3)`` eV/A^3 (ASE sign) or ``None``; ``volume`` A^3 or
    ``None``; ``weight`` of the configuration in the loss; ``name`` for messages.
    """

    name: str
    species: torch.Tensor
    numbers: np.ndarray
    edge_vec: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    energy: float
    forces: torch.Tensor | None
    stress: torch.Tensor | None
    volume: float | None
    weight: float = 1.0

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])


@dataclass
class Batch:
    """Configurations joined into one disjoint graph, on a device and in a dtype."""

    species: torch.Tensor
    edge_vec: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    batch: torch.Tensor  # (n_atoms,) structure index
    n_atoms: torch.Tensor  # (n_structures,)
    energy: torch.Tensor  # (n_structures,)
    forces: torch.Tensor  # (n_atoms, 3); rows of structures without forces are masked out
    force_mask: torch.Tensor  # (n_atoms,) bool
    stress: torch.Tensor  # (n_structures, 3, 3)
    stress_mask: torch.Tensor  # (n_structures,) bool
    volume: torch.Tensor  # (n_structures,) (1 where there is no cell)
    weight: torch.Tensor  # (n_structures,)
    names: list[str] = field(default_factory=list)

    @property
    def n_structures(self) -> int:
        return int(self.energy.shape[0])


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
    species_of_z: dict[int, int],
    cutoff: float,
    keys: LabelKeys | None = None,
    use_stress: bool = True,
) -> Configuration:
    """Check one labelled structure and build its graph; :class:`DataError` if it is unusable."""
    keys = keys or LabelKeys()
    numbers = atoms.numbers
    if len(atoms) == 0:
        raise DataError(f"{name}: the configuration has no atoms")
    unknown = sorted({int(z) for z in numbers if int(z) not in species_of_z})
    if unknown:
        raise DataError(
            f"{name}: element(s) {', '.join(chemical_symbols[z] for z in unknown)} are not in the "
            "potential; remove these configurations or start from a potential that has them"
        )
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
    volume = None
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
        volume = float(atoms.get_volume())
    weight = float(atoms.info.get(keys.weight, 1.0))
    if not np.isfinite(weight) or weight < 0:
        raise DataError(f"{name}: weight {weight} must be a finite number >= 0")
    try:
        graph = build_graph(atoms, cutoff)
    except ValueError as err:
        raise DataError(f"{name}: {err}") from err
    return Configuration(
        name=name,
        species=torch.tensor([species_of_z[int(z)] for z in numbers], dtype=torch.long),
        numbers=np.array(numbers),
        edge_vec=torch.from_numpy(graph.edge_vectors),
        senders=torch.from_numpy(graph.senders),
        receivers=torch.from_numpy(graph.receivers),
        energy=energy,
        forces=None if forces is None else torch.from_numpy(forces),
        stress=None if stress is None else torch.from_numpy(stress),
        volume=volume,
        weight=weight,
    )


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
    species_of_z = {int(z): i for i, z in enumerate(atomic_numbers)}
    return [
        configuration_from_atoms(atoms, f"{label}[{i}]", species_of_z, cutoff, keys, use_stress)
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


def collate(configs: Sequence[Configuration], dtype: torch.dtype, device: torch.device | str) -> Batch:
    """Join configurations into one graph (atom indices offset per structure)."""
    offsets = np.cumsum([0] + [c.n_atoms for c in configs[:-1]])
    n_atoms = torch.tensor([c.n_atoms for c in configs])

    def cat(items):
        return torch.cat(items).to(device)

    forces = [c.forces if c.forces is not None else torch.zeros(c.n_atoms, 3) for c in configs]
    stress = [c.stress if c.stress is not None else torch.zeros(3, 3) for c in configs]
    return Batch(
        species=cat([c.species for c in configs]),
        edge_vec=cat([c.edge_vec for c in configs]).to(dtype),
        senders=cat([c.senders + int(o) for c, o in zip(configs, offsets)]),
        receivers=cat([c.receivers + int(o) for c, o in zip(configs, offsets)]),
        batch=torch.repeat_interleave(torch.arange(len(configs)), n_atoms).to(device),
        n_atoms=n_atoms.to(device),
        energy=torch.tensor([c.energy for c in configs], dtype=dtype, device=device),
        forces=cat(forces).to(dtype),
        force_mask=cat([torch.full((c.n_atoms,), c.forces is not None) for c in configs]),
        stress=torch.stack(stress).to(device=device, dtype=dtype),
        stress_mask=torch.tensor([c.stress is not None for c in configs], device=device),
        volume=torch.tensor([c.volume or 1.0 for c in configs], dtype=dtype, device=device),
        weight=torch.tensor([c.weight for c in configs], dtype=dtype, device=device),
        names=[c.name for c in configs],
    )
