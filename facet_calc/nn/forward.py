"""Energies, forces and virials of an :class:`~facet_calc.graph.AtomicGraph` by autograd.

One code path for inference and training (as NequIP's ``ForceStressOutput``): the model maps
edge vectors to per-atom energies, the gradient with respect to the edge vectors ``g_e`` is
taken once, and :func:`edge_forces_and_virial` scatters it. The same scatter serves D3
(``facet_calc.dispersion``) and the LAMMPS bridge, so a sign or symmetrisation is written once.

:func:`evaluate_by_strain` is the plain reference path (gradients with respect to positions
and a symmetric strain); tests check that both agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # nn/ never imports ASE at run time; the graph type is only named here
    from ..graph import AtomicGraph


def edge_forces_and_virial(
    grad: torch.Tensor,
    edge_vectors: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    n_atoms: int,
    edge_graph: torch.Tensor | None = None,
    n_graphs: int = 1,
    compute_forces: bool = True,
    compute_virial: bool = True,
    per_atom_virial: bool = False,
) -> dict[str, torch.Tensor | None]:
    """Forces and virials from ``grad = dE/d(edge_vectors)``.

    An energy depends on positions through ``r_e = pos[sender] - pos[receiver] + ...``, so
    ``dE/dpos[sender] += g_e`` and ``dE/dpos[receiver] -= g_e``; the virial is
    ``W = dE/d(strain) = sym(sum_e g_e (x) r_e)``.

    Args:
        grad, edge_vectors: ``(n_edges, 3)``.
        senders, receivers: ``(n_edges,)`` int64.
        edge_graph: ``(n_edges,)`` structure index of each edge (``None``: one structure).
        per_atom_virial: also give each atom half of the virial of each of its edges.

    Returns ``forces (n_atoms, 3)`` eV/A, ``virial (n_graphs, 3, 3)`` eV and ``atom_virial
    (n_atoms, 3, 3)`` eV, each ``None`` unless asked for.
    """
    forces = virial = atom_virial = None
    if compute_forces:
        forces = grad.new_zeros((n_atoms, 3)).index_add(0, receivers, grad).index_add(0, senders, -grad)
    if compute_virial or per_atom_virial:
        vec = edge_vectors.detach()
        if n_graphs == 1 and not per_atom_virial:  # one matmul, no (E, 3, 3) intermediate
            w = (grad.transpose(0, 1) @ vec).unsqueeze(0)
        else:
            per_edge = grad.unsqueeze(2) * vec.unsqueeze(1)  # (E, 3, 3) g_a r_b
            if per_atom_virial:
                half = 0.5 * (per_edge + per_edge.transpose(1, 2)) / 2
                atom_virial = grad.new_zeros((n_atoms, 3, 3)).index_add(0, receivers, half).index_add(0, senders, half)
            edge_graph = torch.zeros_like(receivers) if edge_graph is None else edge_graph
            w = grad.new_zeros((n_graphs, 3, 3)).index_add(0, edge_graph, per_edge)
        if compute_virial:
            virial = 0.5 * (w + w.transpose(1, 2))
    return {"forces": forces, "virial": virial, "atom_virial": atom_virial}


def evaluate(
    model: torch.nn.Module,
    graph: AtomicGraph,
    compute_forces: bool = True,
    compute_virial: bool = True,
    create_graph: bool = False,
    counted: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | None]:
    """Energy, per-atom energies, forces and virials of every structure of ``graph``.

    Args:
        model: a registered family (:class:`~facet_calc.nn.contract.EnergyModel`).
        graph: on the model's device; its edge vectors are cast to the model's dtype.
        create_graph: keep the graph of forces and virials so that a loss on them can be
            differentiated with respect to the parameters (training; needs a backend that is
            twice differentiable, see :mod:`facet_calc.nn.backend`).
        counted: ``(n_atoms,)`` bool, the atoms whose energies make up ``energy`` and its
            gradients (``None``: all); the others are context, e.g. the halo of a spatial
            chunk (:mod:`facet_calc.chunking`). ``energies`` is returned for all atoms.

    Returns a dict: ``energy (n_graphs,)`` eV, ``energies (n_atoms,)`` eV, ``forces (n_atoms,
    3)`` eV/A (``None`` unless ``compute_forces``), ``virial (n_graphs, 3, 3)`` eV =
    dE/d(strain) (``None`` unless ``compute_virial``). Detached unless ``create_graph``.
    """
    need_grad = compute_forces or compute_virial
    edge_vec = graph.edge_vectors.detach().to(model.dtype).requires_grad_(need_grad)
    n_graphs = graph.n_graphs
    with torch.enable_grad() if need_grad else torch.no_grad():
        energies = model(graph.species, edge_vec, graph.senders, graph.receivers)
        summed = energies if counted is None else torch.where(counted, energies, torch.zeros_like(energies))
        energy = energies.new_zeros(n_graphs).index_add(0, graph.batch, summed)
        grad = None
        if need_grad:
            (grad,) = torch.autograd.grad(energy.sum(), [edge_vec], create_graph=create_graph, materialize_grads=True)
    out = {"energy": energy, "energies": energies, "forces": None, "virial": None}
    if need_grad:
        edge_graph = None if n_graphs == 1 else graph.batch[graph.receivers]
        scattered = edge_forces_and_virial(
            grad, edge_vec, graph.senders, graph.receivers, graph.n_atoms, edge_graph, n_graphs,
            compute_forces=compute_forces, compute_virial=compute_virial,
        )  # fmt: skip
        out["forces"], out["virial"] = scattered["forces"], scattered["virial"]
    if not create_graph:
        out = {k: None if v is None else v.detach() for k, v in out.items()}
    return out


def evaluate_by_strain(model: torch.nn.Module, graph: AtomicGraph, compute_virial: bool = True) -> dict:
    """Reference path for a graph of one structure: forces = -dE/dpos, virial = dE/d(symmetric
    strain), computed from positions, cell and shifts in the model's dtype. Same outputs as
    :func:`evaluate` (``energy (1,)``, ``virial (1, 3, 3)``)."""
    dtype = model.dtype
    pos = graph.positions.detach().to(dtype).clone().requires_grad_(True)
    cell = graph.cell[0].to(dtype)
    strain = torch.zeros(3, 3, dtype=dtype, device=pos.device, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(0, 1))
    pos_strained = pos + pos @ sym
    cell_strained = cell + cell @ sym
    s, r = graph.senders, graph.receivers
    edge_vec = pos_strained[s] - pos_strained[r] + graph.shifts.to(dtype) @ cell_strained
    energies = model(graph.species, edge_vec, s, r)
    energy = energies.sum()
    grad_pos, grad_strain = torch.autograd.grad(energy, [pos, strain], materialize_grads=True)
    return {
        "energy": energy.detach().reshape(1),
        "energies": energies.detach(),
        "forces": -grad_pos.detach(),
        "virial": grad_strain.detach().unsqueeze(0) if compute_virial else None,
    }
