"""NVT (Langevin) molecular dynamics of silicon at 600 K, with a trajectory and a plot.

Run:  python examples/04_md_nvt.py   (writes si_nvt.traj and si_nvt.png)
"""

from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.workflows import run_md

atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms
result = run_md(
    atoms,
    FacetCalculator(),  # float32 is fine for MD
    ensemble="nvt",
    temperature_k=600,
    timestep_fs=2.0,
    steps=200,
    friction_per_fs=0.02,
    log_interval=5,
    trajectory="si_nvt.traj",
)
result.plot("si_nvt.png")
late = result.temperature_k[len(result.temperature_k) // 2 :]
print(f"mean temperature over the second half: {late.mean():.0f} K (target 600 K)")
print("wrote si_nvt.traj and si_nvt.png")
