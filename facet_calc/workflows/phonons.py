"""Harmonic phonons with phonopy (finite displacements), band structure and DOS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ._common import as_atoms, calculate_many, progress_bar, resolve_calculator


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
        primitive: the primitive cell the phonons were computed for (spglib's, from the input).
        temperatures_k: (n_T,) K; free_energy_ev, entropy_ev_per_k, heat_capacity_ev_per_k:
            (n_T,) harmonic vibrational free energy (eV), entropy and heat capacity at constant
            volume (eV/K), per primitive cell.
    """

    phonopy: Any
    gamma_frequencies_thz: np.ndarray
    band_distances: np.ndarray
    band_frequencies_thz: np.ndarray
    band_labels: list
    dos_frequencies_thz: np.ndarray
    dos: np.ndarray
    min_frequency_thz: float
    primitive: Atoms | None = None
    temperatures_k: np.ndarray | None = None
    free_energy_ev: np.ndarray | None = None
    entropy_ev_per_k: np.ndarray | None = None
    heat_capacity_ev_per_k: np.ndarray | None = None

    def write_tables(self, stem: str) -> list[str]:
        """Band structure, DOS and thermal properties as CSV files with units in the headers;
        returns the file names."""
        names = [f"{stem}_phonon_bands.csv", f"{stem}_phonon_dos.csv", f"{stem}_thermal.csv"]
        n_bands = self.band_frequencies_thz.shape[1]
        np.savetxt(names[0], np.column_stack([self.band_distances, self.band_frequencies_thz]), delimiter=",",
                   header="path_distance_1_per_A," + ",".join(f"band{i}_THz" for i in range(n_bands)))  # fmt: skip
        np.savetxt(names[1], np.column_stack([self.dos_frequencies_thz, self.dos]), delimiter=",",
                   header="frequency_THz,dos_states_per_THz_per_primitive_cell")  # fmt: skip
        table = [self.temperatures_k, self.free_energy_ev, self.entropy_ev_per_k, self.heat_capacity_ev_per_k]
        np.savetxt(
            names[2],
            np.column_stack(table),
            delimiter=",",
            header="temperature_K,free_energy_eV,entropy_eV_per_K,heat_capacity_cv_eV_per_K",
        )  # per primitive cell; fmt: skip
        return names

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
    """Phonons of ``structure`` from finite displacements of ``displacement_a`` in a
    ``supercell`` of its primitive cell (found with spglib, so a conventional cell gives
    unfolded bands and the right Brillouin-zone path). Band structure, DOS and thermal
    properties (0-1000 K). Relax first; float64 is the default when no calculator is given,
    and recommended."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = as_atoms(structure)
    if atoms.cell.rank != 3 or not atoms.pbc.all():
        raise ValueError("phonons need a crystal: a cell periodic in all three directions")
    calc = resolve_calculator(calculator, "phonons")
    atoms = primitive_cell(atoms)
    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())  # fmt: skip
    ph = Phonopy(unit, supercell_matrix=np.diag(supercell), primitive_matrix=None)
    ph.generate_displacements(distance=displacement_a)
    cells = ph.supercells_with_displacements
    images = [Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True) for sc in cells]
    with progress_bar(len(cells), "phonons", progress) as bar:
        # all displaced supercells in batched calls (FacetCalculator.calculate_many)
        forces = [r["forces"] for r in calculate_many(calc, images, ["forces"])]
        bar.update(len(cells))
    forces = [f - f.mean(axis=0) for f in forces]  # remove the tiny net force (translational drift)
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    ph.symmetrize_force_constants()

    path = atoms.cell.bandpath(npoints=band_points)
    ph.run_band_structure([path.kpts])
    bands = ph.get_band_structure_dict()
    x, special_x, special_labels = path.get_linear_kpoint_axis()
    ph.run_mesh(list(mesh), is_gamma_center=True)  # keeps the point-group symmetry of any cell
    ph.run_total_dos()
    dos = ph.get_total_dos_dict()
    mesh_freqs = ph.get_mesh_dict()["frequencies"]
    band_freqs = np.asarray(bands["frequencies"][0])
    ph.run_thermal_properties(t_min=0, t_max=1000, t_step=10)
    thermal = ph.get_thermal_properties_dict()
    per_mol = units.kJ / units.mol  # phonopy reports kJ/mol and J/K/mol of primitive cells
    return PhononResult(
        phonopy=ph,
        gamma_frequencies_thz=np.asarray(ph.get_frequencies([0.0, 0.0, 0.0])),
        band_distances=np.asarray(x),
        band_frequencies_thz=band_freqs,
        band_labels=list(zip(special_x, special_labels)),
        dos_frequencies_thz=np.asarray(dos["frequency_points"]),
        dos=np.asarray(dos["total_dos"]),
        min_frequency_thz=float(min(mesh_freqs.min(), band_freqs.min())),
        primitive=atoms,
        temperatures_k=np.asarray(thermal["temperatures"]),
        free_energy_ev=np.asarray(thermal["free_energy"]) * per_mol,
        entropy_ev_per_k=np.asarray(thermal["entropy"]) * per_mol * 1e-3,
        heat_capacity_ev_per_k=np.asarray(thermal["heat_capacity"]) * per_mol * 1e-3,
    )


def primitive_cell(atoms: Atoms, symprec: float = 1e-4) -> Atoms:
    """spglib's standardised primitive cell of ``atoms`` (the input itself when it is already
    primitive, or when spglib finds no symmetry to reduce by)."""
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    found = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=symprec)
    if found is None or len(found[2]) >= len(atoms):
        return atoms.copy()
    lattice, positions, numbers = found
    return Atoms(numbers=numbers, cell=lattice, scaled_positions=positions, pbc=True)
