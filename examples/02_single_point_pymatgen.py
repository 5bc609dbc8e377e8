"""Energy, forces and stress of a pymatgen Structure (converted to ASE Atoms).

Run:  python examples/02_single_point_pymatgen.py
"""

from ase import units
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from facet_calc import FacetCalculator

# rock-salt MgO, conventional cell (8 atoms)
structure = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
atoms = AseAtomsAdaptor.get_atoms(structure)
atoms.calc = FacetCalculator()  # the default potential, 7net-0-spline, float32 on the CPU

print(f"{structure.composition.reduced_formula}: {len(atoms)} atoms")
print(f"energy      {atoms.get_potential_energy():.4f} eV")
print(f"max |force| {abs(atoms.get_forces()).max():.2e} eV/A (zero by symmetry)")
print(f"pressure    {-atoms.get_stress()[:3].mean() / units.GPa:.2f} GPa")
