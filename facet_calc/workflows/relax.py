"""Relaxation of positions (and the cell) with an ASE optimizer and FrechetCellFilter."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ._common import (
    WorkflowWarning,
    as_atoms,
    cutoff_of,
    progress_bar,
    resolve_calculator,
    save_figure,
    vacuum_directions,
)

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
        energies_ev, max_forces_ev_per_a: (n_steps + 1,) energy and largest force per step.
        cell_relaxed: whether the cell relaxed (False for a fixed cell, a structure that is not
            periodic in 3D, and a slab or wire with vacuum along a cell vector).
    """

    atoms: Atoms
    energy_ev: float
    max_force_ev_per_a: float
    max_stress_gpa: float
    n_steps: int
    converged: bool
    energies_ev: np.ndarray | None = None
    max_forces_ev_per_a: np.ndarray | None = None
    cell_relaxed: bool = False

    def plot(self, filename: str) -> Figure:
        """Energy and largest force against optimizer step, as PNG."""
        # a Figure, not pyplot: the user's backend and open figures stay as they were
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 5))
        ax_e, ax_f = fig.subplots(2, 1, sharex=True)
        steps = np.arange(len(self.energies_ev))
        ax_e.plot(steps, self.energies_ev)
        ax_e.set_ylabel("energy (eV)")
        ax_f.semilogy(steps, self.max_forces_ev_per_a)
        ax_f.set_ylabel("largest force (eV/A)")
        ax_f.set_xlabel("optimizer step")
        return save_figure(fig, filename)


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
    for the cell, the filter's generalised forces include stress times volume).

    The cell relaxes only for a crystal: a structure not periodic in 3D, or one whose atoms
    leave vacuum wider than the potential's cutoff along a cell vector (a slab or wire read from
    POSCAR or CIF), relaxes positions only, with a :class:`WorkflowWarning` in the second case.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    atoms = as_atoms(structure)
    atoms.calc = resolve_calculator(calculator, "relax")
    if relax_cell and (atoms.cell.rank != 3 or not atoms.pbc.all()):
        relax_cell = False  # no volume or no periodicity to relax against
    elif relax_cell and (gaps := vacuum_directions(atoms, cutoff_of(atoms.calc))):
        # a slab's in-plane lattice is the bulk's; relaxed, the surface stress would shrink it
        # (3x3 Cu(111), 4 layers, fmax 0.05: 7.658 -> 7.558 A), and the vacuum would collapse
        warnings.warn(f"relax: vacuum along cell vector(s) {gaps} (a gap wider than the cutoff, "
                      f"{cutoff_of(atoms.calc):.1f} A): a slab or wire, so the positions relax and the "
                      "cell stays as it is", WorkflowWarning, stacklevel=2)  # fmt: skip
        relax_cell = False
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = OPTIMIZERS[optimizer](target, trajectory=trajectory, logfile=None)
    bar = progress_bar(max_steps, "relax", progress)
    history = []

    def record():
        forces = atoms.get_forces()
        history.append((atoms.get_potential_energy(), np.linalg.norm(forces, axis=1).max() if len(atoms) else 0.0))
        if len(history) > 1:  # ASE calls observers once before the first step
            bar.update(1)

    opt.attach(record)
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
        energies_ev=np.array([e for e, _ in history]),
        max_forces_ev_per_a=np.array([f for _, f in history]),
        cell_relaxed=relax_cell,
    )
