"""ASE adapter: Atoms -> graph -> model (+ dispersion) -> results dict. Nothing else lives here."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .chunking import MemoryPlan, evaluate_in_chunks
from .committee import COMMITTEE_PROPERTIES, Committee, committee_statistics, is_committee, load_committee
from .dispersion import D3Dispersion, dispersion_options
from .graph import (
    DEFAULT_MAX_EDGES,
    AtomicGraph,
    CloseContacts,
    Structure,
    build_graph,
    check_neighbour_count,
    collate,
    group_by_edge_budget,
)
from .nn.committee import evaluate_committee
from .nn.forward import evaluate
from .options import resolve_device, resolve_dtype, same_device
from .potential import DEFAULT_POTENTIAL, Potential, load_potential, use_potential


class FacetCalculator(Calculator):
    """ASE calculator for facet_calc potentials.

    Args:
        potential: a shipped potential name (see ``facet_calc.list_potentials()``), a potential
            folder, or a loaded :class:`~facet_calc.potential.Potential` (shared, never moved
            or converted: a conflicting ``device`` or ``dtype`` is an error).
        device: ``"auto"`` (the default: CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``; for a loaded ``Potential``, the device it is on.
        dtype: ``"float32"`` (the default: MD, relaxations) or ``"float64"`` (phonons, finite
            differences); for a loaded ``Potential``, its dtype.
        head: the fidelity of a multi-fidelity potential (``"pbe"`` or ``"r2scan"`` for
            ``7net-mf-0-spline``; case-insensitive; default: the potential's default head).
        dispersion: ``"d3"`` adds DFT-D3(BJ) two-body dispersion with PBE parameters (needs
            ``pip install 'facet_calc[d3]'``); a dict sets options, e.g. ``{"method": "d3",
            "damping": "zero", "xc": "pbe", "cutoff": 31.75, "cn_cutoff": 21.17}`` (Angstrom).
            See :mod:`facet_calc.dispersion`.
        memory_check: estimate a CPU step's memory before allocating (against what was free
            when the potential was loaded); one that would not fit is evaluated in spatial
            chunks (:mod:`facet_calc.chunking`: exact, at the cost of each chunk's halo) sized
            to half the available memory, or refused when even a chunk would not fit.
        max_region_atoms: evaluate every structure in spatial chunks of at most this many
            atoms (owned + halo); ``None``: only where ``memory_check`` finds that the whole
            system would not fit.
        threads: CPU threads of one model call. ``"auto"`` (the default): one thread per
            :data:`ATOMS_PER_THREAD` atoms of the call, at most torch's setting
            (``torch.set_num_threads``, ``OMP_NUM_THREADS``), so a small system runs on one
            thread, where threads cannot pay and, on a busy machine, waiting for a descheduled
            one made an 8-atom call 30x slower; an int: that many; ``None``: torch's setting
            as it is. The count is set for the call only, in the calling thread, and restored
            after it (see :func:`torch_threads`).

    The settings live in ``self.parameters`` (and so in ``todict()``, trajectories and
    databases); ``calc.set(dtype="float64")`` and the like reload what they change. An unknown
    keyword is an error naming the known ones.

    Properties: ``energy`` and ``free_energy`` (eV), ``energies`` (eV per atom, summing to the
    energy), ``forces`` (eV/A), ``stress`` (eV/A^3, Voigt xx yy zz yz xz xy, ASE sign). All are
    computed in one pass; with dispersion, each is the sum of the model's and D3's.

    Committees: ``potential`` may be a committee folder (one holding ``committee.json``, as
    ``facet-calc distill`` writes), a list of potentials, or a loaded
    :class:`~facet_calc.committee.Committee`. All members are evaluated on one graph (the edge
    work shared); ``energy``, ``forces``, ``stress`` and ``energies`` are the members' mean, and
    ``calc.results`` also holds the spread (population std, ``ddof=0``): ``energy_std`` (eV),
    ``forces_std (n_atoms,)`` eV/A (per atom, the RMS distance of the members' force vectors
    from their mean), ``stress_std (6,)`` eV/A^3, and every member's values
    ``energy_members (K,)``, ``forces_members (K, n_atoms, 3)``, ``stress_members (K, 6)``.
    MACE's committee keys map as: ``energy_var = energy_std**2``, ``forces_comm =
    forces_members``, ``stress_var = stress_std**2``; MACE's per-model ``energies`` (K,) is
    our ``energy_members`` (our ``energies`` stays per atom). See :mod:`facet_calc.committee`.

    Example::

        >>> from ase.build import bulk
        >>> atoms = bulk("Si", "diamond", a=5.43)
        >>> atoms.calc = FacetCalculator("7net-0-spline")
        >>> atoms.get_potential_energy()  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    #: a chunk must hold at least this many atoms, or the step is refused as too large
    MIN_REGION_ATOMS = 2000

    #: the settings ``__init__`` and ``set()`` accept; ``arch`` is a label (janus-core keys its
    #: results by it) that defaults to the potential's name and head
    parameter_names = ("potential", "device", "dtype", "head", "dispersion", "memory_check", "max_region_atoms",
                       "threads", "arch")  # fmt: skip
    _ase_keywords = ("restart", "label", "atoms", "directory")

    def __init__(
        self,
        potential: str | Potential = DEFAULT_POTENTIAL,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        head: str | None = None,
        dispersion: str | dict[str, Any] | None = None,
        memory_check: bool = True,
        max_region_atoms: int | None = None,
        threads: int | str | None = "auto",
        **kwargs,
    ) -> None:
        self._check_names(kwargs, self.parameter_names[-1:] + self._ase_keywords)
        self.potential: Potential | None = None
        self.dispersion: D3Dispersion | None = None
        self.memory_plan: MemoryPlan | None = None
        self._lock = threading.RLock()
        self._shared = isinstance(potential, Potential)
        self._arch_given = False
        settings = {"potential": potential, "device": device, "dtype": dtype, "head": head, "dispersion": dispersion,
                    "memory_check": memory_check, "max_region_atoms": max_region_atoms,
                    "threads": threads}  # fmt: skip
        if "arch" in kwargs:
            settings["arch"] = kwargs.pop("arch")
        super().__init__(**kwargs)
        self.set(**settings)

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
        if is_committee(potential):
            if kwargs.get("head") is not None:
                raise ValueError("head applies to a multi-fidelity potential, not to a committee")
            new_potential = load_committee(potential, dtype=kwargs.get("dtype"), device=kwargs.get("device"))
        elif isinstance(potential, Potential):
            new_potential = use_potential(potential, kwargs.get("dtype"), kwargs.get("device"), kwargs.get("head"))
        else:
            device = resolve_device(kwargs.get("device"))
            dtype = resolve_dtype(kwargs.get("dtype"))
            head = kwargs.get("head")
            old = self.potential
            same_file = old is not None and not self._shared and str(potential) == self.parameters["potential"]
            if same_file and same_device(old.device, device) and old.dtype == dtype and head in (None, old.head):
                new_potential = old
            else:
                new_potential = load_potential(potential, dtype=dtype, device=device, head=head)
        self._shared = isinstance(potential, (Potential, Committee))
        committee = isinstance(new_potential, Committee)
        self.implemented_properties = type(self).implemented_properties + (COMMITTEE_PROPERTIES if committee else [])
        options = dispersion_options(kwargs.get("dispersion"))
        if options is None:
            self.dispersion = None
        elif self.dispersion is None or options != self.parameters.get("dispersion"):
            d3 = {k: v for k, v in options.items() if k != "method"}
            self.dispersion = D3Dispersion(**d3, device=new_potential.device)
        self.potential = new_potential
        if isinstance(potential, (Potential, Committee)):
            name = new_potential.name
        elif isinstance(potential, (list, tuple)):  # kept as names: parameters stay JSON
            name = [p.name if isinstance(p, Potential) else str(p) for p in potential]
        else:
            name = str(potential)
        head = new_potential.head
        default_arch = name if head is None else f"{name}:{head}"
        settings = {
            "potential": name,
            "device": str(new_potential.device),
            "dtype": str(new_potential.dtype).removeprefix("torch."),
            "head": head,
            "dispersion": options,
            "memory_check": bool(kwargs.get("memory_check", True)),
            "max_region_atoms": _positive_or_none(kwargs.get("max_region_atoms")),
            "threads": _threads_setting(kwargs.get("threads", "auto")),
            "arch": kwargs["arch"] if self._arch_given else default_arch,
        }
        changed = Calculator.set(self, **settings)
        self.device = new_potential.device
        if "potential" in changed or "device" in changed or "dtype" in changed or self.memory_plan is None:
            self.memory_plan = MemoryPlan(new_potential.model, min_region_atoms=self.MIN_REGION_ATOMS)
        self._warned_closeness = None  # the closest pair warned about (fraction of covalent radii)
        if changed:
            self.reset()
        return changed

    @property
    def dtype(self) -> torch.dtype:
        return self.potential.dtype

    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: reject unsupported elements at once."""
        self.potential.species.indices(atoms.numbers)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        if properties is None:
            properties = self.implemented_properties
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms  # read once: the graph and the volume come from the same structure
        graph, region = self._prepare(atoms, properties)
        self.results = self._evaluate([(atoms, graph)], need_gradients=True, max_region_atoms=region)[0]

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        """ASE's ``get_property``, one thread at a time: a calculator shared between threads
        serialises their calls, so each gets the results of its own structure (for parallel
        speed, give each thread its own calculator sharing one loaded ``Potential``)."""
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

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
        prepared: list[tuple[Atoms, AtomicGraph, int | None]] = []
        for k, atoms in enumerate(images):
            if not isinstance(atoms, Atoms):
                raise TypeError(f"structure {k}: expected ase.Atoms, got {type(atoms).__name__}")
            try:
                prepared.append((atoms, *self._prepare(atoms, properties)))
            except (ValueError, PropertyNotImplementedError) as err:
                raise type(err)(f"structure {k}: {err}") from err
        results: list[dict[str, Any]] = []
        start = 0
        # runs of structures that fit whole are batched by edges; one too large for memory is
        # evaluated alone, in spatial chunks
        for end in [k for k, (_, _, region) in enumerate(prepared) if region is not None] + [len(prepared)]:
            run = [(atoms, graph) for atoms, graph, _ in prepared[start:end]]
            for group in group_by_edge_budget([graph.n_edges for _, graph in run], max_edges):
                results += self._evaluate([run[k] for k in group], need_gradients)
            if end < len(prepared):
                atoms, graph, region = prepared[end]
                results += self._evaluate([(atoms, graph)], need_gradients, max_region_atoms=region)
            start = end + 1
        return results

    def _warn_close_pairs(self, message: CloseContacts) -> None:
        """Warn about close pairs once, and again only for a structure whose closest pair is
        markedly closer (:data:`CLOSE_PAIR_REWARN` of the closest warned before): an MD run
        would repeat the warning every step, yet a later, far worse structure must not pass
        unwarned."""
        if self._warned_closeness is None or message.fraction < CLOSE_PAIR_REWARN * self._warned_closeness:
            self._warned_closeness = message.fraction
            warnings.warn(message, UserWarning, stacklevel=4)

    def _prepare(self, atoms: Atoms, properties: list[str]) -> tuple[AtomicGraph, int | None]:
        """The graph of one structure and its chunk bound (``None``: in one piece); errors for
        what cannot be computed."""
        if "stress" in properties and atoms.cell.rank != 3:
            raise PropertyNotImplementedError(
                "stress needs a cell with three independent lattice vectors (a volume to divide "
                "by); this system has none, so stress is undefined. Set a cell or ask for "
                "energy and forces only."
            )
        potential = self.potential
        structure = Structure.from_atoms(atoms)
        potential.species.indices(structure.numbers)  # unknown elements first: the clearest error
        estimated_edges = check_neighbour_count(structure, potential.cutoff)  # refuses unphysical geometry
        region = self.parameters["max_region_atoms"]
        if self.parameters["memory_check"] and self.device.type == "cpu":
            fitting = self.memory_plan.region_atoms(len(structure), estimated_edges, potential.cutoff)
            if fitting is not None:
                region = fitting if region is None else min(region, fitting)
        close = []
        graph = build_graph(structure, potential.cutoff, potential.species, checked=True, on_close_pairs=close.append)
        if close:
            self._warn_close_pairs(close[0])
        return graph, region

    def _evaluate(
        self, items: list[tuple[Atoms, AtomicGraph]], need_gradients: bool, max_region_atoms: int | None = None
    ) -> list[dict[str, Any]]:
        """One model call for the structures in ``items`` (or, given ``max_region_atoms``, one
        structure in spatial chunks of at most that many atoms); their results dicts."""
        has_cell = [atoms.cell.rank == 3 for atoms, _ in items]
        graph = collate([graph for _, graph in items])
        offsets = graph.atom_offsets
        if graph.n_atoms == 0:  # only empty structures: nothing for the model to do
            empty = {"energy": 0.0, "free_energy": 0.0, "energies": np.zeros(0)}
            if need_gradients:
                empty["forces"] = np.zeros((0, 3))
            return [dict(empty, stress=np.zeros(6)) if c and need_gradients else dict(empty) for c in has_cell]
        model = self.potential.model
        graph = graph.to(self.device, model.dtype)
        if isinstance(self.potential, Committee):
            return self._evaluate_committee(items, graph, need_gradients, has_cell, max_region_atoms)
        with torch_threads(self._threads_for(graph.n_atoms)):
            if max_region_atoms is not None:  # the exact chunked path for a system too large at once
                out = evaluate_in_chunks(
                    model, graph, max_region_atoms,
                    compute_forces=need_gradients, compute_virial=need_gradients and has_cell[0],
                )  # fmt: skip
            else:
                out = evaluate(model, graph, compute_forces=need_gradients,
                               compute_virial=need_gradients and any(has_cell))  # fmt: skip
        energy = out["energy"].double().cpu().numpy()
        energies = out["energies"].double().cpu().numpy()
        forces = None if out["forces"] is None else out["forces"].double().cpu().numpy()
        virial = None if out["virial"] is None else out["virial"].double().cpu().numpy()
        results = []
        for k, (atoms, _) in enumerate(items):
            atom_range = slice(offsets[k], offsets[k + 1])
            result = {"energy": float(energy[k]), "free_energy": float(energy[k]), "energies": energies[atom_range]}
            if forces is not None:
                result["forces"] = forces[atom_range]
                if has_cell[k]:
                    result["stress"] = full_3x3_to_voigt_6_stress(virial[k] / atoms.get_volume())
            self._add_dispersion(atoms, result)
            results.append(result)
        return results

    def _evaluate_committee(
        self, items: list[tuple[Atoms, AtomicGraph]], graph: AtomicGraph, need_gradients: bool,
        has_cell: list[bool], max_region_atoms: int | None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """:meth:`_evaluate` for a committee: all members on one graph, mean and spread."""
        if max_region_atoms is not None:
            raise ValueError(
                f"a committee is evaluated whole, not in spatial chunks, and this system needs chunks of "
                f"{max_region_atoms} atoms to fit in memory; use one member (a potential folder) for it"
            )
        with torch_threads(self._threads_for(graph.n_atoms)):
            out = evaluate_committee(self.potential.models, graph, compute_forces=need_gradients,
                                     compute_virial=need_gradients and any(has_cell))  # fmt: skip
        energy = out["energy"].double().cpu().numpy()  # (K, G)
        energies = out["energies"].double().cpu().numpy()  # (K, N)
        forces = None if out["forces"] is None else out["forces"].double().cpu().numpy()
        virial = None if out["virial"] is None else out["virial"].double().cpu().numpy()
        offsets = graph.atom_offsets
        results = []
        for k, (atoms, _) in enumerate(items):
            atom_range = slice(offsets[k], offsets[k + 1])
            stress = None
            if forces is not None and has_cell[k]:
                volume = atoms.get_volume()
                stress = np.stack([full_3x3_to_voigt_6_stress(w / volume) for w in virial[:, k]])
            result = committee_statistics(
                energy[:, k], None if forces is None else forces[:, atom_range], stress
            )
            result["free_energy"] = result["energy"]
            result["energies"] = energies[:, atom_range].mean(axis=0)
            self._add_dispersion(atoms, result)  # the same for every member: the mean moves, the spread not
            results.append(result)
        return results

    def _add_dispersion(self, atoms: Atoms, result: dict[str, Any]) -> None:
        """Compose D3 in (when enabled): its terms added to the model's ``result``, in place."""
        if self.dispersion is None:
            return
        for key, value in self.dispersion(atoms).items():
            if key in result:
                result[key] = result[key] + value
        result["free_energy"] = result["energy"]

    def _threads_for(self, n_atoms: int) -> int | None:
        """CPU threads for a model call on ``n_atoms`` atoms; ``None``: torch's setting as is."""
        setting = self.parameters["threads"]
        if self.device.type != "cpu" or setting is None:
            return None
        if setting == "auto":
            return min(torch.get_num_threads(), max(1, n_atoms // ATOMS_PER_THREAD))
        return setting


#: under ``threads="auto"``, one CPU thread per this many atoms of a model call. On an idle
#: 2-core machine 216-atom Si ran 1.7x faster on 2 threads than on one (README: 65 vs 113 ms);
#: beside a busy process 2 threads made 8- and 64-atom Si 5.7x and 13x slower than one
#: (``benchmarks/contention.py --thread-default``), where "auto" stays within 1.2x of one thread
ATOMS_PER_THREAD = 100
#: a close-pair warning is repeated for a structure whose closest pair (as a fraction of the
#: covalent radii sum) is below this fraction of the closest one warned about before
CLOSE_PAIR_REWARN = 0.9

_threads_lock = threading.Lock()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``n`` for the block and restored after it (``None``: left
    alone). torch's count is per calling thread (OpenMP's), plus a process-wide default that
    threads started meanwhile inherit; both are restored, so nothing outlives the block."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    with _threads_lock:  # the process-wide default: one save and restore at a time
        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _threads_lock:
            torch.set_num_threads(before)


def _threads_setting(value) -> int | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"threads must be 'auto', a positive number of threads or None, got {value!r}")
    return int(value)


def _positive_or_none(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"max_region_atoms must be a positive number of atoms or None, got {value!r}")
    return int(value)
