"""The energy model and its derivatives (forces, virial) by autograd.

``FacetModel`` maps a graph to per-atom energies::

    x0  = Linear(onehot(species))                      # species embedding
    x   = InteractionBlock_t(x, Y(r_ij), |r_ij|)       # t = 1..T, spline-weighted convolutions
    e_i = scale[s_i] * Linear(Linear(x_i)) + shift[s_i]

Edges are directed, ``r_ij = pos[sender] - pos[receiver] + shift . cell``: the message of edge
``(receiver i, sender j)`` flows from ``j`` to ``i``.

Two evaluators give energy, forces and virial, for training and inference alike:

* :func:`evaluate` differentiates with respect to the edge vectors and scatters; it takes a
  batch index for many structures in one graph, and ``create_graph=True`` when the forces and
  virials enter a training loss.
* :func:`evaluate_by_strain` differentiates with respect to positions and a symmetric strain of
  the whole graph (plain reference path). Tests check that both agree.
"""

from __future__ import annotations

from typing import Any

import torch
from e3nn import o3
from torch import nn

from .backend import check_backend, effective_backend
from .fast_convolution import EdgeContext
from .interaction import InteractionBlock
from .radial import SplineRadial
from .registry import register_architecture


@register_architecture("facet-spline-nequip")
class FacetModel(nn.Module):
    """SE(3)-equivariant message-passing energy model with spline radial weights (the
    SevenNet/NequIP layout; the converted SevenNet potentials use it).

    Layer-wise contract shared by every family (the LAMMPS domain driver runs the layers one by
    one): ``embed(species)``, ``spherical_harmonics(edge_vec)``, ``layers`` (each
    ``layer(x, sh, r, senders, receivers, edges=None, n_out=None)``: ``n_out`` rows computed, the
    rest only send), ``readout(x, species)``, ``feature_widths``.

    Args:
        config: the potential's model config (a plain dict, see ``facet_calc.potential``).

    ``forward(species, edge_vec, senders, receivers)``: ``species (n_atoms,)`` int64 indices
    into ``config["atomic_numbers"]``; ``edge_vec (n_edges, 3)`` in Angstrom; ``senders`` and
    ``receivers (n_edges,)`` int64. Returns per-atom energies ``(n_atoms,)`` in eV.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.cutoff = float(config["cutoff"])
        n_species = len(config["atomic_numbers"])
        self.n_species = n_species
        self.irreps_sh = o3.Irreps(config["irreps_sh"])
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh,
            normalize=True,
            normalization=config.get("sh_normalization", "component"),
        )
        self.embedding = o3.Linear(o3.Irreps(f"{n_species}x0e"), o3.Irreps(config["irreps_embedding"]), biases=False)
        radial_cfg = config["radial"]
        n_knots = int(radial_cfg["n_intervals"]) + 1
        if radial_cfg.get("kind", "cubic_hermite_c2") not in ("cubic_hermite_c2", "cubic_hermite"):
            raise ValueError(f"unknown radial table kind {radial_cfg.get('kind')!r}")
        c2_breaks = radial_cfg.get("c1_only_at", []) if radial_cfg.get("kind") == "cubic_hermite_c2" else None
        layers = []
        for spec in config["layers"]:
            n_out = int(spec["weight_numel"])
            zeros = torch.zeros(n_knots, n_out)
            radial = SplineRadial(zeros, zeros, self.cutoff, c1_only_at=c2_breaks)
            layers.append(InteractionBlock(spec, self.irreps_sh, radial))
        self.layers = nn.ModuleList(layers)
        irreps_last = layers[-1].irreps_out
        self.readout_hidden = o3.Linear(irreps_last, o3.Irreps(config["readout_hidden"]), biases=False)
        self.readout_out = o3.Linear(o3.Irreps(config["readout_hidden"]), o3.Irreps("1x0e"), biases=False)
        self.scale = nn.Parameter(torch.ones(n_species))
        self.shift = nn.Parameter(torch.zeros(n_species))
        # Multi-fidelity potentials: per-head energy shifts and readout bias (the source's
        # fidelity one-hot input, see InteractionBlock); set_head picks the row.
        n_heads = len(config.get("heads", []))
        hidden_dim = o3.Irreps(config["readout_hidden"]).dim
        self.head_shift = nn.Parameter(torch.zeros(n_heads, n_species)) if n_heads else None
        self.head_bias_hidden = nn.Parameter(torch.zeros(n_heads, hidden_dim)) if n_heads else None
        self.head = 0

    def set_head(self, index: int) -> FacetModel:
        """Evaluate head ``index`` of a multi-fidelity model (an index into ``config["heads"]``)."""
        n_heads = len(self.config.get("heads", []))
        if not 0 <= index < max(n_heads, 1):
            raise ValueError(f"head index {index} out of range for a model with {n_heads} heads")
        self.head = index
        for layer in self.layers:
            layer.head = index
        return self

    def set_backend(self, name: str = "auto") -> FacetModel:
        """Choose the implementation of every layer: ``"auto"``, ``"kernel"``, ``"torch"`` or
        ``"e3nn"`` (the reference); see :mod:`facet_calc.nn.backend`."""
        name = check_backend(name)
        for layer in self.layers:
            layer.backend = name
        return self

    @property
    def backend(self) -> str:
        """The implementation that runs on the model's device (a requested ``"kernel"``
        reads ``"torch"`` where no kernel serves the device)."""
        return effective_backend(self.layers[0].backend, self.scale.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.scale.dtype

    def embed(self, species: torch.Tensor) -> torch.Tensor:
        """Node features before the first layer, ``(n_atoms, irreps_embedding.dim)``."""
        return self.embedding(nn.functional.one_hot(species, self.n_species).to(self.scale.dtype))

    def readout(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(n_atoms,)`` eV from the last layer's features."""
        hidden = self.readout_hidden(x)
        if self.head_bias_hidden is not None:
            hidden = hidden + self.head_bias_hidden[self.head]
        out = self.readout_out(hidden).squeeze(-1)
        shift = self.shift if self.head_shift is None else self.shift + self.head_shift[self.head]
        return out * self.scale[species] + shift[species]

    @property
    def feature_widths(self) -> list[int]:
        """Widths of the node features entering each layer and leaving the last one."""
        return [self.embedding.irreps_out.dim] + [layer.irreps_out.dim for layer in self.layers]

    def forward(
        self,
        species: torch.Tensor,
        edge_vec: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
    ) -> torch.Tensor:
        return layered_energies(self, species, edge_vec, senders, receivers)


