"""The contract every model family implements: :class:`EnergyModel`.

A family maps a graph to per-atom energies through the same layer-wise steps, so every engine
(the ASE calculator, torch-sim, the LAMMPS domain driver that runs the layers one by one with
ghost exchanges in between) and the trainer use any family without knowing which it is::

    x = embed(species)                               # (n_atoms, feature_widths[0])
    sh = spherical_harmonics(edge_vec); r = |edge_vec|
    for layer in layers:                             # layer(x, sh, r, senders, receivers,
        x = layer(x, sh, r, senders, receivers)      #       edges=None, n_out=None, species=None)
    e = readout(x, species)                          # (n_atoms,) eV

``species`` in a layer call holds the species indices of the rows of ``x``, for maps that
depend on the species (SevenNet's per-species self-connection); layers that need none ignore it.

A new family subclasses :class:`EnergyModel` in a folder of its own under ``nn/families/``, and
is added to the table in ``nn/families/__init__.py``; ``tests/families`` then runs the
conformance checks (equivariance, finite differences, extensivity, locality, fast path ==
reference) on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from . import config_checks
from .backend import KERNEL, Backend, resolve_backend
from .blocks.edge_geometry import edge_geometry
from .blocks.fast_convolution import EdgeContext


class EnergyModel(nn.Module, ABC):
    """Base of every model family.

    Subclasses set ``architecture`` (the config's ``"architecture"`` value), build from a config
    dict (``__init__(config)``), and provide ``spherical_harmonics`` (a module of the edge
    vectors), ``layers`` (an ``nn.ModuleList`` of layers with ``set_backend``), :meth:`embed`,
    :meth:`readout`, :attr:`feature_widths`, :meth:`initialise` and
    :meth:`config_from_hyperparameters`. Multi-fidelity families override :meth:`set_head`.

    ``forward(species, edge_vec, senders, receivers)``: ``species (n_atoms,)`` int64 species
    indices; ``edge_vec (n_edges, 3)`` A, ``pos[sender] - pos[receiver] + shift @ cell``;
    ``senders``/``receivers (n_edges,)`` int64. Returns per-atom energies ``(n_atoms,)`` eV.
    """

    architecture: ClassVar[str]
    #: small hyperparameters for tests and examples (the conformance suite builds with them)
    example_hyperparameters: ClassVar[dict[str, Any]]
    #: largest relative rotation error of energy, forces and virial that the family allows
    #: (exact families: round-off; a pointwise grid nonlinearity: the grid's quadrature error)
    equivariance_tolerance: ClassVar[float] = 5e-14
    layers: nn.ModuleList
    spherical_harmonics: nn.Module

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.cutoff = float(config["cutoff"])
        self.n_species = len(config["atomic_numbers"])
        self._backend: Backend = KERNEL

    # -- what a family defines ------------------------------------------------------------
    @abstractmethod
    def embed(self, species: torch.Tensor) -> torch.Tensor:
        """Node features before the first layer, ``(n_atoms, feature_widths[0])``."""

    @abstractmethod
    def readout(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(n_atoms,)`` eV from the last layer's features."""

    @property
    @abstractmethod
    def feature_widths(self) -> list[int]:
        """Widths of the node features entering each layer and leaving the last one."""

    @abstractmethod
    def initialise(self, generator: torch.Generator) -> EnergyModel:
        """Deterministic starting parameters for training from scratch, drawn from
        ``generator`` in float64 and rounded to the model's dtype; returns ``self``."""

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Raise :class:`~facet_calc.nn.config_checks.ConfigError` for a config value that is of
        the wrong type, out of range or inconsistent, before anything is built (families
        extend this with their own fields)."""
        config_checks.common(config)

    @classmethod
    @abstractmethod
    def config_from_hyperparameters(cls, atomic_numbers: Sequence[int], **hyperparameters) -> dict[str, Any]:
        """A complete config (JSON-able dict) of this family from a few hyperparameters."""

    # -- shared by every family -----------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def heads(self) -> list[str]:
        """The fidelities of a multi-fidelity model (empty for the others)."""
        return list(self.config.get("heads", []))

    def set_head(self, index: int) -> EnergyModel:
        """Evaluate head ``index`` of ``heads`` (a single-fidelity model has head 0 only)."""
        if not 0 <= index < max(len(self.heads), 1):
            raise ValueError(f"head index {index} out of range for a model with {len(self.heads)} heads")
        return self

    def set_backend(self, choice: str | Backend = "auto") -> EnergyModel:
        """Choose how every layer computes (``"auto"``, ``"kernel"``, ``"torch"`` or ``"e3nn"``,
        the reference; see :mod:`facet_calc.nn.backend`)."""
        self._backend = resolve_backend(choice)
        for layer in self.layers:
            layer.set_backend(self._backend)
        return self

    @property
    def backend(self) -> str:
        """The implementation that runs on the model's device (a requested ``"kernel"`` reads
        ``"torch"`` where no kernel serves the device)."""
        return self._backend.on(self.device).name

    def forward(
        self, species: torch.Tensor, edge_vec: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor
    ) -> torch.Tensor:
        # one autograd node where the fused kernel (itself differentiable once) runs
        one_node = self._backend.on(edge_vec.device) is KERNEL
        sh, r = edge_geometry(self.spherical_harmonics, edge_vec, one_node=one_node)
        # sortedness, CSR offsets and spline basis: once per evaluation, not once per layer
        edges = EdgeContext(species.shape[0], senders, receivers, r)
        return self.energies_from_edges(species, sh, r, senders, receivers, edges)

    def energies_from_edges(self, species, sh, r, senders, receivers, edges: EdgeContext) -> torch.Tensor:
        """Per-atom energies ``(n_atoms,)`` eV from the edge work already done (``sh``, ``r``,
        ``edges``; a committee shares them among its members): embed, layers, readout."""
        x = self.embed(species)
        for layer in self.layers:
            x = layer(x, sh, r, senders, receivers, edges=edges, species=species)
        return self.readout(x, species)


def initialise_for_training(model: EnergyModel, seed: int) -> EnergyModel:
    """Give every parameter of a freshly built model a deterministic starting value; in place.

    The draws come from one ``torch.Generator`` seeded with ``seed`` in float64 on the CPU, so
    the same seed gives the same weights for any dtype and device. Returns ``model``."""
    with torch.no_grad():
        return model.initialise(torch.Generator().manual_seed(int(seed)))
