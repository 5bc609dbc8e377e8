"""Harmonic phonons with phonopy (finite displacements), band structure and DOS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ._common import as_atoms, progress_bar, resolve_calculator


@dataclass
class PhononResult:
    """Outcome of :func:`phonons`.

    Attributes:
        phonopy: the ``phonopy.Phonopy`` object, with force constants (for further analysis).
        gamma_frequencies_thz: (3 n_prim,) frequencies at Gamma in THz (imaginary ones negative).
        band_distances: (n_q,) path coordinate; band_frequencies_thz: (n_q, 3 n_prim);
        band_labels: [(distance, label)] of the special points.
        dos_frequencies_thz, dos: total density of states on a mesh.
        min_frequency_thz: the lowest frequency on the mesh and the path (negative: imaginary).
    """

    phonopy: Any
    gamma_frequencies_thz: np.ndarray
    band_distances: np.ndarray
    band_frequencies_thz: np.ndarray
    band_labels: list
    dos_frequencies_thz: np.ndarray
    dos: np.ndarray
    min_frequency_thz: float

    def has_imaginary_modes(self, tolerance_thz: float = 0.05) -> bool:
        return self.min_frequency_thz < -tolerance_thz

    def plot(self, filename: str) -> Figure:
        """Band structure and DOS side by side, as PNG."""
        # a Figure, not pyplot: the user's backend and open figures stay as they were
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4))
        ax_band, ax_dos = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1]})
        ax_band.plot(self.band_distances, self.band_frequencies_thz, color="C0", lw=1)
        ticks, labels = zip(*self.band_labels)
        ax_band.set_xticks(ticks, [r"$\Gamma$" if lab == "G" else lab for lab in labels])
        for x in ticks:
            ax_band.axvline(x, color="0.8", lw=0.5)
        ax_band.axhline(0, color="k", lw=0.5)
        ax_band.set_xlim(self.band_distances[0], self.band_distances[-1])
        ax_band.set_ylabel("frequency (THz)")
        ax_dos.plot(self.dos, self.dos_frequencies_thz, color="C1", lw=1)
        ax_dos.set_xlabel("DOS")
        fig.tight_layout()
        fig.savefig(filename, dpi=120)
        return fig


def phonons(
    structure: Any,
    calculator: Calculator | None = None,
    supercell: tuple[int, int, int] = (2, 2, 2),
    displacement_a: float = 0.01,
    mesh: tuple[int, int, int] = (16, 16, 16),
    band_points: int = 100,
    progress: bool = True,
) -> PhononResult:
    """Phonons of ``structure`` (taken as the primitive cell) from finite displacements of
    ``displacement_a`` in a ``supercell``. Relax first; float64 is the default when no
    calculator is given, and recommended."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = as_atoms(structure)
    if atoms.cell.rank != 3 or not atoms.pbc.all():
        raise ValueError("phonons need a crystal: a cell periodic in all three directions")
    calc = resolve_calculator(calculator, dtype="float64")
    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())  # fmt: skip
    ph = Phonopy(unit, supercell_matrix=np.diag(supercell), primitive_matrix=None)
    ph.generate_displacements(distance=displacement_a)
    forces = []
    cells = ph.supercells_with_displacements
    with progress_bar(len(cells), "phonons", progress) as bar:
        for sc in cells:
            work = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
            work.calc = calc
            f = work.get_forces()
            forces.append(f - f.mean(axis=0))  # remove the tiny net force (translational drift)
            bar.update(1)
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    ph.symmetrize_force_constants()

    path = atoms.cell.bandpath(npoints=band_points)
    ph.run_band_structure([path.kpts])
    bands = ph.get_band_structure_dict()
    x, special_x, special_labels = path.get_linear_kpoint_axis()
    ph.run_mesh(list(mesh))
    ph.run_total_dos()
    dos = ph.get_total_dos_dict()
    mesh_freqs = ph.get_mesh_dict()["frequencies"]
    band_freqs = np.asarray(bands["frequencies"][0])
    return PhononResult(
        phonopy=ph,
        gamma_frequencies_thz=np.asarray(ph.get_frequencies([0.0, 0.0, 0.0])),
        band_distances=np.asarray(x),
        band_frequencies_thz=band_freqs,
        band_labels=list(zip(special_x, special_labels)),
        dos_frequencies_thz=np.asarray(dos["frequency_points"]),
        dos=np.asarray(dos["total_dos"]),
        min_frequency_thz=float(min(mesh_freqs.min(), band_freqs.min())),
    )
