"""The SevenNet/NequIP layout with spline radial weights (``architecture: "facet-spline-nequip"``).

``NequipSplineModel`` maps a graph to per-atom energies::

    x0  = Linear(onehot(species))                      # species embedding
    x   = InteractionBlock_t(x, Y(r_ij), |r_ij|)       # t = 1..T, spline-weighted convolutions
    e_i = scale[s_i] * Linear(Linear(x_i)) + shift[s_i]

The converted SevenNet potentials use it. Edges are directed, ``r_ij = pos[sender] -
pos[receiver] + shift . cell``: the message of edge ``(receiver i, sender j)`` flows from ``j``
to ``i``. Forces and virials come from :func:`facet_calc.nn.forward.evaluate`.
"""

from __future__ import annotations

from typing import Any

import torch
from e3nn import o3
from torch import nn

from ... import config_checks as checks
from ...blocks.e3nn_modules import linear
from ...blocks.fast_linear import FastLinear
from ...blocks.radial import SplineRadial
from ...contract import EnergyModel
from .config import ARCHITECTURE, SELF_CONNECTIONS, initialise_parameters, nequip_spline_config
from .interaction import InteractionBlock


class NequipSplineModel(EnergyModel):
    """SE(3)-equivariant message-passing energy model with spline radial weights (the
    SevenNet/NequIP layout); the :class:`~facet_calc.nn.contract.EnergyModel` contract.

    Args:
        config: the potential's model config (a plain dict, see ``facet_calc.potential``).
    """

    architecture = ARCHITECTURE
    #: both self-connections: one weight per species in the first layer (SevenNet-MF-ompa), one in the second
    example_hyperparameters = {"channels": 8, "lmax": 2, "n_layers": 2, "cutoff": 4.0, "avg_num_neighbors": 10.0,
                               "self_connection": ["species", "linear"]}  # fmt: skip

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        n_species = self.n_species
        self.irreps_sh = o3.Irreps(config["irreps_sh"])
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh,
            normalize=True,
            normalization=config.get("sh_normalization", "component"),
        )
        self.embedding = linear(f"{n_species}x0e", config["irreps_embedding"])
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
            layers.append(InteractionBlock(spec, self.irreps_sh, radial, n_species))
        self.layers = nn.ModuleList(layers)
        irreps_last = layers[-1].irreps_out
        self.readout_hidden = linear(irreps_last, config["readout_hidden"])
        self.readout_out = linear(config["readout_hidden"], "1x0e")
        self.scale = nn.Parameter(torch.ones(n_species))
        self.shift = nn.Parameter(torch.zeros(n_species))
        # Multi-fidelity potentials: per-head energy shifts and readout bias (the source's
        # fidelity one-hot input, see InteractionBlock); set_head picks the row.
        n_heads = len(config.get("heads", []))
        hidden_dim = o3.Irreps(config["readout_hidden"]).dim
        self.head_shift = nn.Parameter(torch.zeros(n_heads, n_species)) if n_heads else None
        self.head_bias_hidden = nn.Parameter(torch.zeros(n_heads, hidden_dim)) if n_heads else None
        self.head = 0
        # the embedding's and readout's fast twins (index tables only, not saved): for a small
        # system e3nn's generated code for these three linears costs more than their products
        self.fast_ends = nn.ModuleDict({name: FastLinear(getattr(self, name))
                                        for name in ("embedding", "readout_hidden", "readout_out")})  # fmt: skip

    def _end_linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self._backend.linear(getattr(self, name), self.fast_ends[name], x)

    def set_head(self, index: int) -> NequipSplineModel:
        """Evaluate head ``index`` of a multi-fidelity model (an index into ``config["heads"]``)."""
        super().set_head(index)
        self.head = index
        for layer in self.layers:
            layer.head = index
        return self

    def initialise(self, generator: torch.Generator) -> NequipSplineModel:
        return initialise_parameters(self, generator)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        checks.irreps(checks.field(config, "irreps_sh"), "irreps_sh")
        checks.irreps(checks.field(config, "irreps_embedding"), "irreps_embedding")
        checks.irreps(checks.field(config, "readout_hidden"), "readout_hidden")
        checks.heads(config)
        layers = checks.layer_specs(config)
        for t, spec in enumerate(layers):
            where = f"layers[{t}]"
            irreps_in = checks.irreps(checks.field(spec, "irreps_in", where), f"{where}.irreps_in")
            checks.irreps(checks.field(spec, "irreps_tp_out", where), f"{where}.irreps_tp_out")
            checks.positive(checks.field(spec, "denominator", where), f"{where}.denominator")
            checks.integer(spec.get("n_heads", 0), f"{where}.n_heads", 0, 64)
            if spec.get("self_connection", "linear") not in SELF_CONNECTIONS:
                raise checks.ConfigError(
                    f"{where}.self_connection is {spec.get('self_connection')!r}; choose one of {SELF_CONNECTIONS}"
                )
            instructions = checks.field(spec, "instructions", where)
            try:  # each path carries mul_in radial weights ('uvu'): the count must add up
                expected = sum(irreps_in[int(ins[0])].mul for ins in instructions)
            except (TypeError, ValueError, IndexError):
                rows = "(i_in, i_sh, i_out, mode, weight) rows"
                raise checks.ConfigError(f"{where}.instructions are not {rows}") from None
            numel = checks.integer(checks.field(spec, "weight_numel", where), f"{where}.weight_numel", 1,
                                   checks.MAX_WEIGHTS_PER_EDGE)  # fmt: skip
            if numel != expected:
                raise checks.ConfigError(f"{where}.weight_numel is {numel}, its instructions need {expected}")
            gate = checks.field(spec, "gate", where)
            for key in ("scalars", "gates", "gated"):
                checks.field(gate, key, f"{where}.gate")

    @classmethod
    def config_from_hyperparameters(cls, atomic_numbers, **hyperparameters) -> dict[str, Any]:
        """:func:`.config.nequip_spline_config`."""
        return nequip_spline_config(atomic_numbers, **hyperparameters)

    def embed(self, species: torch.Tensor) -> torch.Tensor:
        """Node features before the first layer, ``(n_atoms, irreps_embedding.dim)``."""
        return self._end_linear("embedding", nn.functional.one_hot(species, self.n_species).to(self.scale.dtype))

    def readout(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(n_atoms,)`` eV from the last layer's features."""
        hidden = self._end_linear("readout_hidden", x)
        if self.head_bias_hidden is not None:
            hidden = hidden + self.head_bias_hidden[self.head]
        out = self._end_linear("readout_out", hidden).squeeze(-1)
        shift = self.shift if self.head_shift is None else self.shift + self.head_shift[self.head]
        return out * self.scale[species] + shift[species]

    @property
    def feature_widths(self) -> list[int]:
        """Widths of the node features entering each layer and leaving the last one."""
        return [self.embedding.irreps_out.dim] + [layer.irreps_out.dim for layer in self.layers]
