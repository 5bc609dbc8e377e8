"""Harmonic phonons with phonopy (finite displacements), band structure and DOS, with the
non-analytical (LO-TO) correction when Born charges and a dielectric constant are given."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ._common import (
    WorkflowWarning,
    as_atoms,
    calculate_many,
    progress_bar,
    reference_state,
    resolve_calculator,
    save_figure,
)


@dataclass
class PhononResult:
    """Outcome of :func:`phonons`.

    Attributes:
        phonopy: the ``phonopy.Phonopy`` object, with force constants (for further analysis).
        gamma_frequencies_thz: (3 n_prim,) frequencies at Gamma in THz (imaginary ones negative).
        band_distances: (n_q,) path coordinate (1/A, 2 pi included, as ASE's band paths);
        band_frequencies_thz: (n_q, 3 n_prim), one straight segment after another (a special
        point ends one segment and starts the next, so it appears twice);
        band_labels: [(distance, label)] of the special points, ``"K|U"`` where the path jumps;
        band_segments: [(start, stop)] index ranges of the straight segments.
        dos_frequencies_thz, dos: total density of states on a mesh.
        min_frequency_thz: the lowest frequency on the mesh and the path (negative: imaginary).
        primitive: the primitive cell the phonons were computed for (spglib's, from the input).
        temperatures_k: (n_T,) K; free_energy_ev, entropy_ev_per_k, heat_capacity_ev_per_k:
            (n_T,) harmonic vibrational free energy (eV), entropy and heat capacity at constant
            volume (eV/K), per primitive cell.
        title: formula, potential, supercell, dtype and whether the NAC was applied.
        nac: whether the non-analytical term correction (LO-TO splitting) was applied.
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
    band_segments: list | None = None
    title: str = ""
    nac: bool = False

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
        """Band structure and DOS side by side, titled, as PNG."""
        # a Figure, not pyplot: the user's backend and open figures stay as they were
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4.4))
        ax_band, ax_dos = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1]})
        # one line per straight segment: nothing joins the two sides of a jump (K|U)
        for start, stop in self.band_segments or [(0, len(self.band_distances))]:
            ax_band.plot(self.band_distances[start:stop], self.band_frequencies_thz[start:stop], color="C0", lw=1)
        ticks, labels = zip(*self.band_labels)
        ax_band.set_xticks(ticks, [_tex_label(label) for label in labels])
        for x in ticks:
            ax_band.axvline(x, color="0.8", lw=0.5)
        ax_band.axhline(0, color="k", lw=0.5)
        ax_band.set_xlim(self.band_distances[0], self.band_distances[-1])
        ax_band.set_ylabel("frequency (THz)")
        ax_dos.plot(self.dos, self.dos_frequencies_thz, color="C1", lw=1)
        ax_dos.set_xlabel("DOS (states/THz\nper primitive cell)")
        ax_dos.set_xlim(left=0)
        # the DOS's smearing reaches below zero: the axis starts at zero unless a mode is imaginary
        top = max(self.band_frequencies_thz.max(), self.dos_frequencies_thz.max())
        ax_band.set_ylim(min(0.0, self.min_frequency_thz) - 0.02 * top, 1.03 * top)
        fig.suptitle(self.title)
        return save_figure(fig, filename, dpi=150)


def _tex_label(label: str) -> str:
    """``"G"`` as Gamma, and ``"K|U"`` with each side converted."""
    return "|".join(r"$\Gamma$" if part == "G" else part for part in label.split("|"))


