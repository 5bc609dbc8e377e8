"""Shared plumbing of the workflows: input coercion, calculator choice, progress bars."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

#: a gap in the atoms' extent along a cell vector wider than this (A) counts as vacuum when the
#: calculator does not say its cutoff (every shipped potential's cutoff is 5.0 A)
DEFAULT_VACUUM_GAP_A = 5.0
#: above these a structure counts as unrelaxed for elastic, eos and phonons: the residual
#: stress of NaCl at -0.70 GPa moved C11 by 14 % (56.3 vs 49.4 GPa relaxed)
UNRELAXED_STRESS_GPA = 0.05
UNRELAXED_FORCE_EV_PER_A = 0.01
#: fmax (eV/A; for the cell, stress times volume) of the relaxation that ``relax_first`` runs
RELAX_FIRST_FMAX = 1e-3


class WorkflowWarning(UserWarning):
    """A workflow ran, but on an input or with settings that likely change its answer."""


def as_atoms(structure: Any) -> Atoms:
    """A copy of ``structure`` as ASE Atoms (accepts ASE Atoms or a pymatgen Structure/Molecule).

    The caller's object is never modified.
    """
    if isinstance(structure, Atoms):
        atoms = structure.copy()
        atoms.calc = None
        return atoms
    module = type(structure).__module__
    if module.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise TypeError(
        f"expected ase.Atoms or a pymatgen Structure, got {type(structure).__name__}; "
        "read files with ase.io.read() first"
    )


def resolve_calculator(calculator: Calculator | None, job: str) -> Calculator:
    """The given calculator, or a FacetCalculator with the default potential in the ``job``'s
    default dtype (:data:`facet_calc.options.JOB_DTYPES`) on the default device."""
    if calculator is not None:
        return calculator
    from ..calculator import FacetCalculator
    from ..options import job_dtype

    return FacetCalculator(dtype=job_dtype(job))


def progress_bar(total: int | None, description: str, enabled: bool, unit: str = "it"):
    """A tqdm bar (a no-op object when disabled); ``total=None``: a counter without an ETA."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, unit=unit)


def calculate_many(calculator: Calculator, images: list[Atoms], properties: list[str]) -> list[dict]:
    """Results of ``properties`` for each of ``images``: in batched graphs when the calculator
    offers ``calculate_many`` (FacetCalculator), else one ASE call per structure."""
    if hasattr(calculator, "calculate_many"):
        return calculator.calculate_many(images, properties)
    results = []
    for atoms in images:
        atoms = atoms.copy()
        atoms.calc = calculator
        results.append({name: atoms.calc.get_property(name, atoms) for name in properties})
    return results


def cutoff_of(calculator: Calculator) -> float:
    """The interaction cutoff of ``calculator`` (A), or :data:`DEFAULT_VACUUM_GAP_A` if unknown."""
    potential = getattr(calculator, "potential", None)
    cutoff = getattr(potential, "cutoff", None)
    return float(cutoff) if cutoff else DEFAULT_VACUUM_GAP_A


def vacuum_directions(atoms: Atoms, min_gap_a: float) -> list[int]:
    """Indices of the cell vectors along which the atoms leave an empty gap wider than
    ``min_gap_a`` (A), measured between lattice planes, periodic images included: a slab's or
    a wire's vacuum in a cell periodic in 3D."""
    if len(atoms) == 0 or atoms.cell.rank != 3:
        return []
    found = []
    scaled = atoms.get_scaled_positions(wrap=True)
    plane_spacing = 1.0 / np.linalg.norm(atoms.cell.reciprocal(), axis=1)  # A per unit of scaled coordinate
    for i in range(3):
        s = np.sort(scaled[:, i])
        gaps = np.diff(np.append(s, s[0] + 1.0))  # the last gap wraps into the next image
        if gaps.max() * plane_spacing[i] > min_gap_a:
            found.append(i)
    return found


def reference_state(atoms: Atoms, calculator: Calculator, job: str, relax_first: bool) -> Atoms:
    """``atoms`` relaxed (cell and positions, to :data:`RELAX_FIRST_FMAX`) when ``relax_first``;
    otherwise ``atoms`` itself, with a :class:`WorkflowWarning` naming the residual stress and
    force when they are large enough to change ``job``'s result."""
    if relax_first:
        from .relax import relax

        relaxed = relax(atoms, calculator, fmax=RELAX_FIRST_FMAX, relax_cell=True, progress=False)
        if not relaxed.converged:
            left = f"{relaxed.max_force_ev_per_a:.4f} eV/A"
            warnings.warn(f"{job}: relax_first did not reach fmax={RELAX_FIRST_FMAX} eV/A; the largest force left "
                          f"is {left}", WorkflowWarning, stacklevel=3)  # fmt: skip
        relaxed.atoms.calc = None
        return relaxed.atoms
    result = calculate_many(calculator, [atoms], ["forces", "stress"])[0]
    stress_gpa = np.asarray(result["stress"]) / units.GPa
    worst = int(np.argmax(np.abs(stress_gpa)))
    max_force = float(np.linalg.norm(result["forces"], axis=1).max()) if len(atoms) else 0.0
    if abs(stress_gpa[worst]) > UNRELAXED_STRESS_GPA or max_force > UNRELAXED_FORCE_EV_PER_A:
        component = ("xx", "yy", "zz", "yz", "xz", "xy")[worst]
        warnings.warn(
            f"{job}: the structure is not relaxed for this potential (residual stress "
            f"{stress_gpa[worst]:+.2f} GPa in {component}, largest force {max_force:.3f} eV/A; limits "
            f"{UNRELAXED_STRESS_GPA} GPa and {UNRELAXED_FORCE_EV_PER_A} eV/A), so the result belongs to a "
            f"strained state; pass relax_first=True or relax it first",
            WorkflowWarning,
            stacklevel=3,
        )
    return atoms


def save_figure(fig, filename, dpi: int = 120):
    """Lay out ``fig``, write it to ``filename`` and return it."""
    fig.tight_layout()
    fig.savefig(filename, dpi=dpi)
    return fig
