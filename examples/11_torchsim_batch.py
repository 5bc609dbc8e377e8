"""Relax, then run MD on, many small crystals at once with torch-sim: all systems share one graph.

Needs the torchsim extra:  pip install "facet_calc[torchsim]"
Run:  python examples/11_torchsim_batch.py

Each step of torch-sim's batched FIRE (with a Frechet cell filter) and Langevin integrator
evaluates every structure in one model call; the relaxed energies are checked against
FacetCalculator structure by structure.
"""

import numpy as np
import torch
import torch_sim as ts
from ase.build import bulk

from facet_calc import FacetCalculator
from facet_calc.torchsim import FacetTorchSimModel

rng = np.random.default_rng(0)
prototypes = [
    bulk("Si", "diamond", a=5.50),
    bulk("Cu", "fcc", a=3.55),
    bulk("NaCl", "rocksalt", a=5.75),
    bulk("MgO", "rocksalt", a=4.30),
    bulk("Al", "fcc", a=4.10),
    bulk("Fe", "bcc", a=2.80),
    bulk("GaAs", "zincblende", a=5.60),
    bulk("W", "bcc", a=3.20),
]
structures = []
for atoms in prototypes:  # each prototype twice: as is and as a rattled, strained supercell
    structures.append(atoms.copy())
    strained = atoms.repeat((2, 1, 1))
    strained.set_cell(strained.cell.array @ (np.eye(3) + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
    strained.rattle(0.05, seed=int(rng.integers(1000)))
    structures.append(strained)

model = FacetTorchSimModel("7net-0-spline", device="cpu", dtype=torch.float32)

# torch-sim 0.3 (Python 3.11) takes optimizer and integrator functions; 0.4 and later take enums
if hasattr(ts, "Optimizer"):  # pragma: no cover - torch-sim >= 0.4
    relax_kwargs = {"optimizer": ts.Optimizer.fire, "init_kwargs": {"cell_filter": ts.CellFilter.frechet}}
    integrator = ts.Integrator.nvt_langevin
else:
    relax_kwargs = {"optimizer": ts.frechet_cell_fire}
    integrator = ts.nvt_langevin

relaxed = ts.optimize(
    system=structures,
    model=model,
    convergence_fn=ts.generate_force_convergence_fn(force_tol=0.05),
    max_steps=300,
    **relax_kwargs,
)
final = model(relaxed)
relaxed_atoms = ts.io.state_to_atoms(relaxed)
calc = FacetCalculator("7net-0-spline", dtype="float32")
print(f"relaxed {len(structures)} structures ({relaxed.n_atoms} atoms) in one batch")
print(f"{'formula':>10} {'atoms':>5} {'E/atom (eV)':>12} {'max |F|':>8} {'V/atom (A^3)':>12} {'ASE check':>10}")
worst = 0.0
for k, atoms in enumerate(relaxed_atoms):
    forces = final["forces"][relaxed.system_idx == k]
    e_ase = calc.get_potential_energy(atoms)
    worst = max(worst, abs(e_ase - final["energy"][k].item()) / len(atoms))
    print(f"{atoms.get_chemical_formula():>10} {len(atoms):5d} {final['energy'][k].item() / len(atoms):12.4f} "
          f"{forces.norm(dim=1).max().item():8.4f} {atoms.get_volume() / len(atoms):12.3f} "
          f"{e_ase / len(atoms):10.4f}")  # fmt: skip
print(f"largest |E(torch-sim) - E(FacetCalculator)| per atom: {worst:.2e} eV")
if worst > 1e-4:
    raise SystemExit("torch-sim and FacetCalculator disagree")

# NVT MD of all relaxed structures at once: 2 fs steps (torch-sim's time unit is the ps)
md = ts.integrate(system=relaxed, model=model, integrator=integrator, n_steps=60, temperature=300.0, timestep=0.002)
kinetic = ts.calc_kinetic_energy(momenta=md.momenta, masses=md.masses, system_idx=md.system_idx)
dof = 3 * torch.bincount(md.system_idx).to(kinetic.dtype)
temperature = 2 * kinetic / dof / 8.617333262e-5
print(f"after 60 Langevin steps at 300 K: T per system {np.round(temperature.numpy(), 0).tolist()} K")
print(f"mean over systems: {temperature.mean().item():.0f} K")
if not torch.isfinite(temperature).all():
    raise SystemExit("MD diverged")
