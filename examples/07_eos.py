"""Equation of state of aluminium: equilibrium volume and bulk modulus, with a plot.

Run:  python examples/07_eos.py   (writes al_eos.png)
"""

from ase.build import bulk
from ase.collections import dcdft

from facet_calc import FacetCalculator
from facet_calc.workflows import eos

result = eos(bulk("Al", "fcc", a=4.04, cubic=True), FacetCalculator(dtype="float64"), max_strain=0.06)
result.plot("al_eos.png")
ref = dcdft.data["Al"]  # all-electron PBE (WIEN2k), shipped with ASE
print(f"V0 = {result.v0_per_atom_a3:.3f} A^3/atom (PBE all-electron {ref['wien2k_volume']:.3f})")
print(f"B0 = {result.b0_gpa:.1f} GPa (PBE all-electron {ref['wien2k_B']:.1f})")
print("wrote al_eos.png")
