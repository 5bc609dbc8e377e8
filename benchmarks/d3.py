"""D3 dispersion: which torch implementation, how right, and what it costs next to the model.

    python benchmarks/d3.py            # needs: pip install ".[test]" tad-dftd3 "torch==2.13.0"

1. Accuracy and time of each candidate against the reference, simple-dftd3 (the ``dftd3``
   wheel, Fortran), D3(BJ)-PBE two-body, same cutoffs (60 / 40 bohr):
   ``facet_calc.dispersion`` (torch-dftd's pair energies on the vesin neighbour list),
   torch-dftd's own ``TorchDFTD3Calculator`` (its pymatgen neighbour list), and tad-dftd3
   (molecules only: it has no periodic boundary conditions).
2. Cost of D3 against the model's, energy + forces + stress, on crystals of growing size.
3. Graphite's c with and without D3 (the reason to have it).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.filters import FrechetCellFilter
from ase.lattice.hexagonal import Graphite
from ase.optimize import BFGS
from ase.units import Bohr, Hartree

from facet_calc import FacetCalculator
from facet_calc.dispersion import D3Dispersion

warnings.filterwarnings("ignore")


def timed(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, 1e3 * min(times)


def reference(atoms):
    from dftd3.interface import DispersionModel, RationalDampingParam

    model = DispersionModel(atoms.numbers, atoms.positions / Bohr, atoms.cell.array / Bohr, atoms.pbc)
    model.set_realspace_cutoff(60.0, 40.0, 40.0)
    result = model.get_dispersion(RationalDampingParam(method="pbe", atm=False), grad=True)
    return result["energy"] * Hartree, -result["gradient"] * Hartree / Bohr


def torch_dftd_own(atoms):
    from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

    a = atoms.copy()
    a.calc = TorchDFTD3Calculator(damping="bj", xc="pbe", dtype=torch.float64, cutoff=60 * Bohr, cnthr=40 * Bohr)
    return a.get_potential_energy(), a.get_forces()


def tad(atoms):
    import tad_dftd3

    if atoms.pbc.any():
        return None
    numbers = torch.as_tensor(atoms.numbers)
    positions = torch.as_tensor(atoms.positions / Bohr).requires_grad_(True)
    f64 = dict(dtype=torch.float64)
    param = {"s6": 1.0, "s8": 0.7875, "a1": 0.4289, "a2": 4.4407, "s9": 0.0}  # PBE D3(BJ), no ATM
    energy = tad_dftd3.dftd3(numbers, positions, {k: torch.tensor(v, **f64) for k, v in param.items()}).sum()
    (grad,) = torch.autograd.grad(energy, positions)
    return energy.item() * Hartree, -grad.numpy() * Hartree / Bohr


def ours(atoms):
    out = D3Dispersion()(atoms)
    return out["energy"], out["forces"]


def systems():
    slab = fcc111("Cu", (2, 2, 3), vacuum=7.5)
    add_adsorbate(slab, "O", 1.5, "fcc")
    tri = Atoms(
        "SiO2",
        scaled_positions=[[0.1, 0.2, 0.3], [0.4, 0.45, 0.6], [0.7, 0.9, 0.85]],
        cell=[[4.1, 0.3, 0.2], [1.2, 4.4, -0.3], [0.7, -0.9, 5.0]],
        pbc=True,
    )
    return {
        "C60 (molecule)": molecule("C60"),
        "graphite (4 atoms)": Graphite("C", latticeconstant={"a": 2.46, "c": 6.7}),
        "Cu(111) slab + O": slab,
        "triclinic SiO2": tri,
    }


def main() -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    print("\n1. against simple-dftd3 (max |dE|/atom eV, max |dF| eV/A, best of 3 ms)")
    for name, atoms in systems().items():
        (e0, f0), t0 = timed(lambda a=atoms: reference(a))
        print(f"  {name}: simple-dftd3 {t0:.1f} ms")
        for label, fn in (
            ("facet_calc (torch-dftd + vesin)", ours),
            ("torch-dftd calculator", torch_dftd_own),
            ("tad-dftd3", tad),
        ):
            if fn is tad and atoms.pbc.any():
                print(f"    {label}: no periodic boundary conditions")
                continue
            (e, f), t = timed(lambda a=atoms, fn=fn: fn(a), repeats=1 if fn is torch_dftd_own else 3)
            print(f"    {label}: dE {abs(e - e0) / len(atoms):.1e}  dF {np.abs(f - f0).max():.1e}  {t:.1f} ms")

    print("\n2. cost per step (energy+forces+stress) against the model, float32 model, float64 D3")
    for reps in (1, 2, 3):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
        atoms.rattle(0.05, seed=0)
        model = FacetCalculator("7net-0-spline")
        both = FacetCalculator("7net-0-spline", dispersion="d3")

        rng = np.random.default_rng(0)

        def step(calc, a=atoms, rng=rng):
            a = a.copy()
            a.positions += rng.normal(scale=1e-3, size=a.positions.shape)  # nothing cached
            a.calc = calc
            a.get_forces()
            return a.get_stress()

        _, t_model = timed(lambda model=model: step(model))
        _, t_both = timed(lambda both=both: step(both))
        print(
            f"  Si {len(atoms):4d} atoms: model {t_model:7.1f} ms, model + D3 {t_both:7.1f} ms "
            f"({t_both / t_model:.2f}x)"
        )

    print("\n3. graphite c after relaxing positions and cell (experiment: 6.70 A)")
    for dispersion in (None, "d3"):
        atoms = Graphite("C", latticeconstant={"a": 2.46, "c": 7.0})
        atoms.calc = FacetCalculator("7net-0-spline", dtype="float64", dispersion=dispersion)
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=300)
        print(f"  dispersion={dispersion}: a = {atoms.cell.cellpar()[0]:.3f} A, c = {atoms.cell.cellpar()[2]:.3f} A")


if __name__ == "__main__":
    main()
