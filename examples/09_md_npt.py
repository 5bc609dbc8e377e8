"""NPT molecular dynamics (Berendsen thermostat and barostat) of copper at 300 K and 0 GPa.

Run:  python examples/09_md_npt.py
"""

from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.workflows import run_md

atoms = bulk("Cu", "fcc", a=3.70, cubic=True).repeat(2)  # 32 atoms, started 2.5 % too large
result = run_md(atoms, FacetCalculator(), ensemble="npt", temperature_k=300, pressure_gpa=0.0,
                timestep_fs=2.0, steps=200, log_interval=5)  # fmt: skip
v0, v1 = result.volume_a3[0], result.volume_a3[-10:].mean()
print(f"volume per atom: {v0 / len(atoms):.3f} -> {v1 / len(atoms):.3f} A^3 (PBE equilibrium about 12.0)")
print(f"mean temperature over the run: {result.temperature_k.mean():.0f} K")
