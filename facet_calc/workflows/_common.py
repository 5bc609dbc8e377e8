"""Shared plumbing of the workflows: input coercion, calculator choice, progress bars."""

from __future__ import annotations

from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator


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


def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar (a no-op object when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False)


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
