"""Reusable physics checks with named tolerances, and the structure set used for fidelity.

Each check returns the measured error so that callers (tests, recipes, benchmarks) can report
it; the ``TOL_*`` constants are general bounds for a float64 potential (the test files hold
the shipped potentials to tighter ones, next to their measured errors).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc111, molecule, nanotube
from ase.neighborlist import primitive_neighbor_list

#: Central finite differences vs autograd forces/stress, relative to the largest component.
TOL_FINITE_DIFFERENCE = 1e-6
#: Invariance of energy / equivariance of forces under rotation, translation, permutation,
#: periodic-image shifts, in float64 (absolute, eV and eV/A).
TOL_SYMMETRY = 1e-10
#: A 2x2x2 supercell has 8x the energy (relative).
TOL_EXTENSIVITY = 1e-10


def _rattled(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(stdev=stdev, seed=seed)
    return atoms


def _strained(atoms: Atoms, seed: int, amplitude: float = 0.03) -> Atoms:
    rng = np.random.default_rng(seed)
    eps = rng.uniform(-amplitude, amplitude, (3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def _perovskite(a: float = 3.905) -> Atoms:
    return Atoms(
        "SrTiO3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[a, a, a],
        pbc=True,
    )


def _triclinic(seed: int) -> Atoms:
    """A strongly skewed cell (angles far from 90 degrees) holding a small random oxide."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.2, 0.0, 0.0], [3.1, 3.9, 0.0], [2.6, 1.7, 4.4]])
    for _ in range(10000):
        atoms = Atoms("Li2Fe2O2", scaled_positions=rng.uniform(0, 1, (6, 3)), cell=cell, pbc=True)
        # reject draws where atoms (or their periodic images) come closer than 1.7 A
        i, _j = primitive_neighbor_list("ij", atoms.pbc, atoms.cell.array, atoms.positions, 1.7)
        if len(i) == 0:
            return atoms
    raise RuntimeError("could not place atoms in the triclinic cell")


def fidelity_structures() -> list[tuple[str, Atoms]]:
    """About 40 varied structures: bulk prototypes over many elements (rattled and strained),
    triclinic cells, one-atom cells, slabs, a nanotube, molecules far from the origin, short
    dimers and a lone atom."""
    prototypes = [
        ("Si-diamond", bulk("Si", "diamond", a=5.43)),
        ("C-diamond", bulk("C", "diamond", a=3.57)),
        ("Ge-diamond", bulk("Ge", "diamond", a=5.76)),
        ("Cu-fcc", bulk("Cu", "fcc", a=3.61, cubic=True)),
        ("Al-fcc", bulk("Al", "fcc", a=4.05, cubic=True)),
        ("Ni-fcc", bulk("Ni", "fcc", a=3.52, cubic=True)),
        ("Fe-bcc", bulk("Fe", "bcc", a=2.87, cubic=True)),
        ("W-bcc", bulk("W", "bcc", a=3.17, cubic=True)),
        ("Mg-hcp", bulk("Mg", "hcp", a=3.21, c=5.21)),
        ("Ti-hcp", bulk("Ti", "hcp", a=2.95, c=4.68)),
        ("NaCl-rocksalt", bulk("NaCl", "rocksalt", a=5.64)),
        ("MgO-rocksalt", bulk("MgO", "rocksalt", a=4.21)),
        ("GaAs-zincblende", bulk("GaAs", "zincblende", a=5.65)),
        ("ZnO-wurtzite", bulk("ZnO", "wurtzite", a=3.25, c=5.21)),
        ("CsCl", bulk("CsCl", "cesiumchloride", a=4.12)),
        ("LiF-rocksalt", bulk("LiF", "rocksalt", a=4.03)),
        ("SrTiO3-perovskite", _perovskite()),
    ]
    out: list[tuple[str, Atoms]] = []
    for k, (name, atoms) in enumerate(prototypes):
        out.append((name, atoms))
        out.append((f"{name}-rattled-strained", _strained(_rattled(atoms.repeat((2, 1, 1)), 0.08, k), k)))
    out.append(("triclinic-LiFeO", _triclinic(1)))
    out.append(("triclinic-LiFeO-2", _triclinic(2)))
    out.append(("Cu-1atom-fcc", bulk("Cu", "fcc", a=3.61)))
    out.append(("Fe-1atom-bcc", _rattled(bulk("Fe", "bcc", a=2.87), 0.0, 0)))
    out.append(("Ag-1atom-sc", bulk("Ag", "sc", a=2.75)))
    slab = fcc111("Pt", size=(2, 2, 4), vacuum=8.0)
    out.append(("Pt111-slab", _rattled(slab, 0.05, 3)))
    tube = nanotube(4, 4, length=2, bond=1.42, symbol="C")
    out.append(("C-nanotube-1D", _rattled(tube, 0.03, 4)))
    for name in ("H2O", "CH4", "C6H6", "NH3", "CH3CH2OH"):
        mol = molecule(name)
        mol.positions += np.array([1234.5, -987.6, 4321.0])  # far from the origin
        out.append((f"{name}-molecule", _rattled(mol, 0.02, 5)))
    out.append(("O2-short-dimer", Atoms("O2", positions=[(0, 0, 0), (0, 0, 0.9)])))
    out.append(("Si2-short-dimer", Atoms("Si2", positions=[(0, 0, 0), (0.3, 0.2, 1.6)])))
    out.append(("Fe-lone-atom", Atoms("Fe", positions=[(1.0, 2.0, 3.0)])))
    return out


