"""Phonon band structure and DOS of silicon with phonopy (float64), saved as PNG.

Run:  python examples/06_phonons.py   (writes si_phonons.png)
"""

from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.workflows import phonons, relax

calc = FacetCalculator(dtype="float64")  # float64 for finite displacements
primitive = relax(bulk("Si", "diamond", a=5.43), calc, fmax=1e-4, progress=False).atoms
result = phonons(primitive, calc, supercell=(3, 3, 3), mesh=(12, 12, 12))
result.plot("si_phonons.png")
print("frequencies at Gamma (THz):", " ".join(f"{f:.3f}" for f in result.gamma_frequencies_thz))
print(f"lowest frequency anywhere: {result.min_frequency_thz:.3f} THz; imaginary modes: {result.has_imaginary_modes()}")
print("wrote si_phonons.png")
