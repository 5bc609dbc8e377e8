"""Relaxation of positions (and the cell) with an ASE optimizer and FrechetCellFilter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS

from ._common import as_atoms, progress_bar, resolve_calculator

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}


@dataclass
class RelaxResult:
    """Outcome of :func:`relax`.

    Attributes:
        atoms: the relaxed structure (a new object; the input is untouched).
        energy_ev: final energy (eV).
        max_force_ev_per_a: largest remaining force component norm (eV/A).
        max_stress_gpa: largest remaining stress component (GPa; 0 when the cell was fixed).
        n_steps: optimizer steps taken.
        converged: whether ``fmax`` was reached within ``max_steps``.
    """

    atoms: Atoms
    energy_ev: float
    max_force_ev_per_a: float
    max_stress_gpa: float
    n_steps: int
    converged: bool


def relax(
    structure: Any,
    calculator: Calculator | None = None,
    fmax: float = 0.01,
    relax_cell: bool = True,
    optimizer: str = "FIRE",
    max_steps: int = 1000,
    trajectory: str | None = None,
    progress: bool = True,
) -> RelaxResult:
    """Relax positions, and the cell when ``relax_cell``, until forces are below ``fmax`` (eV/A;
    for the cell, the filter's generalised forces include stress times volume)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    atoms = as_atoms(structure)
    atoms.calc = resolve_calculator(calculator)
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = OPTIMIZERS[optimizer](target, trajectory=trajectory, logfile=None)
    bar = progress_bar(max_steps, "relax", progress)
    opt.attach(lambda: bar.update(1))
    converged = bool(opt.run(fmax=fmax, steps=max_steps))
    bar.close()
    forces = atoms.get_forces()
    stress = atoms.get_stress() if relax_cell else np.zeros(6)
    return RelaxResult(
        atoms=atoms,
        energy_ev=float(atoms.get_potential_energy()),
        max_force_ev_per_a=float(np.linalg.norm(forces, axis=1).max()) if len(atoms) else 0.0,
        max_stress_gpa=float(np.abs(stress).max() / units.GPa),
        n_steps=int(opt.get_number_of_steps()),
        converged=converged,
    )
