"""Relax a perturbed, strained silicon crystal (positions and cell) back to its minimum.

Run:  python examples/03_relax.py
"""

import numpy as np
from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.workflows import relax

atoms = bulk("Si", "diamond", a=5.43, cubic=True)
atoms.set_cell(atoms.cell.array * 1.04, scale_atoms=True)  # 4 % too large
atoms.rattle(stdev=0.1, seed=1)

result = relax(atoms, FacetCalculator(dtype="float64"), fmax=0.005, optimizer="FIRE")
a = np.cbrt(result.atoms.get_volume())
print(f"converged in {result.n_steps} steps: {result.converged}")
print(f"lattice constant {a:.4f} A (PBE: about 5.47 A; experiment: 5.431 A)")
print(f"max force {result.max_force_ev_per_a:.1e} eV/A, max stress {result.max_stress_gpa:.1e} GPa")
result.atoms.write("si_relaxed.extxyz")
