"""Elastic constants of silicon from a strain-stress fit (float64).

Run:  python examples/08_elastic.py
"""

import numpy as np
from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.workflows import elastic_constants, relax

calc = FacetCalculator(dtype="float64")
crystal = relax(bulk("Si", "diamond", a=5.43, cubic=True), calc, fmax=1e-4, progress=False).atoms
result = elastic_constants(crystal, calc, max_strain=0.01)
np.set_printoptions(precision=1, suppress=True)
print("C (GPa, Voigt):")
print(result.c_gpa)
c = result.c_gpa
print(f"C11 = {c[0, 0]:.1f}, C12 = {c[0, 1]:.1f}, C44 = {c[3, 3]:.1f} GPa (PBE: about 153, 57, 75)")
print(f"bulk modulus {result.bulk_modulus_gpa:.1f} GPa, shear modulus {result.shear_modulus_gpa:.1f} GPa")