def compare_calculators(atoms: Atoms, calc, reference) -> dict[str, float]:
    """Max |dE| per atom (eV), max |dF| (eV/A) and max |dstress| (GPa, cells of full rank)."""
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = calc, reference
    n = max(len(atoms), 1)
    out = {
        "energy_per_atom": abs(a.get_potential_energy() - b.get_potential_energy()) / n,
        "force": float(np.abs(a.get_forces() - b.get_forces()).max()) if len(atoms) else 0.0,
        "stress_gpa": 0.0,
    }
    if atoms.cell.rank == 3:
        out["stress_gpa"] = float(np.abs(a.get_stress() - b.get_stress()).max()) / units.GPa
    return out


def finite_difference_forces(atoms: Atoms, calc, delta: float = 1e-4) -> np.ndarray:
    """-dE/dx by central differences (eV/A), shape (n_atoms, 3)."""
    work = atoms.copy()
    work.calc = calc
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for c in range(3):
            energies = []
            for sign in (1, -1):
                pos = atoms.positions.copy()
                pos[i, c] += sign * delta
                work.positions = pos
                energies.append(work.get_potential_energy())
            forces[i, c] = -(energies[0] - energies[1]) / (2 * delta)
    return forces


def finite_difference_stress(atoms: Atoms, calc, delta: float = 1e-5) -> np.ndarray:
    """(1/V) dE/d(strain) by central differences in Voigt order (eV/A^3), shape (6,)."""
    work = atoms.copy()
    work.calc = calc
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    stress = np.zeros(6)
    for v, (a, b) in enumerate(pairs):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * sign * delta
            eps[b, a] += 0.5 * sign * delta
            work.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=False)
            work.positions = atoms.positions @ (np.eye(3) + eps)
            energies.append(work.get_potential_energy())
        # symmetric strain with eps_ab = eps_ba = delta/2 each: dE = (s_ab + s_ba) delta/2 V
        stress[v] = (energies[0] - energies[1]) / (2 * delta) / atoms.get_volume()
    return stress


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / max |reference|."""
    return float(np.abs(value - reference).max() / max(np.abs(reference).max(), 1e-300))


def random_rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix (3, 3)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def emt_cu_frames(n: int, seed: int, stress_offset_gpa: float = 0.0) -> list[Atoms]:
    """``n`` rattled, strained 4-atom Cu cells labelled by ASE's EMT (energy, forces, stress), as
    training data with an independent reference; ``stress_offset_gpa`` is added to the stress
    diagonal (a synthetic Pulay stress)."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.set_cell(atoms.cell @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
        atoms.rattle(0.08, seed=seed * 1000 + i)
        atoms.calc = EMT()
        stress = atoms.get_stress() + np.array([1, 1, 1, 0, 0, 0]) * stress_offset_gpa * units.GPa
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=stress
        )
        frames.append(atoms)
    return frames


def force_mae(calc, frames: list[Atoms]) -> float:
    """Mean absolute force error (eV/A) of ``calc`` against the forces stored with ``frames``."""
    errors = []
    for atoms in frames:
        probe = atoms.copy()
        probe.calc = calc
        errors.append(np.abs(probe.get_forces() - atoms.get_forces()).mean())
    return float(np.mean(errors))
