"""Elastic constants from a strain-stress fit (internal positions relaxed at each strain).

The strains, relaxations and the regression are matscipy's ``fit_elastic_constants``: the same
numbers as a hand-written fit (checked: equal to 0.01 GPa for Si), plus an error estimate of
every C_ij from the regression, which a plain fit does not give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from ._common import as_atoms, progress_bar, resolve_calculator


@dataclass
class ElasticResult:
    """Outcome of :func:`elastic_constants`.

    Attributes:
        c_gpa: (6, 6) elastic tensor in Voigt notation (GPa), C_ij = d sigma_i / d epsilon_j
            with engineering shear strains, symmetrised.
        c_raw_gpa: (6, 6) the fitted slopes before symmetrisation.
        bulk_modulus_gpa, shear_modulus_gpa: Voigt averages (GPa).
        c_err_gpa: (6, 6) standard errors of the fitted slopes (GPa; large values mean the
            stress is not linear in the strain over the range: reduce ``max_strain``).
    """

    c_gpa: np.ndarray
    c_raw_gpa: np.ndarray
    bulk_modulus_gpa: float
    shear_modulus_gpa: float
    c_err_gpa: np.ndarray | None = None


def elastic_constants(
    structure: Any,
    calculator: Calculator | None = None,
    max_strain: float = 0.01,
    n_strains: int = 4,
    relax_internal: bool = True,
    fmax: float = 1e-4,
    progress: bool = True,
) -> ElasticResult:
    """Apply ``n_strains + 1`` strains in [-max_strain, max_strain] (zero included) along each Voigt
    component, relax the internal positions in the strained cell (``relax_internal``), and fit
    stress against strain. Use a relaxed structure and, ideally, a float64 calculator (the
    default when none is given)."""
    atoms0 = as_atoms(structure)
    if atoms0.cell.rank != 3 or not atoms0.pbc.all():
        raise ValueError("elastic constants need a bulk crystal: a cell periodic in all three directions")
    from matscipy.elasticity import fit_elastic_constants

    calc = resolve_calculator(calculator, dtype="float64")
    atoms = atoms0.copy()
    atoms.calc = calc
    # n_strains + 1 strains per Voigt component, from -max_strain to max_strain (zero included)
    with progress_bar(1, "elastic", progress) as bar:
        slopes, errors = fit_elastic_constants(
            atoms,
            symmetry="triclinic",  # every component fitted: no assumption about the orientation
            N_steps=n_strains + 1,
            delta=2 * max_strain / n_strains,
            optimizer=BFGS if relax_internal and len(atoms) > 1 else None,
            fmax=fmax,
            steps=200,
            verbose=False,
            graphics=False,
        )
        bar.update(1)
    c_raw = slopes / units.GPa
    c = 0.5 * (c_raw + c_raw.T)
    bulk = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9
    shear = (c[0, 0] + c[1, 1] + c[2, 2] - (c[0, 1] + c[1, 2] + c[0, 2]) + 3 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15
    return ElasticResult(c_gpa=c, c_raw_gpa=c_raw, bulk_modulus_gpa=float(bulk), shear_modulus_gpa=float(shear),
                         c_err_gpa=np.asarray(errors) / units.GPa)  # fmt: skip
