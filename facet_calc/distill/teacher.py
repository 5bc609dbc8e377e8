"""The teacher: a potential (name or folder) or any ASE calculator, and its labels.

:func:`label` evaluates one structure and returns it with the teacher's energy, forces, stress
(periodic cells) and per-atom energies (when the teacher gives them: FacetCalculator and EMT
do) stored under :data:`KEYS`, or the reason it was dropped (an exception, a NaN, or forces above
:data:`MAX_FORCE`: a teacher that "explodes").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..train.data import LabelKeys

#: where the labels live in the recorded frames (extxyz info and arrays keys)
KEYS = LabelKeys(energy="teacher_energy", forces="teacher_forces", stress="teacher_stress", energies="teacher_energies")
#: a frame whose largest teacher force exceeds this (eV/A) is an explosion, not data
MAX_FORCE = 50.0


class DistillError(ValueError):
    """Input that distillation cannot use; the message names the problem and the fix."""


@dataclass
class Teacher:
    """``calc``: the ASE calculator; ``name``: how the run records it; ``elements``: the atomic
    numbers it knows (None: not declared, e.g. a plain ASE calculator); ``cutoff`` (A) when known."""

    calc: Calculator
    name: str
    elements: list[int] | None = None
    cutoff: float | None = None

    @property
    def per_atom_energies(self) -> bool:
        return "energies" in getattr(self.calc, "implemented_properties", [])


def resolve_teacher(teacher: Any, device: str = "cpu") -> Teacher:
    """A :class:`Teacher` from a potential name or folder (loaded as a FacetCalculator in
    float32) or an ASE calculator (used as it is)."""
    if isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, (str, Path)):
        from ..calculator import FacetCalculator

        calc = FacetCalculator(teacher, device=device, dtype="float32")
        return Teacher(calc, str(teacher), calc.potential.atomic_numbers, calc.potential.cutoff)
    if isinstance(teacher, Calculator) or hasattr(teacher, "get_potential_energy") or hasattr(teacher, "calculate"):
        potential = getattr(teacher, "potential", None)
        if potential is not None and hasattr(potential, "atomic_numbers"):
            return Teacher(teacher, f"{type(teacher).__name__}({potential.name})", potential.atomic_numbers,
                           potential.cutoff)  # fmt: skip
        return Teacher(teacher, type(teacher).__name__)
    raise DistillError(
        f"teacher must be a potential name, a potential folder or an ASE calculator, got {type(teacher).__name__}"
    )


def label(atoms: Atoms, teacher: Teacher) -> tuple[Atoms | None, str | None]:
    """``(labelled copy, None)``, or ``(None, reason)`` when the teacher failed on it."""
    probe = atoms.copy()
    probe.calc = teacher.calc
    try:
        energy = probe.get_potential_energy()
        forces = probe.get_forces()
        stress = probe.get_stress() if probe.cell.rank == 3 and probe.pbc.all() else None
        energies = probe.get_potential_energies() if teacher.per_atom_energies else None
    except Exception as err:  # a teacher may raise anything on a bad structure: count it, go on
        return None, f"teacher raised {type(err).__name__}: {str(err)[:200]}"
    return labelled(atoms, energy, forces, stress, energies)


def labelled(atoms: Atoms, energy, forces, stress=None, energies=None) -> tuple[Atoms | None, str | None]:
    """``atoms`` (a copy, no calculator) with the labels under :data:`KEYS`, or the reason
    they are unusable (not finite, or an explosion)."""
    values = [np.asarray(energy, dtype=float), np.asarray(forces, dtype=float)]
    values += [np.asarray(v, dtype=float) for v in (stress, energies) if v is not None]
    if not all(np.all(np.isfinite(v)) for v in values):
        return None, "teacher returned NaN or infinite values"
    fmax = float(np.linalg.norm(forces, axis=1).max()) if len(atoms) else 0.0
    if fmax > MAX_FORCE:
        return None, f"teacher force {fmax:.3g} eV/A above {MAX_FORCE} eV/A (an explosion)"
    out = atoms.copy()
    out.calc = None
    out.info[KEYS.energy] = float(energy)
    out.arrays[KEYS.forces] = np.array(forces, dtype=float)
    if stress is not None:
        out.info[KEYS.stress] = np.array(stress, dtype=float)
    if energies is not None:
        out.arrays[KEYS.energies] = np.array(energies, dtype=float)
    out.arrays.pop("momenta", None)  # an MD leftover, not a label
    return out, None
