"""Fidelity of a conversion: the converted potential against its source model, before writing.

:func:`fidelity_structures_for` builds a few small, varied structures from the model's own
elements (a converted checkpoint may know any subset of the periodic table);
:func:`measure_fidelity` evaluates the converted model and the source side by side in float64
and float32 and returns the largest deviations; :func:`check_bounds` raises
:class:`FidelityError` when one exceeds :data:`BOUNDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.data import covalent_radii

#: Largest deviation from the source model a conversion may have, per dtype:
#: (energy meV/atom, forces meV/A, stress GPa). Float64: about 10x the largest deviation of the
#: shipped conversions (1e-3 meV/atom, 2 meV/A on short dimers, 5e-4 GPa), the same figures that
#: tests/test_fidelity.py holds them to. Float32 compares with the source's own float32 run, so
#: both sides' rounding adds in.
BOUNDS: dict[str, tuple[float, float, float]] = {
    "float64": (0.01, 5.0, 0.005),
    "float32": (0.1, 20.0, 0.02),
}
UNITS = ("meV/atom", "meV/A", "GPa")
KEYS = ("max_abs_energy_mev_per_atom", "max_abs_force_mev_per_A", "max_abs_stress_gpa")


class FidelityError(ValueError):
    """The converted potential deviates from its source by more than :data:`BOUNDS`."""


def _distance(z1: int, z2: int) -> float:
    """A bond length for a pair of elements (sum of covalent radii, at least 1 A)."""
    return max(1.0, float(covalent_radii[z1] + covalent_radii[z2]))


def _rattle(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(0.0, stdev, atoms.positions.shape)
    return atoms


def _strain(atoms: Atoms, seed: int, amplitude: float = 0.03) -> Atoms:
    atoms = atoms.copy()
    eps = np.random.default_rng(seed).uniform(-amplitude, amplitude, (3, 3))
    atoms.set_cell(atoms.cell @ (np.eye(3) + (eps + eps.T) / 2), scale_atoms=True)
    return atoms


def fidelity_structures_for(atomic_numbers: Sequence[int]) -> list[tuple[str, Atoms]]:
    """Eight small structures made of the model's elements (spread over its list), periodic and
    not, with bond lengths from covalent radii: a rattled, strained 4-atom diamond-like cell, a
    rattled rock-salt-like cell, a triclinic 3-element cell, a one-atom fcc cell (its own
    images as neighbours), a tetrahedral molecule off the origin, a short dimer, a
    surface slab and a lone atom."""
    zs = sorted(int(z) for z in atomic_numbers if 0 < int(z) < len(covalent_radii))
    if not zs:
        raise ValueError("the model knows no elements with atomic numbers 1..118")

    def pick(k: int) -> int:  # element k of a spread over the model's list
        return zs[(k * 7919) % len(zs)] if len(zs) > 1 else zs[0]

    a, b, c = pick(0), pick(1), pick(2)
    out = []
    d = _distance(a, b)
    diamond = bulk("Si", "diamond", a=4 * d / np.sqrt(3)).repeat((2, 1, 1))
    diamond.numbers = [a, b, a, b]
    out.append(("diamond-like-rattled-strained", _strain(_rattle(diamond, 0.06, 1), 1)))
    d = _distance(b, c)
    rocksalt = bulk("NaCl", "rocksalt", a=2 * d).repeat((2, 1, 1))
    rocksalt.numbers = [b, c, b, c]
    out.append(("rocksalt-like-rattled", _rattle(rocksalt, 0.08, 2)))
    d = max(_distance(a, b), _distance(b, c), _distance(a, c))
    cell = d * np.array([[1.9, 0.1, 0.0], [0.4, 1.8, 0.0], [0.3, 0.5, 2.1]])
    # a jittered 3x2x1 grid of fractional positions keeps every pair near a bond length
    grid = np.array([[i / 3, j / 2, 0.25 + 0.5 * ((i + j) % 2)] for i in range(3) for j in range(2)])
    frac = grid + np.random.default_rng(3).uniform(-0.04, 0.04, grid.shape)
    out.append(("triclinic-3-elements", Atoms([a, b, c, b, c, a], scaled_positions=frac, cell=cell, pbc=True)))
    one = bulk("Cu", "fcc", a=np.sqrt(2) * _distance(c, c))
    one.numbers = [c]
    out.append(("fcc-1-atom", one))
    d = _distance(a, pick(3))
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3) * d
    # (off the origin, not far: sevenn's neighbour list bins the box from the origin, seconds at 1000 A)
    mol = Atoms([a] + [pick(3)] * 4, positions=np.vstack([[0, 0, 0], tetra]) + [8.5, -6.2, 7.0])
    out.append(("molecule-off-origin", _rattle(mol, 0.03, 4)))
    out.append(("short-dimer", Atoms([b, c], positions=[(0, 0, 0), (0.2, 0.1, 0.7 * _distance(b, c))])))
    slab = bulk("Cu", "fcc", a=np.sqrt(2) * _distance(a, b), cubic=True)
    slab.numbers = [a, b, a, b]
    slab = slab.repeat((1, 1, 2))
    slab.center(vacuum=6.0, axis=2)
    slab.pbc = (True, True, False)
    out.append(("slab", _rattle(slab, 0.05, 5)))
    out.append(("lone-atom", Atoms([a], positions=[(1.0, 2.0, 3.0)])))
    return out


def _compare(atoms: Atoms, calc, reference) -> tuple[float, float, float]:
    """|dE| per atom (meV), max |dF| (meV/A), max |dstress| (GPa; cells of full rank)."""
    from ase import units

    x, y = atoms.copy(), atoms.copy()
    x.calc, y.calc = calc, reference
    n = max(len(atoms), 1)
    de = abs(x.get_potential_energy() - y.get_potential_energy()) / n * 1e3
    df = float(np.abs(x.get_forces() - y.get_forces()).max()) * 1e3 if len(atoms) else 0.0
    ds = 0.0
    if atoms.cell.rank == 3 and all(atoms.pbc):
        ds = float(np.abs(x.get_stress() - y.get_stress()).max()) / units.GPa
    return de, df, ds


def converted_calculator(config: dict[str, Any], tensors: dict[str, torch.Tensor], dtype: str,
                         head: str | None = None):  # fmt: skip
    """An ASE calculator of a converted model held in memory (not yet written)."""
    from ..calculator import FacetCalculator
    from ..nn import build_model
    from ..potential import Potential, load_parameters

    model = build_model(config, getattr(torch, dtype))
    load_parameters(model, tensors)
    model = model.to(getattr(torch, dtype)).eval().requires_grad_(False).set_backend("auto")
    if head is not None:
        model.set_head(config["heads"].index(head))
    return FacetCalculator(Potential(config.get("name", "converted"), config, model, Path("."), head=head))


def measure_fidelity(
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    reference: Callable[[str, str | None], Any],
    structures: list[tuple[str, Atoms]],
    heads: Sequence[str | None] = (None,),
) -> dict[str, Any]:
    """Largest deviations of the converted model from ``reference(dtype, head)`` (an ASE
    calculator of the source) over ``structures`` and ``heads``, per dtype::

        {"float64": {"n_structures": 8, "max_abs_energy_mev_per_atom": ..., ...}, "float32": {...},
         "worst": {"float64": "<structure> (<head>)", ...}}
    """
    figures: dict[str, Any] = {"worst": {}}
    for dtype in ("float64", "float32"):
        worst = [0.0, 0.0, 0.0]
        where = [""] * 3
        for head in heads:
            calc = converted_calculator(config, tensors, dtype, head)
            ref = reference(dtype, head)
            for name, atoms in structures:
                for k, value in enumerate(_compare(atoms, calc, ref)):
                    if not np.isfinite(value) or value > worst[k]:
                        worst[k] = value if np.isfinite(value) else float("inf")
                        where[k] = name + (f" (head {head})" if head else "")
        figures[dtype] = {"n_structures": len(structures), **dict(zip(KEYS, worst))}
        figures["worst"][dtype] = dict(zip(KEYS, where))
    return figures


def check_bounds(figures: dict[str, Any], bounds: dict[str, tuple[float, float, float]] = BOUNDS) -> None:
    """Raise :class:`FidelityError` naming every figure above its bound."""
    over = []
    for dtype, limits in bounds.items():
        for key, unit, limit in zip(KEYS, UNITS, limits):
            value = figures[dtype][key]
            if not value <= limit:
                place = figures.get("worst", {}).get(dtype, {}).get(key, "")
                over.append(f"{dtype} {key.split('_')[2]} {value:.3g} {unit} > {limit:g} {unit} (at {place})")
    if over:
        raise FidelityError(
            "the converted potential deviates from the source model by more than the bound, so nothing was "
            "written: " + "; ".join(over) + ". Report this with the checkpoint's layout; raising "
            "min_intervals may help where the radial functions are sharp"
        )
