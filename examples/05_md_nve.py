"""NVE molecular dynamics: total energy is conserved (float64, 1 fs steps).

Run:  python examples/05_md_nve.py
"""

from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.workflows import run_md

atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms
result = run_md(atoms, FacetCalculator(dtype="float64"), ensemble="nve", temperature_k=300,
                timestep_fs=1.0, steps=250, log_interval=5)  # fmt: skip
drift = result.energy_drift_ev_per_atom()
spread = (result.total_energy_ev.max() - result.total_energy_ev.min()) / len(atoms)
print(f"potential energy fluctuates by {result.potential_energy_ev.std():.3f} eV")
print(f"total energy drift over {result.time_fs[-1]:.0f} fs: {drift * 1e3:+.4f} meV/atom")
print(f"total energy spread: {spread * 1e3:.4f} meV/atom")