def layered_energies(
    model: nn.Module,
    species: torch.Tensor,
    edge_vec: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
) -> torch.Tensor:
    """The forward pass of any family with the layer-wise contract (``embed``,
    ``spherical_harmonics``, ``layers``, ``readout``): per-atom energies ``(n_atoms,)`` eV."""
    x = model.embed(species)
    sh = model.spherical_harmonics(edge_vec)
    r = torch.linalg.norm(edge_vec, dim=-1)
    # sortedness, CSR offsets and spline basis: once per evaluation, not once per layer
    edges = EdgeContext(species.shape[0], senders, receivers, r)
    for layer in model.layers:
        x = layer(x, sh, r, senders, receivers, edges=edges)
    return model.readout(x, species)


def evaluate(
    model: nn.Module,
    species: torch.Tensor,
    edge_vec: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    batch: torch.Tensor | None = None,
    n_structures: int = 1,
    compute_forces: bool = True,
    compute_virial: bool = True,
    create_graph: bool = False,
    counted: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | None]:
    """Energies, forces and virials from the gradient with respect to the edge vectors.

    One code path for inference and training (as NequIP's ``ForceStressOutput``): many
    structures form one disjoint graph, told apart by ``batch``.

    Args:
        model: maps ``(species, edge_vec, senders, receivers)`` to per-atom energies.
        species: ``(n_atoms,)`` int64 species indices.
        edge_vec: ``(n_edges, 3)`` Angstrom, ``pos[sender] - pos[receiver] + shift @ cell``.
            Compute it in float64 and cast afterwards: in float32, differences of positions far
            from the origin lose most of their digits.
        senders, receivers: ``(n_edges,)`` int64 atom indices.
        batch: ``(n_atoms,)`` int64 structure index of each atom (``None``: one structure).
        n_structures: number of structures in the batch.
        create_graph: keep the graph of forces and virials so that a loss on them can be
            differentiated with respect to the parameters (training; needs the ``"torch"`` or
            ``"e3nn"`` backend).
        counted: ``(n_atoms,)`` bool, the atoms whose energies make up ``energy`` and its
            gradients (``None``: all); the others are context, e.g. the halo of a spatial
            chunk (:mod:`facet_calc.chunking`). ``energies`` is returned for all atoms.

    Returns a dict: ``energy (n_structures,)`` eV, ``energies (n_atoms,)`` eV, ``forces
    (n_atoms, 3)`` eV/A (``None`` unless ``compute_forces``), ``virial (n_structures, 3, 3)``
    eV = dE/d(strain) (``None`` unless ``compute_virial``). Detached unless ``create_graph``.
    """
    n_atoms = species.shape[0]
    if batch is None:
        batch = torch.zeros(n_atoms, dtype=torch.long, device=species.device)
    need_grad = compute_forces or compute_virial
    edge_vec = edge_vec.detach().requires_grad_(need_grad)
    with torch.enable_grad() if need_grad else torch.no_grad():
        energies = model(species, edge_vec, senders, receivers)
        summed = energies if counted is None else torch.where(counted, energies, torch.zeros_like(energies))
        energy = energies.new_zeros(n_structures).index_add(0, batch, summed)
        grad = None
        if need_grad:
            (grad,) = torch.autograd.grad(energy.sum(), [edge_vec], create_graph=create_graph, materialize_grads=True)
    forces = virial = None
    if compute_forces:
        # E depends on positions through r_ij = pos[j] - pos[i] + ...: dE/dpos_j += g, dE/dpos_i -= g
        forces = grad.new_zeros((n_atoms, 3))
        forces = forces.index_add(0, receivers, grad).index_add(0, senders, -grad)
    if compute_virial:
        vec = edge_vec.detach()
        if n_structures == 1:  # one matmul, no (E, 3, 3) intermediate on the calculator's path
            w = (grad.transpose(0, 1) @ vec).unsqueeze(0)
        else:
            per_edge = grad.unsqueeze(2) * vec.unsqueeze(1)  # (E, 3, 3) g_a r_b
            w = grad.new_zeros((n_structures, 3, 3)).index_add(0, batch[receivers], per_edge)
        virial = 0.5 * (w + w.transpose(1, 2))
    out = {"energy": energy, "energies": energies, "forces": forces, "virial": virial}
    if not create_graph:
        out = {k: None if v is None else v.detach() for k, v in out.items()}
    return out


def evaluate_by_strain(
    model: FacetModel,
    species: torch.Tensor,
    positions: torch.Tensor,
    cell: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    shifts: torch.Tensor,
    compute_virial: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Reference path for one structure: forces = -dE/dpos, virial = dE/d(symmetric strain).
    Same outputs as :func:`evaluate` (``energy (1,)``, ``virial (1, 3, 3)``)."""
    pos = positions.detach().clone().requires_grad_(True)
    strain = torch.zeros(3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(0, 1))
    pos_strained = pos + pos @ sym
    cell_strained = cell + cell @ sym
    edge_vec = pos_strained[senders] - pos_strained[receivers] + shifts @ cell_strained
    energies = model(species, edge_vec, senders, receivers)
    energy = energies.sum()
    grad_pos, grad_strain = torch.autograd.grad(energy, [pos, strain], materialize_grads=True)
    return {
        "energy": energy.detach().reshape(1),
        "energies": energies.detach(),
        "forces": -grad_pos.detach(),
        "virial": grad_strain.detach().unsqueeze(0) if compute_virial else None,
    }
