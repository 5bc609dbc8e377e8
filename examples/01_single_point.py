"""Energy, forces and stress of a rattled silicon crystal with the default potential.

Run:  python examples/01_single_point.py
"""

from ase import units
from ase.build import bulk

from facet_calc import FacetCalculator

atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms
atoms.rattle(stdev=0.05, seed=0)
atoms.calc = FacetCalculator("7net-0-spline", device="auto")  # dtype="float64" for phonons

energy = atoms.get_potential_energy()  # eV
forces = atoms.get_forces()  # eV/A, shape (64, 3)
stress = atoms.get_stress()  # eV/A^3, Voigt order xx yy zz yz xz xy

print(f"energy          {energy:.4f} eV ({energy / len(atoms):.4f} eV/atom)")
print(f"max |force|     {abs(forces).max():.4f} eV/A")
print(f"pressure        {-stress[:3].mean() / units.GPa:.3f} GPa")
