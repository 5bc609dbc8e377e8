"""ASE adapter: Atoms -> graph -> model (+ dispersion) -> results dict. Nothing else lives here."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from .dispersion import D3Dispersion, dispersion_options
from .graph import build_graph
from .nn.model import evaluate
from .potential import DEFAULT_POTENTIAL, Potential, load_potential, resolve_dtype


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use 'cpu' or 'auto'")
    return device


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when the current one is 0."""
    if a.type != b.type:
        return False
    index = torch.cuda.current_device() if a.type == "cuda" else None
    return (a.index if a.index is not None else index) == (b.index if b.index is not None else index)


class FacetCalculator(Calculator):
    """ASE calculator for facet_calc potentials.

    Args:
        potential: a shipped potential name (see ``facet_calc.list_potentials()``), a potential
            folder, or a loaded :class:`~facet_calc.potential.Potential` (shared, never moved
            or converted: a conflicting ``device`` or ``dtype`` is an error).
        device: ``"cpu"`` (the default), ``"cuda"`` or ``"auto"`` (CUDA when available); for a
            loaded ``Potential``, the device it is on.
        dtype: ``"float32"`` (the default: MD, relaxations) or ``"float64"`` (phonons, finite
            differences); for a loaded ``Potential``, its dtype.
        head: the fidelity of a multi-fidelity potential (``"pbe"`` or ``"r2scan"`` for
            ``7net-mf-0-spline``; case-insensitive; default: the potential's default head).
        dispersion: ``"d3"`` adds DFT-D3(BJ) two-body dispersion with PBE parameters (needs
            ``pip install 'facet_calc[d3]'``); a dict sets options, e.g. ``{"method": "d3",
            "damping": "zero", "xc": "pbe", "cutoff": 31.75, "cn_cutoff": 21.17}`` (Angstrom).
            See :mod:`facet_calc.dispersion`.

    The settings live in ``self.parameters`` (and so in ``todict()``, trajectories and
    databases); ``calc.set(dtype="float64")`` and the like reload what they change. An unknown
    keyword is an error naming the known ones.

    Properties: ``energy`` and ``free_energy`` (eV), ``energies`` (eV per atom, summing to the
    energy), ``forces`` (eV/A), ``stress`` (eV/A^3, Voigt xx yy zz yz xz xy, ASE sign). All are
    computed in one pass; with dispersion, each is the sum of the model's and D3's.

    Example::

        >>> from ase.build import bulk
        >>> atoms = bulk("Si", "diamond", a=5.43)
        >>> atoms.calc = FacetCalculator("7net-0-spline")
        >>> atoms.get_potential_energy()  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    #: the settings ``__init__`` and ``set()`` accept; ``arch`` is a label (janus-core keys its
    #: results by it) that defaults to the potential's name and head
    parameter_names = ("potential", "device", "dtype", "head", "dispersion", "arch")
    _ase_keywords = ("restart", "label", "atoms", "directory")

    def __init__(
        self,
        potential: str | Potential = DEFAULT_POTENTIAL,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        head: str | None = None,
        dispersion: str | dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        self._check_names(kwargs, self.parameter_names[-1:] + self._ase_keywords)
        self.potential: Potential | None = None
        self.dispersion: D3Dispersion | None = None
        self._shared = isinstance(potential, Potential)
        self._arch_given = False
        settings = {"potential": potential, "device": device, "dtype": dtype, "head": head, "dispersion": dispersion}
        if "arch" in kwargs:
            settings["arch"] = kwargs.pop("arch")
        super().__init__(**kwargs)
        self.set(**settings)

    @staticmethod
    def _check_shared(potential: Potential, kwargs: dict) -> None:
        """A shared Potential is used as it is: a conflicting device, dtype or head is an error."""
        wanted = {
            "device": None if kwargs.get("device") is None else _resolve_device(kwargs["device"]),
            "dtype": None if kwargs.get("dtype") is None else resolve_dtype(kwargs["dtype"]),
            "head": None if kwargs.get("head") is None else str(kwargs["head"]).lower(),
        }
        for key, have in (("device", potential.device), ("dtype", potential.dtype), ("head", potential.head)):
            if wanted[key] is None:
                continue
            if not (_same_device(have, wanted[key]) if key == "device" else wanted[key] == have):
                raise ValueError(
                    f"this Potential is loaded with {key}={have}, not {wanted[key]}; a calculator never "
                    f"converts a Potential it shares with others. Load one with "
                    f"load_potential({potential.name!r}, {key}=...), or pass the name instead"
                )

    @classmethod
    def _check_names(cls, kwargs: dict, known: tuple[str, ...]) -> None:
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise TypeError(
                f"FacetCalculator got unknown option(s) {unknown}; known options are "
                f"{', '.join(cls.parameter_names)} (and ASE's {', '.join(cls._ase_keywords)})"
            )

    def set(self, **kwargs) -> dict:
        """Change settings; what a change affects is reloaded, and results are discarded."""
        self._check_names(kwargs, self.parameter_names)
        if not kwargs:  # ASE's __init__ calls set() before the settings are known
            return {}
        if "arch" in kwargs:  # a label the user sets stays; otherwise it follows the potential
            self._arch_given = bool(kwargs["arch"])
        if self.potential is not None:  # after __init__: what is not given stays as it is
            if "potential" in kwargs and "head" not in kwargs:
                kwargs["head"] = None  # another potential starts from its own default head
            kwargs = {**self.parameters, **kwargs}
            if self._shared and kwargs["potential"] == self.potential.name:
                kwargs["potential"] = self.potential
        potential = kwargs.get("potential", DEFAULT_POTENTIAL)
        if isinstance(potential, Potential):
            self._check_shared(potential, kwargs)
            new_potential = potential
        else:
            device = _resolve_device(kwargs.get("device") or "cpu")
            dtype = resolve_dtype(kwargs.get("dtype") or "float32")
            head = kwargs.get("head")
            old = self.potential
            same_file = old is not None and not self._shared and str(potential) == self.parameters["potential"]
            if same_file and _same_device(old.device, device) and old.dtype == dtype and head in (None, old.head):
                new_potential = old
            else:
                new_potential = load_potential(potential, dtype=dtype, device=device, head=head)
        self._shared = isinstance(potential, Potential)
        options = dispersion_options(kwargs.get("dispersion"))
        if options is None:
            self.dispersion = None
        elif self.dispersion is None or options != self.parameters.get("dispersion"):
            d3 = {k: v for k, v in options.items() if k != "method"}
            self.dispersion = D3Dispersion(**d3, device=new_potential.device)
        self.potential = new_potential
        name = new_potential.name if isinstance(potential, Potential) else str(potential)
        head = new_potential.head
        default_arch = name if head is None else f"{name}:{head}"
        settings = {
            "potential": name,
            "device": str(new_potential.device),
            "dtype": str(new_potential.dtype).removeprefix("torch."),
            "head": head,
            "dispersion": options,
            "arch": kwargs["arch"] if self._arch_given else default_arch,
        }
        changed = Calculator.set(self, **settings)
        self.device = new_potential.device
        numbers = new_potential.atomic_numbers
        lookup = np.full(max(numbers) + 1, -1, dtype=np.int64)
        lookup[numbers] = np.arange(len(numbers))
        self._species_of_z = lookup
        if changed:
            self.reset()
        return changed

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
            self.results["stress"] = full_3x3_to_voigt_6_stress(sigma)
        if self.dispersion is not None:
            for key, value in self.dispersion(atoms).items():
                self.results[key] = self.results[key] + value
            self.results["free_energy"] = self.results["energy"]
