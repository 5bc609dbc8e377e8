"""Equation of state: energies of uniformly scaled cells fitted with ase.eos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ._common import as_atoms, calculate_many, progress_bar, reference_state, resolve_calculator, save_figure


@dataclass
class EOSResult:
    """Outcome of :func:`eos`.

    Attributes:
        volumes_a3, energies_ev: (n,) the sampled cell volumes (A^3) and energies (eV).
        v0_a3: equilibrium volume of the cell (A^3). v0_per_atom_a3: the same per atom.
        e0_ev: energy at v0 (eV). b0_gpa: bulk modulus (GPa).
        eos_name: the fitted form (ase.eos name).
    """

    volumes_a3: np.ndarray
    energies_ev: np.ndarray
    v0_a3: float
    v0_per_atom_a3: float
    e0_ev: float
    b0_gpa: float
    eos_name: str

    def plot(self, filename: str) -> Figure:
        """Write E(V) with the fit to a PNG file."""
        # a Figure, not pyplot: the user's backend and open figures stay as they were
        from matplotlib.figure import Figure

        fit = EquationOfState(self.volumes_a3, self.energies_ev, eos=self.eos_name)
        fit.fit()
        fig = Figure(figsize=(5, 4))
        ax = fig.subplots()
        fit.plot(ax=ax, show=False)
        # one spelling of the unit in the title and on the axes (ASE's own labels say "Å$^3$")
        ax.set_title(f"V0 = {self.v0_a3:.3f} Å³, B0 = {self.b0_gpa:.1f} GPa")
        ax.set_xlabel("volume (Å³)")
        ax.set_ylabel("energy (eV)")
        return save_figure(fig, filename)


def eos(
    structure: Any,
    calculator: Calculator | None = None,
    max_strain: float = 0.05,
    n_points: int = 11,
    eos_name: str = "birchmurnaghan",
    progress: bool = True,
    relax_first: bool = False,
) -> EOSResult:
    """Scale the cell isotropically over volumes ``(1 +- max_strain)`` times the input volume
    (positions scaled with it), and fit ``eos_name``. The input should be relaxed (the minimum
    then lies inside the range and the cell shape is the equilibrium one): a residual stress or
    force gives a ``WorkflowWarning``, and ``relax_first=True`` relaxes cell and positions."""
    atoms = as_atoms(structure)
    if atoms.cell.rank != 3:
        raise ValueError("an equation of state needs a periodic cell with a volume")
    calc = resolve_calculator(calculator, "eos")
    atoms = reference_state(atoms, calc, "eos", relax_first)
    cell0 = atoms.cell.array.copy()
    scales = np.linspace(1 - max_strain, 1 + max_strain, n_points) ** (1.0 / 3.0)
    images = []
    for s in scales:
        image = atoms.copy()
        image.set_cell(cell0 * s, scale_atoms=True)
        images.append(image)
    volumes = [image.get_volume() for image in images]
    with progress_bar(n_points, "EOS", progress) as bar:
        # all volumes in one batched call (FacetCalculator.calculate_many)
        energies = [r["energy"] for r in calculate_many(calc, images, ["energy"])]
        bar.update(n_points)
    fit = EquationOfState(volumes, energies, eos=eos_name)
    v0, e0, b0 = fit.fit()
    return EOSResult(
        volumes_a3=np.array(volumes),
        energies_ev=np.array(energies),
        v0_a3=float(v0),
        v0_per_atom_a3=float(v0) / len(atoms),
        e0_ev=float(e0),
        b0_gpa=float(b0) / units.GPa,
        eos_name=eos_name,
    )
