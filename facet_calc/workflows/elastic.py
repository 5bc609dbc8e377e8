"""Elastic constants from a strain-stress fit (internal positions relaxed at each strain).

Every C_ij comes with the standard error of its regression slope (as matscipy's
``fit_elastic_constants`` reports; its C_ij were checked equal to these to 0.01 GPa for Si)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from ._common import as_atoms, calculate_many, progress_bar, reference_state, resolve_calculator

_VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


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
    relax_first: bool = False,
) -> ElasticResult:
    """Apply ``n_strains`` strains in [-max_strain, max_strain] (zero excluded) along each Voigt
    component, relax the internal positions in the strained cell (``relax_internal``), and fit
    stress against strain. The strains apply to the input as it is: a residual stress or
    force above a small limit gives a ``WorkflowWarning``, and ``relax_first=True`` relaxes cell
    and positions before. Use a float64 calculator (the default when none is given)."""
    atoms0 = as_atoms(structure)
    if atoms0.cell.rank != 3 or not atoms0.pbc.all():
        raise ValueError("elastic constants need a bulk crystal: a cell periodic in all three directions")
    calc = resolve_calculator(calculator, "elastic")
    atoms0 = reference_state(atoms0, calc, "elastic_constants", relax_first)
    strains = np.linspace(-max_strain, max_strain, n_strains + 1)
    strains = strains[np.abs(strains) > 1e-12]
    slopes = np.zeros((6, 6))
    strained = []  # strained cells, component by component, in the order of the fit
    for a, b in _VOIGT:
        for e in strains:
            eps = np.zeros((3, 3))
            if a == b:
                eps[a, a] = e
            else:  # engineering shear strain e: tensor components e/2
                eps[a, b] = eps[b, a] = e / 2
            atoms = atoms0.copy()
            atoms.set_cell(atoms0.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            strained.append(atoms)
    with progress_bar(len(strained), "elastic", progress) as bar:
        if relax_internal and len(atoms0) > 1:
            for atoms in strained:
                atoms.calc = calc
                BFGS(atoms, logfile=None).run(fmax=fmax, steps=200)
                bar.update(1)
            stresses = np.array([atoms.get_stress() for atoms in strained])
        else:  # clamped ions: every strained cell in one batched call
            stresses = np.array([r["stress"] for r in calculate_many(calc, strained, ["stress"])])
            bar.update(len(strained))
    errors = np.zeros((6, 6))
    for j in range(6):
        rows = slice(j * len(strains), (j + 1) * len(strains))
        fit, cov = np.polyfit(strains, stresses[rows], 1, cov="unscaled")
        slopes[:, j] = fit[0]
        # standard error of each slope from the residuals (n - 2 degrees of freedom)
        residual = stresses[rows] - np.outer(strains, fit[0]) - fit[1]
        dof = max(len(strains) - 2, 1)
        errors[:, j] = np.sqrt(cov[0, 0] * (residual**2).sum(axis=0) / dof)
    c_raw = slopes / units.GPa
    c = 0.5 * (c_raw + c_raw.T)
    bulk = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9
    shear = (c[0, 0] + c[1, 1] + c[2, 2] - (c[0, 1] + c[1, 2] + c[0, 2]) + 3 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15
    return ElasticResult(c_gpa=c, c_raw_gpa=c_raw, bulk_modulus_gpa=float(bulk), shear_modulus_gpa=float(shear),
                         c_err_gpa=np.asarray(errors) / units.GPa)  # fmt: skip
