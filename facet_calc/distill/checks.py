"""The seed structures checked before anything runs: elements the teacher knows, finite
positions, no overlapping atoms. Each refusal names the structure and the fix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii
from ase.neighborlist import neighbor_list

from .teacher import DistillError, Teacher

#: atoms closer than this fraction of their covalent radii sum overlap (no teacher is trained there)
OVERLAP_FRACTION = 0.5


def check_seeds(seeds: Sequence[Atoms], teacher: Teacher | None, names: Sequence[str] | None = None) -> None:
    """Refuse seeds that cannot be distilled: empty, NaN or infinite positions or cell,
    overlapping atoms, elements ``teacher`` lacks (not checked when ``teacher`` is None, so the
    structure can be checked before a teacher is loaded)."""
    if not seeds:
        raise DistillError("no seed structures given; pass the structures your MD will start from")
    names = list(names) if names is not None else [f"structure {k}" for k in range(len(seeds))]
    for atoms, name in zip(seeds, names):
        if not isinstance(atoms, Atoms):
            raise DistillError(f"{name}: expected ase.Atoms, got {type(atoms).__name__}")
        if len(atoms) < 2:
            raise DistillError(f"{name}: has {len(atoms)} atom(s); MD sampling needs at least 2 (use a supercell)")
        if not np.all(np.isfinite(atoms.positions)):
            raise DistillError(f"{name}: positions contain NaN or infinite values; fix the structure file")
        if not np.all(np.isfinite(atoms.cell.array)):
            raise DistillError(f"{name}: the cell contains NaN or infinite values; fix the structure file")
        if teacher is not None and teacher.elements is not None:
            missing = sorted(set(atoms.numbers.tolist()) - set(teacher.elements))
            if missing:
                symbols = ", ".join(chemical_symbols[z] for z in missing)
                raise DistillError(
                    f"{name}: the teacher {teacher.name} does not know {symbols}; choose a teacher trained on "
                    "every element of the structure, or remove those atoms"
                )
        closest = closest_pair(atoms)
        if closest is not None and closest[0] < OVERLAP_FRACTION:
            fraction, i, j, d = closest
            raise DistillError(
                f"{name}: atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) overlap ({d:.3f} A apart, "
                f"{fraction:.0%} of their covalent radii sum); fix the structure (wrong units or duplicated atoms?)"
            )


def closest_pair(atoms: Atoms) -> tuple[float, int, int, float] | None:
    """The closest pair as ``(distance / covalent radii sum, i, j, distance A)``, periodic images
    included; None when no pair is within 3 A."""
    i, j, d = neighbor_list("ijd", atoms, 3.0, self_interaction=False)
    if len(d) == 0:
        return None
    radii = covalent_radii[atoms.numbers]
    fraction = d / (radii[i] + radii[j])
    k = int(np.argmin(fraction))
    return float(fraction[k]), int(i[k]), int(j[k]), float(d[k])
