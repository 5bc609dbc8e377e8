"""ASE adapter: Atoms -> graph -> model -> results dict. Nothing else lives here."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols

from .graph import build_graph
from .nn.model import evaluate
from .potential import DEFAULT_POTENTIAL, Potential, load_potential


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use 'cpu' or 'auto'")
    return device


class FacetCalculator(Calculator):
    """ASE calculator for facet_calc potentials.

    Args:
        potential: a shipped potential name (see ``facet_calc.list_potentials()``), a potential
            folder, or a loaded :class:`~facet_calc.potential.Potential`.
        device: ``"cpu"`` (the default), ``"cuda"`` or ``"auto"`` (CUDA when available); for a
            loaded ``Potential``, the default keeps the device it is on.
        dtype: ``"float32"`` (MD, relaxations) or ``"float64"`` (phonons, finite differences).

    Properties: ``energy`` and ``free_energy`` (eV), ``energies`` (eV per atom, summing to the
    energy), ``forces`` (eV/A), ``stress`` (eV/A^3, Voigt xx yy zz yz xz xy, ASE sign). All are
    computed in one pass.

    Example::

        >>> from ase.build import bulk
        >>> atoms = bulk("Si", "diamond", a=5.43)
        >>> atoms.calc = FacetCalculator("7net-0-spline")
        >>> atoms.get_potential_energy()  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        potential: str | Potential = DEFAULT_POTENTIAL,
        device: str | torch.device | None = None,
        dtype: str = "float32",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(potential, Potential):
            self.potential = potential
            if device is not None:  # otherwise keep the device the potential was loaded on
                self.potential.model.to(device=_resolve_device(device))
        else:
            self.potential = load_potential(potential, dtype=dtype, device=_resolve_device(device or "cpu"))
        self.device = self.potential.device
        numbers = self.potential.atomic_numbers
        lookup = np.full(max(numbers) + 1, -1, dtype=np.int64)
        lookup[numbers] = np.arange(len(numbers))
        self._species_of_z = lookup

    @property
    def dtype(self) -> torch.dtype:
        return self.potential.dtype

    def species_indices(self, numbers: np.ndarray) -> np.ndarray:
        """Map atomic numbers to the model's species indices; ``ValueError`` for unknown ones."""
        lookup = self._species_of_z
        known = (numbers >= 0) & (numbers < len(lookup))
        species = np.full(numbers.shape, -1, dtype=np.int64)
        species[known] = lookup[numbers[known]]
        if np.any(species < 0):
            unknown = sorted({int(z) for z in numbers[species < 0]})
            names = [chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z) for z in unknown]
            supported = " ".join(chemical_symbols[z] for z in sorted(self.potential.atomic_numbers))
            raise ValueError(
                f"potential {self.potential.name!r} has no parameters for element(s) "
                f"{', '.join(names)}; it supports: {supported}"
            )
        return species

    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: reject unsupported elements at once."""
        self.species_indices(atoms.numbers)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        if properties is None:
            properties = self.implemented_properties
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        species = self.species_indices(atoms.numbers)
        has_stress_cell = atoms.cell.rank == 3
        if "stress" in properties and not has_stress_cell:
            raise PropertyNotImplementedError(
                "stress needs a cell with three independent lattice vectors (a volume to divide "
                "by); this system has none, so stress is undefined. Set a cell or ask for "
                "energy and forces only."
            )
        n_atoms = len(atoms)
        if n_atoms == 0:
            self.results = {
                "energy": 0.0,
                "free_energy": 0.0,
                "energies": np.zeros(0),
                "forces": np.zeros((0, 3)),
            }
            if has_stress_cell:
                self.results["stress"] = np.zeros(6)
            return

        graph = build_graph(atoms, self.potential.cutoff)
        dtype, device = self.dtype, self.device

        def tensor(array, tdtype=dtype):
            return torch.as_tensor(array, dtype=tdtype, device=device)

        out = evaluate(
            self.potential.model,
            species=tensor(species, torch.int64),
            edge_vec=tensor(graph.edge_vectors),
            senders=tensor(graph.senders, torch.int64),
            receivers=tensor(graph.receivers, torch.int64),
            compute_virial=has_stress_cell,
        )
        energy = float(out["energy"][0].double().item())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].double().cpu().numpy(),
            "forces": out["forces"].double().cpu().numpy(),
        }
        if has_stress_cell:
            sigma = out["virial"][0].double().cpu().numpy() / atoms.get_volume()
            self.results["stress"] = sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
