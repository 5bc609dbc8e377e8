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
        max_stresses_gpa: (n_steps + 1,) largest stress component per step (GPa), when the
            cell relaxed; else ``None``.
        interrupted: True when the run was stopped early (Ctrl-C); ``atoms`` and the series
            hold the last completed step.
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
    max_stresses_gpa: np.ndarray | None = None
    interrupted: bool = False

    def plot(self, filename: str) -> Figure:
        """Energy, largest force and (for a cell relaxation) largest stress component against
        optimizer step, as PNG."""
        # a Figure, not pyplot: the user's backend and open figures stay as they were
        from matplotlib.figure import Figure

        with_stress = self.max_stresses_gpa is not None
        fig = Figure(figsize=(6, 7 if with_stress else 5))
        axes = fig.subplots(3 if with_stress else 2, 1, sharex=True)
        steps = np.arange(len(self.energies_ev))
        axes[0].plot(steps, self.energies_ev)
        axes[0].set_ylabel("energy (eV)")
        axes[1].semilogy(steps, self.max_forces_ev_per_a)
        axes[1].set_ylabel("largest force (eV/Å)")
        if with_stress:
            axes[2].semilogy(steps, np.maximum(self.max_stresses_gpa, 1e-6))  # an exact 0 has no log
            axes[2].set_ylabel("largest |stress| (GPa)")
        axes[-1].set_xlabel("optimizer step")
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

    The progress bar counts steps and shows the largest (for the cell, generalised) force
    against ``fmax`` (``max_steps`` is a limit, not a forecast). A ``KeyboardInterrupt``
    (Ctrl-C) stops the run after the current step and returns what was done, with
    ``interrupted=True``, the trajectory closed.
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
    # no total: a relaxation stops at fmax, mostly long before max_steps, so a bar to max_steps
    # would show "/1000" and an ETA of minutes for a run of seconds
    bar = progress_bar(None, "relax", progress, unit="step")
    history = []  # (energy, largest force, largest stress or None) after each step
    last = {}  # the structure of the last completed step

    def record():
        forces = atoms.get_forces()
        largest = float(np.linalg.norm(forces, axis=1).max()) if len(atoms) else 0.0
        stress = float(np.abs(atoms.get_stress()).max() / units.GPa) if relax_cell else None
        history.append((float(atoms.get_potential_energy()), largest, stress))
        last.update(positions=atoms.positions.copy(), cell=atoms.cell.array.copy())
        # what fmax is compared with: the filter's forces include the cell's (stress x volume)
        now = float(np.linalg.norm(target.get_forces(), axis=1).max()) if len(atoms) else 0.0
        bar.set_postfix_str(f"fmax {now:.3g} -> {fmax:g} eV/Å", refresh=False)
        if len(history) > 1:  # ASE calls observers once before the first step
            bar.update(1)

    opt.attach(record)
    interrupted = converged = False
    try:
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        opt.close()  # flush and close the trajectory, interrupted or not
    if interrupted and last:  # a step may have been cut short: keep the last completed one
        atoms.set_cell(last["cell"])
        atoms.positions = last["positions"]
    energy, largest, stress = history[-1] if history else (float(atoms.get_potential_energy()), 0.0, None)
    return RelaxResult(
        atoms=atoms,
        energy_ev=energy,
        max_force_ev_per_a=largest,
        max_stress_gpa=stress if stress is not None else 0.0,
        n_steps=max(len(history) - 1, 0),
        converged=converged,
        energies_ev=np.array([h[0] for h in history]),
        max_forces_ev_per_a=np.array([h[1] for h in history]),
        cell_relaxed=relax_cell,
        max_stresses_gpa=np.array([h[2] for h in history]) if relax_cell else None,
        interrupted=interrupted,
    )