def phonons(
    structure: Any,
    calculator: Calculator | None = None,
    supercell: tuple[int, int, int] = (2, 2, 2),
    displacement_a: float = 0.01,
    mesh: tuple[int, int, int] = (16, 16, 16),
    band_points: int = 100,
    progress: bool = True,
    born_charges: dict | None = None,
    dielectric: float | np.ndarray | None = None,
    acoustic_sum_rule: bool = True,
    relax_first: bool = False,
) -> PhononResult:
    """Phonons of ``structure`` from finite displacements of ``displacement_a`` (A) in a
    ``supercell`` of its primitive cell (found with spglib, so a conventional cell gives
    unfolded bands and the right Brillouin-zone path). Band structure, DOS and thermal
    properties (0-1000 K). Float64 is the default when no calculator is given, and recommended.

    Args:
        born_charges: Born effective charges (e) by element symbol, a number or a (3, 3) tensor
            in the input's Cartesian frame (``{"Na": 1.1, "Cl": -1.1}``; every site of an element
            shares it), with ``dielectric``, the high-frequency dielectric constant (a number or
            (3, 3)): phonopy's non-analytical term correction (Gonze), i.e. LO-TO splitting.
            Without them a polar crystal's LO modes are wrong near Gamma (a warning says so).
            ``gamma_frequencies_thz`` is then phonopy's value at Gamma itself (TO, no direction).
        acoustic_sum_rule: impose translational invariance and index symmetry on the force
            constants (phonopy's ``symmetrize_force_constants``, the ``FC_SYMMETRY`` tag).
        relax_first: relax cell and positions first; otherwise a residual stress or force gives
            a ``WorkflowWarning`` (phonons of a strained cell are those of another state).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = as_atoms(structure)
    if atoms.cell.rank != 3 or not atoms.pbc.all():
        raise ValueError("phonons need a crystal: a cell periodic in all three directions")
    if (born_charges is None) != (dielectric is None):
        raise ValueError("the NAC needs both born_charges and dielectric; got only one of them")
    calc = resolve_calculator(calculator, "phonons")
    atoms = reference_state(atoms, calc, "phonons", relax_first)
    atoms, rotation = _primitive_and_rotation(atoms)
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
    if acoustic_sum_rule:
        ph.symmetrize_force_constants()
    nac = born_charges is not None
    if nac:
        ph.nac_params = _nac_params(atoms, born_charges, dielectric, rotation)
    elif _looks_polar(atoms):
        formula = atoms.get_chemical_formula(mode="metal", empirical=True)
        warnings.warn(f"phonons: {formula} looks polar (more than one element, not all metals) and no "
                      "born_charges/dielectric were given, so the LO-TO splitting is missing: LO modes near "
                      "Gamma are wrong", WorkflowWarning, stacklevel=2)  # fmt: skip

    segments, x, labels = _band_path(atoms, band_points)
    ph.run_band_structure(segments)
    band_freqs = np.concatenate(ph.band_structure.frequencies)
    bounds = np.cumsum([0] + [len(q) for q in segments])
    ph.run_mesh(list(mesh), is_gamma_center=True)  # keeps the point-group symmetry of any cell
    ph.run_total_dos()
    mesh_freqs = ph.mesh.frequencies
    ph.run_qpoints([[0.0, 0.0, 0.0]])
    gamma = np.asarray(ph.qpoints.frequencies[0])
    # the three zero-frequency acoustic modes at Gamma carry no free energy; phonopy >= 4.10 adds
    # (and warns about) a spurious term from their round-off unless told to leave them out
    exclude = "exclude_gamma_acoustic" in inspect.signature(ph.run_thermal_properties).parameters
    ph.run_thermal_properties(t_min=0, t_max=1000, t_step=10, **({"exclude_gamma_acoustic": True} if exclude else {}))
    thermal = ph.thermal_properties
    per_mol = units.kJ / units.mol  # phonopy reports kJ/mol and J/K/mol of primitive cells
    return PhononResult(
        phonopy=ph,
        gamma_frequencies_thz=gamma,
        band_distances=x,
        band_frequencies_thz=band_freqs,
        band_labels=labels,
        dos_frequencies_thz=np.asarray(ph.total_dos.frequency_points),
        dos=np.asarray(ph.total_dos.dos),
        min_frequency_thz=float(min(mesh_freqs.min(), band_freqs.min())),
        primitive=atoms,
        temperatures_k=np.asarray(thermal.temperatures),
        free_energy_ev=np.asarray(thermal.free_energy) * per_mol,
        entropy_ev_per_k=np.asarray(thermal.entropy) * per_mol * 1e-3,
        heat_capacity_ev_per_k=np.asarray(thermal.heat_capacity) * per_mol * 1e-3,
        band_segments=list(zip(bounds[:-1].tolist(), bounds[1:].tolist())),
        title=_title(atoms, calc, supercell, nac),
        nac=nac,
    )


def _band_path(atoms: Atoms, n_points: int) -> tuple[list[np.ndarray], np.ndarray, list]:
    """ASE's special-point path of ``atoms.cell`` as straight segments of reduced q-points
    (about ``n_points`` in all, spaced evenly in 1/A), their path coordinate (1/A, 2 pi
    included; it does not advance across a jump) and the labels, ``"K|U"`` at a jump."""
    from ase.dft.kpoints import parse_path_string

    path = atoms.cell.bandpath(npoints=0)
    pieces = parse_path_string(path.path)  # "GXWKGLUWLK,UX" -> [[G, X, ...], [U, X]]
    metric = 2 * np.pi * atoms.cell.reciprocal()  # reduced -> Cartesian (1/A, 2 pi included)
    ends = [(path.special_points[a], path.special_points[b]) for piece in pieces for a, b in zip(piece, piece[1:])]
    lengths = [np.linalg.norm((q1 - q0) @ metric) for q0, q1 in ends]
    segments, x, labels, start = [], [], [], 0.0
    for piece in pieces:
        if labels:  # a jump: both end labels at one coordinate
            labels[-1] = (labels[-1][0], f"{labels[-1][1]}|{piece[0]}")
        else:
            labels.append((0.0, piece[0]))
        for label in piece[1:]:
            q0, q1 = ends[len(segments)]
            length = lengths[len(segments)]
            n = max(2, int(round(n_points * length / sum(lengths))) + 1)
            segments.append(np.linspace(q0, q1, n))
            x.append(start + np.linspace(0.0, length, n))
            start += length
            labels.append((start, label))
    return segments, np.concatenate(x), labels


def _nac_params(atoms: Atoms, born_charges: dict, dielectric, rotation: np.ndarray) -> dict:
    """phonopy's ``nac_params`` for the primitive ``atoms`` from per-element Born charges and the
    dielectric constant given in the input's frame (``rotation`` takes that frame to this one)."""
    missing = sorted(set(atoms.get_chemical_symbols()) - set(born_charges))
    if missing:
        raise ValueError(f"born_charges has no entry for {missing}; it has {sorted(born_charges)}")

    def tensor(value, what):
        value = np.asarray(value, dtype=float)
        if value.shape not in ((), (3, 3)):
            raise ValueError(f"{what} must be a number or a (3, 3) tensor, got shape {value.shape}")
        value = value * np.eye(3) if value.ndim == 0 else value
        return rotation @ value @ rotation.T

    born = np.array([tensor(born_charges[s], f"born_charges[{s!r}]") for s in atoms.get_chemical_symbols()])
    total = born.sum(axis=0)
    if np.abs(total).max() > 0.05:  # a charged cell: the NAC would be meaningless
        raise ValueError(f"the Born charges of the primitive cell sum to {np.round(total, 3).tolist()}, not zero")
    # factor: e^2/(4 pi eps0) in eV A, for forces in eV/A and lengths in A (phonopy's VASP value)
    return {"born": born, "dielectric": tensor(dielectric, "dielectric"), "factor": units.Hartree * units.Bohr}


