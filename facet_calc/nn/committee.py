"""A committee of models evaluated on one graph: the edge work shared, every member's outputs kept.

The members of a committee (students distilled with different seeds) see the same structure, so
what depends on the edges alone is computed once for all of them: the edge lengths, the
spherical harmonics (per distinct set of orders), and the :class:`EdgeContext` (sortedness, CSR
offsets, the spline basis of each knot grid). Each member then runs its own layers; the forces
of member ``k`` are the gradient of its energy alone (one backward per member through the shared
part, which is kept). Members of one family config that the family can stack (Facet students:
:mod:`~facet_calc.nn.families.facet.stacked`) run as one batched evaluation instead, with one
backward pass for all: one kernel pass per layer for all members (their channels side by side;
the edge loop, coupling and spline rows shared) and the edge geometry computed once. That saves
the fixed cost of a step (each member's ~100 small operations and autograd nodes) and the
kernel's per-edge overhead, not the members' own work (their features, mixers and gradients),
so it pays on small graphs: measured with three small students on one CPU thread (model work,
``benchmarks/committee_cost.py``), stacked/shared per step is 8.0/13.2 ms at 64 Si atoms (1792
edges; one member 4.9 ms), 43.9/47.4 ms at 512 atoms (14336 edges; 17.5) and 80.0/80.3 ms at
1000 atoms (28000 edges; 29.6).
``how`` selects: ``"auto"`` (stacked up to :data:`STACK_MAX_EDGES` edges, where possible),
``"stacked"``, ``"shared"``. :func:`evaluate_members` is the plain reference: each member through
:func:`~facet_calc.nn.forward.evaluate` on its own; tests check the others against it.

    out = evaluate_committee([m0, m1, m2], graph)
    out["forces"].shape        # (K, n_atoms, 3)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .blocks.fast_convolution import EdgeContext
from .families.facet.stacked import StackedFacet, stackable
from .forward import edge_forces_and_virial, evaluate

if TYPE_CHECKING:
    from ..graph import AtomicGraph


def _harmonics_key(model: torch.nn.Module) -> tuple:
    sh = model.spherical_harmonics
    return (str(getattr(sh, "irreps_out", id(sh))), getattr(sh, "normalize", None), getattr(sh, "normalization", None))


def check_members(models: Sequence[torch.nn.Module]) -> None:
    """Members must share cutoff, elements, dtype and device (one graph serves them all)."""
    if not models:
        raise ValueError("a committee needs at least one member")
    first = models[0]
    for k, model in enumerate(models[1:], start=1):
        for what, a, b in (
            ("cutoff", first.cutoff, model.cutoff),
            ("atomic_numbers", list(first.config["atomic_numbers"]), list(model.config["atomic_numbers"])),
            ("dtype", first.dtype, model.dtype),
            ("device", first.device, model.device),
        ):
            if a != b:
                raise ValueError(
                    f"committee member {k} has {what} {b}, member 0 has {a}; the members of a committee "
                    "must share cutoff, elements, dtype and device"
                )


def committee_energies(
    models: Sequence[torch.nn.Module],
    species: torch.Tensor,
    edge_vec: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
) -> list[torch.Tensor]:
    """Per-atom energies of every member, K tensors ``(n_atoms,)`` eV: the forward of
    :class:`~facet_calc.nn.contract.EnergyModel` with the edge work done once. Kept apart (not
    stacked) so that a member's backward pass never runs through the others' graphs."""
    r = torch.linalg.norm(edge_vec, dim=-1)
    edges = EdgeContext(species.shape[0], senders, receivers, r)
    harmonics: dict[tuple, torch.Tensor] = {}
    out = []
    for model in models:
        key = _harmonics_key(model)
        if key not in harmonics:
            harmonics[key] = model.spherical_harmonics(edge_vec)
        out.append(model.energies_from_edges(species, harmonics[key], r, senders, receivers, edges))
    return out


#: ``how="auto"`` stacks the members of graphs with at most this many edges (see module docstring)
STACK_MAX_EDGES = 16384

#: the stack of the last committee evaluated, by its first member (rebuilt when stale)
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stack_of(models: Sequence[torch.nn.Module]) -> StackedFacet:
    stack = _STACKS.get(models[0])
    if stack is None or not stack.is_current(models):
        stack = _STACKS[models[0]] = StackedFacet(models)
    return stack


def evaluate_committee(
    models: Sequence[torch.nn.Module],
    graph: AtomicGraph,
    compute_forces: bool = True,
    compute_virial: bool = True,
    how: str = "auto",
) -> dict[str, torch.Tensor | None]:
    """Every member's ``energy (K, n_graphs)`` eV, ``energies (K, n_atoms)`` eV, ``forces (K,
    n_atoms, 3)`` eV/A and ``virial (K, n_graphs, 3, 3)`` eV (None unless asked for); detached.

    ``how``: ``"stacked"`` (one batched evaluation; Facet members of one config), ``"shared"``
    (member by member on the shared edge work), ``"auto"`` (stacked where possible, for graphs
    of at most :data:`STACK_MAX_EDGES` edges)."""
    check_members(models)
    if how not in ("auto", "stacked", "shared"):
        raise ValueError(f"how must be 'auto', 'stacked' or 'shared', got {how!r}")
    can_stack = stackable(models)
    if how == "stacked" and not can_stack:
        raise ValueError("how='stacked' needs two or more Facet models of one config on a fast backend")
    dtype = models[0].dtype
    need_grad = compute_forces or compute_virial
    n_graphs, n_members = graph.n_graphs, len(models)
    if how == "stacked" or (how == "auto" and can_stack and graph.n_edges <= STACK_MAX_EDGES):
        stack = _stack_of(models)
        vec = graph.edge_vectors.detach().to(dtype)
        # each member its own copy of the edge vectors: one backward gives every member's gradient
        edge_vecs = vec.unsqueeze(0).repeat(n_members, 1, 1).requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            stacked = stack.energies(graph.species, edge_vecs, graph.senders, graph.receivers)
            grads = []
            if need_grad:
                (g,) = torch.autograd.grad(stacked.sum(), [edge_vecs], materialize_grads=True)
                grads = list(g)
        energies = stacked.detach()
        edge_vec = vec
    else:
        edge_vec = graph.edge_vectors.detach().to(dtype).requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            per_member = committee_energies(models, graph.species, edge_vec, graph.senders, graph.receivers)
            grads = []
            if need_grad:
                for k, e in enumerate(per_member):  # member k's forces: the gradient of its energy alone
                    (g,) = torch.autograd.grad(e.sum(), [edge_vec], retain_graph=k < n_members - 1,
                                               materialize_grads=True)  # fmt: skip
                    grads.append(g)
        energies = torch.stack([e.detach() for e in per_member])
    energy = energies.new_zeros(n_members, n_graphs).index_add(1, graph.batch, energies)
    out = {"energy": energy, "energies": energies, "forces": None, "virial": None}
    if need_grad:
        edge_graph = None if n_graphs == 1 else graph.batch[graph.receivers]
        scattered = [
            edge_forces_and_virial(
                g, edge_vec, graph.senders, graph.receivers, graph.n_atoms, edge_graph, n_graphs,
                compute_forces=compute_forces, compute_virial=compute_virial,
            )  # fmt: skip
            for g in grads
        ]
        if compute_forces:
            out["forces"] = torch.stack([s["forces"] for s in scattered]).detach()
        if compute_virial:
            out["virial"] = torch.stack([s["virial"] for s in scattered]).detach()
    return out


def evaluate_members(
    models: Sequence[torch.nn.Module], graph: AtomicGraph, compute_forces: bool = True, compute_virial: bool = True
) -> dict[str, torch.Tensor | None]:
    """The plain reference of :func:`evaluate_committee`: each member evaluated on its own."""
    outs = [evaluate(m, graph, compute_forces=compute_forces, compute_virial=compute_virial) for m in models]
    return {
        key: None if outs[0][key] is None else torch.stack([o[key] for o in outs])
        for key in ("energy", "energies", "forces", "virial")
    }
