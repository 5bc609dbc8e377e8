"""ASE adapter: Atoms -> graph -> model (+ dispersion) -> results dict. Nothing else lives here."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .batching import DEFAULT_MAX_EDGES, evaluate_batch, join_graphs, species_indices, species_lookup
from .chunking import evaluate_in_chunks
from .dispersion import D3Dispersion, dispersion_options
from .graph import Graph, build_graph, check_distances, check_neighbour_count
from .potential import DEFAULT_POTENTIAL, Potential, load_potential, resolve_dtype


def available_memory_bytes() -> int | None:
    """Memory this process may still take: the smaller of the kernel's MemAvailable and the room
    left under a cgroup (container) limit; ``None`` where neither can be read."""
    limits = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = int(handle.read().strip())
        if limit != "max":
            limits.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def estimate_step_bytes(model, n_atoms: int, n_edges: float) -> float:
    """Peak memory of one energy + forces + stress step, estimated before anything is allocated.

    Measured with ``benchmarks/memory_scaling.py`` for 7net-0-spline on the CPU in float32 (after
    the changes of issue 12): 54-61 KB per atom at 64,000-125,000 atoms in a dilute gas and in a
    crystal alike, about five node tensors as wide as the widest tensor-product output (3136
    entries), the per-edge part being small since the per-edge couplings are no longer kept.
    The estimate is five such tensors per atom plus 600 bytes per edge (neighbour list in
    float64, spherical harmonics, spline coefficients), scaled by the model's width and dtype;
    it overestimates the measured peak by about a quarter."""
    itemsize = torch.finfo(model.scale.dtype).bits // 8
    widest = max(int(layer.convolution.irreps_out.dim) for layer in model.layers)
    per_atom = 5 * widest * itemsize
    per_edge = 100 * itemsize + 200
    return n_atoms * per_atom + n_edges * per_edge


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
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
    #: estimate a CPU step's memory before allocating; one that would not fit is evaluated in
    #: spatial chunks (:mod:`facet_calc.chunking`: exact, at the cost of each chunk's halo)
    #: sized to half the available memory, or refused when even a chunk would not fit
    memory_check = True
    #: evaluate every structure in spatial chunks of at most this many atoms (owned + halo);
    #: ``None``: only where ``memory_check`` finds that the whole system would not fit
    max_region_atoms: int | None = None
    #: a chunk must hold at least this many atoms, or the step is refused as too large
    MIN_REGION_ATOMS = 2000

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
        self._species_of_z = species_lookup(new_potential)
        self._warned_close_pairs = False
        if changed:
            self.reset()
        return changed

    @property
    def dtype(self) -> torch.dtype:
        return self.potential.dtype

    def species_indices(self, numbers: np.ndarray) -> np.ndarray:
        """Map atomic numbers to the model's species indices; ``ValueError`` for unknown ones."""
        return species_indices(self.potential, self._species_of_z, numbers)

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
        species, graph, region = self._prepare(self.atoms, properties)
        self.results = self._evaluate([(self.atoms, species, graph)], need_gradients=True, max_region_atoms=region)[0]

    def calculate_many(
        self,
        images: Iterable[Atoms],
        properties: list[str] | None = None,
        max_edges: int = DEFAULT_MAX_EDGES,
    ) -> list[dict[str, Any]]:
        """Evaluate many structures in batched graphs: one model call per batch.

        Structures are joined into disjoint graphs of at most ``max_edges`` directed edges
        each (a larger structure forms a batch of its own), so memory stays bounded however
        many structures are given. For screening, EOS scans, strain sets and phonon
        displacements: on small cells this is many times faster than one call per structure.

        Args:
            images: ASE Atoms (not modified; their attached calculators are ignored).
            properties: as for ``calculate``; naming ``stress`` makes a structure without a
                volume an error. ``None``: every property, stress where the cell has full
                rank. Asking only for energies (``energy``, ``free_energy``, ``energies``)
                skips the gradients; otherwise every result of ``calc.results`` is computed.
            max_edges: edge budget of one batch.

        Returns one dict per structure, in order, with the keys, shapes and units of
        ``calc.results`` after ``calc.calculate(atoms)`` (``stress`` only for cells of full
        rank). Errors name the structure's index.

        Example::

            >>> frames = [bulk("Si", "diamond", a=a) for a in (5.3, 5.4, 5.5)]
            >>> energies = [r["energy"] for r in calc.calculate_many(frames)]  # doctest: +SKIP
        """
        if properties is None:  # everything that applies: stress only where there is a volume
            properties = [p for p in self.implemented_properties if p != "stress"]
        unknown = sorted(set(properties) - set(self.implemented_properties))
        if unknown:
            raise PropertyNotImplementedError(
                f"unknown properties {unknown}; FacetCalculator computes {self.implemented_properties}"
            )
        need_gradients = not set(properties) <= {"energy", "free_energy", "energies"}
        results: list[dict[str, Any]] = []
        pending: list[tuple[Atoms, np.ndarray, Graph]] = []
        pending_edges = 0
        for k, atoms in enumerate(images):
            if not isinstance(atoms, Atoms):
                raise TypeError(f"structure {k}: expected ase.Atoms, got {type(atoms).__name__}")
            try:
                species, graph, region = self._prepare(atoms, properties)
            except (ValueError, PropertyNotImplementedError) as err:
                raise type(err)(f"structure {k}: {err}") from err
            if region is not None:  # too large for one call: alone, in spatial chunks
                results += self._evaluate(pending, need_gradients) if pending else []
                pending, pending_edges = [], 0
                results += self._evaluate([(atoms, species, graph)], need_gradients, max_region_atoms=region)
                continue
            n_edges = len(graph.senders)
            if pending and pending_edges + n_edges > max_edges:
                results += self._evaluate(pending, need_gradients)
                pending, pending_edges = [], 0
            pending.append((atoms, species, graph))
            pending_edges += n_edges
        if pending:
            results += self._evaluate(pending, need_gradients)
        return results

    def _prepare(self, atoms: Atoms, properties: list[str]) -> tuple[np.ndarray, Graph, int | None]:
        """Species indices, graph and chunk bound (``None``: in one piece) of one structure;
        errors for what cannot be computed."""
        species = self.species_indices(atoms.numbers)
        if "stress" in properties and atoms.cell.rank != 3:
            raise PropertyNotImplementedError(
                "stress needs a cell with three independent lattice vectors (a volume to divide "
                "by); this system has none, so stress is undefined. Set a cell or ask for "
                "energy and forces only."
            )
        cutoff = self.potential.cutoff
        estimated_edges = check_neighbour_count(atoms, cutoff)  # refuses unphysical geometry
        region = self.max_region_atoms
        if self.memory_check and self.device.type == "cpu" and len(atoms):
            needed = estimate_step_bytes(self.potential.model, len(atoms), estimated_edges)
            free = available_memory_bytes()
            if free is not None and needed > free:
                # chunks that fill half of what is free (the graph and the results need the rest)
                fitting = int(0.5 * free / (needed / len(atoms)))
                if fitting < self.MIN_REGION_ATOMS:
                    raise MemoryError(
                        f"this step would need about {needed / 2**30:.1f} GiB ({len(atoms)} atoms, about "
                        f"{estimated_edges:.3g} edges within {cutoff:g} A) but only {free / 2**30:.1f} GiB is "
                        f"available, too little even for spatial chunks of {self.MIN_REGION_ATOMS} atoms; use "
                        "a smaller system, or set calc.memory_check = False to try anyway"
                    )
                region = fitting if region is None else min(region, fitting)
        graph = build_graph(atoms, cutoff, checked=True)
        close = check_distances(graph, atoms.numbers)  # raises for coincident atoms
        if close is not None and not self._warned_close_pairs:
            self._warned_close_pairs = True  # once per calculator: an MD run would repeat it every step
            warnings.warn(close, UserWarning, stacklevel=2)
        return species, graph, region

    def _evaluate(
        self, items: list[tuple[Atoms, np.ndarray, Graph]], need_gradients: bool, max_region_atoms: int | None = None
    ) -> list[dict[str, Any]]:
        """One model call for the structures in ``items`` (or, given ``max_region_atoms``, one
        structure in spatial chunks of at most that many atoms); their results dicts."""
        has_cell = [atoms.cell.rank == 3 for atoms, _, _ in items]
        offsets = np.cumsum([0] + [len(graph.positions) for _, _, graph in items])
        if offsets[-1] == 0:  # only empty structures: nothing for the model to do
            empty = {"energy": 0.0, "free_energy": 0.0, "energies": np.zeros(0)}
            if need_gradients:
                empty["forces"] = np.zeros((0, 3))
            return [dict(empty, stress=np.zeros(6)) if c and need_gradients else dict(empty) for c in has_cell]
        if max_region_atoms is not None:  # the exact chunked path for a system too large at once
            (_, species, graph), = items
            out = evaluate_in_chunks(
                self.potential, species, graph, max_region_atoms,
                compute_forces=need_gradients, compute_virial=need_gradients and has_cell[0],
            )  # fmt: skip
        else:
            out = evaluate_batch(
                self.potential,
                np.concatenate([species for _, species, _ in items]),
                join_graphs([graph for _, _, graph in items]),
                compute_forces=need_gradients,
                compute_virial=need_gradients and any(has_cell),
            )
        energy = out["energy"].double().cpu().numpy()
        energies = out["energies"].double().cpu().numpy()
        forces = None if out["forces"] is None else out["forces"].double().cpu().numpy()
        virial = None if out["virial"] is None else out["virial"].double().cpu().numpy()
        results = []
        for k, (atoms, _, _) in enumerate(items):
            atom_range = slice(offsets[k], offsets[k + 1])
            result = {"energy": float(energy[k]), "free_energy": float(energy[k]), "energies": energies[atom_range]}
            if forces is not None:
                result["forces"] = forces[atom_range]
                if has_cell[k]:
                    result["stress"] = full_3x3_to_voigt_6_stress(virial[k] / atoms.get_volume())
            if self.dispersion is not None:  # composed in: the model's terms plus D3's
                for key, value in self.dispersion(atoms).items():
                    if key in result:
                        result[key] = result[key] + value
                result["free_energy"] = result["energy"]
            results.append(result)
        return results