def _looks_polar(atoms: Atoms) -> bool:
    """More than one element and not an intermetallic: LO-TO splitting is likely."""
    from pymatgen.core import Element

    elements = set(atoms.get_chemical_symbols())
    return len(elements) > 1 and not all(Element(e).is_metal for e in elements)


def _title(atoms: Atoms, calc: Calculator, supercell, nac: bool) -> str:
    """A figure title: formula, potential, supercell, dtype, NAC."""
    potential = getattr(calc, "potential", None)
    name = getattr(potential, "name", None) or type(calc).__name__
    dtype = str(getattr(potential, "dtype", "")).replace("torch.", "")
    parts = [atoms.get_chemical_formula(mode="metal", empirical=True), name,
             "x".join(str(n) for n in supercell) + " supercell", dtype, "NAC" if nac else "no NAC"]  # fmt: skip
    return ", ".join(p for p in parts if p)


def primitive_cell(atoms: Atoms, symprec: float = 1e-4) -> Atoms:
    """spglib's standardised primitive cell of ``atoms`` (the input itself when it is already
    primitive, or when spglib finds no symmetry to reduce by)."""
    return _primitive_and_rotation(atoms, symprec)[0]


def _primitive_and_rotation(atoms: Atoms, symprec: float = 1e-4) -> tuple[Atoms, np.ndarray]:
    """:func:`primitive_cell` and the rotation R from the input's Cartesian frame to its
    (x_prim = R x_input; the identity when the input is kept)."""
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    found = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=symprec)
    if found is None or len(found[2]) >= len(atoms):
        return atoms.copy(), np.eye(3)
    lattice, positions, numbers = found
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    rotation = dataset["std_rotation_matrix"] if isinstance(dataset, dict) else dataset.std_rotation_matrix
    return Atoms(numbers=numbers, cell=lattice, scaled_positions=positions, pbc=True), np.asarray(rotation)
