"""torch-sim adapter: a batched ``SimState`` -> one disjoint graph -> energies, forces, stresses.

torch-sim (``pip install "facet_calc[torchsim]"``) runs relaxations and MD of many systems at
once; :class:`FacetTorchSimModel` is its ``ModelInterface`` for any facet_calc potential. All
systems of a state are evaluated in one graph, with the same numbers as ``FacetCalculator``
gives structure by structure (both build :class:`~facet_calc.graph.AtomicGraph` and call
:func:`facet_calc.nn.forward.evaluate`).

Example::

    >>> import torch_sim as ts                                        # doctest: +SKIP
    >>> from facet_calc.torchsim import FacetTorchSimModel
    >>> model = FacetTorchSimModel("7net-0-spline", dtype=torch.float64)
    >>> state = ts.io.atoms_to_state([bulk("Si", "diamond", a=5.43), bulk("Cu", "fcc", a=3.6)],
    ...                              model.device, model.dtype)
    >>> out = model(state)   # energy (2,), forces (3, 3), stress (2, 3, 3)

A committee (a committee folder, a list of potentials, or a loaded
:class:`~facet_calc.committee.Committee`) gives the members' mean as ``energy``/``forces``/
``stress`` and their spread (population standard deviations, as ``FacetCalculator``'s) as
``energy_std (n_systems,)``, ``forces_std (n_atoms,)`` (per atom, the root of the summed
variances of the three components) and ``stress_std (n_systems, 3, 3)``: uncertainty for every
system of a batched run.

Works with torch-sim 0.3 (the newest for Python 3.11; ``state.pbc`` a bool) and the current
0.6 (Python >= 3.12; ``state.pbc`` a ``(3,)`` tensor). The neighbour lists are built on the CPU
(vesin) from float64 positions, as for the ASE calculator.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'facet_calc.torchsim needs torch-sim: pip install "facet_calc[torchsim]" '
        '(or pip install torch-sim-atomistic "torch==<your torch version>")'
    ) from err

from .committee import Committee, is_committee, load_committee
from .graph import DEFAULT_MAX_EDGES, Structure, build_graph, collate, group_by_edge_budget
from .nn.committee import evaluate_committee
from .nn.forward import evaluate
from .potential import DEFAULT_POTENTIAL, Potential, use_potential


class FacetTorchSimModel(ModelInterface):
    """torch-sim ``ModelInterface`` of a facet_calc potential.

    Args:
        potential: a shipped potential name, a potential folder, or a loaded
            :class:`~facet_calc.potential.Potential` (used as it is: a conflicting ``device``
            or ``dtype`` is an error, as for ``FacetCalculator``); or a committee (see the
            module docstring).
        device: ``"auto"`` (the default: CUDA when available), ``"cpu"``, ``"cuda"`` or a
            ``torch.device``.
        dtype: ``torch.float32`` (the default; MD, relaxations) or ``torch.float64``.
        compute_forces, compute_stress: which gradients ``forward`` returns.
        max_edges: edge budget of one model call; a state with more is evaluated in batches.

    ``forward(state)`` returns ``energy (n_systems,)`` eV, ``forces (n_atoms, 3)`` eV/A and
    ``stress (n_systems, 3, 3)`` eV/A^3 with ASE's sign (tensile positive), detached, in the
    model's dtype on its device. A system whose cell has no volume (a molecule in torch-sim's
    zero cell) has no stress: its rows are NaN, never a made-up number. A committee adds
    ``energy_std``, ``forces_std`` and ``stress_std``.
    """

    def __init__(
        self,
        potential: str | Potential = DEFAULT_POTENTIAL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        compute_forces: bool = True,
        compute_stress: bool = True,
        max_edges: int = DEFAULT_MAX_EDGES,
    ) -> None:
        super().__init__()
        if is_committee(potential):
            potential = load_committee(potential, dtype=dtype, device=device)
            self.members = torch.nn.ModuleList(potential.models)  # registered: .to() and parameters() see them
        else:
            potential = use_potential(potential, dtype=dtype, device=device)
        self.potential = potential
        self.model = potential.model  # registered, so that .to() and parameters() see it
        self._device = potential.device
        self._dtype = potential.dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        self.max_edges = int(max_edges)

    @ModelInterface.compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        self._compute_stress = bool(value)

    @ModelInterface.compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        self._compute_forces = bool(value)

    def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
        """Energies, forces and stresses of every system of ``state`` (a ``SimState`` or a dict
        of its fields), in model calls of at most ``max_edges`` edges."""
        if isinstance(state, dict):
            from torch_sim.state import SimState

            state = SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        positions = state.positions.detach().to("cpu", torch.float64).numpy()
        cells = state.row_vector_cell.detach().to("cpu", torch.float64).numpy()  # (n_systems, 3, 3) rows
        numbers = state.atomic_numbers.detach().cpu().numpy()
        system_idx = state.system_idx.detach().cpu().numpy()
        pbc = np.broadcast_to(np.asarray(torch.as_tensor(state.pbc).cpu(), dtype=bool), (3,))
        n_systems = cells.shape[0]
        if n_systems and np.any(np.diff(system_idx) < 0):
            raise ValueError("state.system_idx must be sorted (atoms of each system contiguous), as torch-sim keeps it")
        bounds = np.searchsorted(system_idx, np.arange(n_systems + 1))
        potential = self.potential
        graphs = []
        for k in range(n_systems):
            atoms = slice(bounds[k], bounds[k + 1])
            structure = Structure.from_arrays(numbers[atoms], positions[atoms], cells[k], pbc)
            try:
                graphs.append(build_graph(structure, potential.cutoff, potential.species))
            except ValueError as err:
                raise ValueError(f"system {k}: {err}") from err
        if not graphs:
            raise ValueError("the state holds no systems")
        need_gradients = self._compute_forces or self._compute_stress
        # systems in batches of a bounded edge count (as the calculator's calculate_many), so
        # memory stays bounded however many systems a state holds
        committee = isinstance(potential, Committee)
        parts = []
        for group in group_by_edge_budget([g.n_edges for g in graphs], self.max_edges):
            graph = collate([graphs[k] for k in group]).to(self._device, self._dtype)
            if committee:  # every member's outputs, with a leading member axis
                out = evaluate_committee(potential.models, graph, compute_forces=need_gradients,
                                         compute_virial=self._compute_stress)  # fmt: skip
            else:
                out = evaluate(self.model, graph, compute_forces=need_gradients, compute_virial=self._compute_stress)
            parts.append(out)
        axis = 1 if committee else 0  # systems and atoms run along this axis
        out = {key: None if parts[0][key] is None else torch.cat([p[key] for p in parts], dim=axis) for key in parts[0]}
        results = {"energy": out["energy"].to(self._dtype)}
        if self._compute_forces:
            results["forces"] = out["forces"].to(self._dtype)
        if self._compute_stress:
            volume = torch.as_tensor(np.abs(np.linalg.det(cells)), dtype=self._dtype, device=self._device)
            has_volume = torch.as_tensor(cells.any(axis=2).all(axis=1), device=self._device)  # ASE's cell.rank == 3
            volume = torch.where(has_volume, volume, torch.full_like(volume, float("nan")))
            results["stress"] = out["virial"].to(self._dtype) / volume[:, None, None]
        if committee:  # members -> mean and population standard deviation (ddof 0)
            for key in list(results):
                members = results[key]
                results[key] = members.mean(dim=0)
                spread = members.std(dim=0, correction=0)
                results[f"{key}_std"] = spread.square().sum(dim=-1).sqrt() if key == "forces" else spread
        return results
