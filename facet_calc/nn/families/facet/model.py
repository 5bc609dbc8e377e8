"""The Facet model family (``architecture: "facet"``): spline convolutions and spherical-grid mixing.

After Miklaucic et al. (2025), with the changes of ``docs/facet.md`` (radius graph, fixed cutoff,
C2 spline radials trained as such, extensive energy, O(3) parity, forces and stress trained)::

    x0  = embed(species)                                    # C0 scalars
    for t in 1..T-1:                                        # equivariant layers
        m  = linear_out(conv(linear_in(x), Y(r_ij), w_t(|r_ij|)))   # -> hidden irreps
        x  = adapter(x) + gamma * norm(S2Mixer(m))          # ScaledResidual, gamma = 0 at start
                                                            # (norm: layer norm, or none)
    m   = linear_out(conv(linear_in(x), ...))               # last layer: scalars only
    x   = adapter(x) + gamma * norm(MLP(m))
    e_i = scale[s_i] * readout(x_i) + shift[s_i]            # extensive: E = sum_i e_i

Features are functions on the sphere, ``lmax`` orders with parity ``(-1)^l`` (0e + 1o + 2e),
so the spherical-grid mixer applies to them and the model is O(3)-equivariant (inversion too).
The convolutions keep the tensor-product paths that reach these irreps; they are served by
the same spline tables and fused kernels as the converted potentials (``nn.backend`` selects).

:func:`facet_config` writes a full config from a few hyperparameters; :class:`FacetModel`
builds from it. Example::

    >>> from facet_calc.nn.families import build_model
    >>> config = facet_config([1, 8], hidden="8x0e+4x1o+2x2e", embedding=8, n_layers=2,
    ...                       mixer={"channels": 4, "grid_degree": 11},
    ...                       scalar_mlp=[8], avg_num_neighbors=10.0)
    >>> model = build_model(config)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from e3nn import o3
from torch import nn

from ... import config_checks as checks
from ...blocks.convolution import SplineConvolution, convolution_paths
from ...blocks.e3nn_modules import linear
from ...blocks.fast_convolution import EdgeContext, FastSplineConvolution
from ...blocks.fast_linear import FastLinear
from ...blocks.radial import SplineRadial, random_radial_table
from ...blocks.residual import EquivariantLayerNorm, ScaledResidual
from ...blocks.s2_mixing import S2Mixer
from ...blocks.twins import TwinnedLayer
from ...contract import EnergyModel

ARCHITECTURE = "facet"


def sphere_irreps(muls: Sequence[int]) -> o3.Irreps:
    """``muls[l]`` copies of each order ``l`` with the parity of a function on the sphere."""
    return o3.Irreps([(m, (l, (-1) ** l)) for l, m in enumerate(muls) if m > 0])


class ScalarMLP(nn.Module):
    """``x (N, n_in) -> (N, n_out)``: dense layers with SiLU between them, no biases; weights
    ``N(0, 1)`` scaled by ``1/sqrt(fan_in)`` in the forward pass (e3nn's convention)."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(a, b)) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scalar_mlp(x, list(self.weights))


def scalar_mlp(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """:class:`ScalarMLP`'s map: ``x (..., n_in)`` through ``weights`` ``(..., a, b)`` (a stack of
    members' weights broadcasts against ``x (K, N, n_in)``), scaled by ``1/sqrt(a)``."""
    for k, w in enumerate(weights):
        x = x @ w / math.sqrt(w.shape[-2])
        if k < len(weights) - 1:
            x = nn.functional.silu(x)
    return x


class FacetLayer(TwinnedLayer):
    """One Facet layer: spline convolution, then the spherical-grid mixer (or, for a scalar
    layer, an MLP), then the scaled residual. ``forward(x, sh, r, senders, receivers, edges)``
    as :class:`~facet_calc.nn.families.nequip_spline.interaction.InteractionBlock`, ``n_out`` too."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        n_intervals: int,
        cutoff: float,
        denominator: float,
        mixer: dict[str, Any] | None,
        scalar_mlp: Sequence[int] | None,
        residual_norm: str = "layer",
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        irreps_tp, instructions = convolution_paths(irreps_in, irreps_sh, irreps_out)
        self.linear_in = linear(irreps_in, irreps_in)
        n_weights = sum(irreps_in[i].mul for i, *_ in instructions)
        zeros = torch.zeros(n_intervals + 1, n_weights)
        radial = SplineRadial(zeros, zeros, cutoff, c1_only_at=[])
        self.convolution = SplineConvolution(irreps_in, irreps_sh, irreps_tp, instructions, radial, denominator)
        self.linear_out = linear(irreps_tp, irreps_out)
        if mixer is not None:
            self.mixer = S2Mixer(irreps_out, irreps_out, **mixer)
        else:
            if any(ir.l > 0 for _, ir in irreps_out):
                raise ValueError("a layer without a mixer must output scalars only")
            self.mixer = ScalarMLP([irreps_out.dim, *(scalar_mlp or []), irreps_out.dim])
        self.residual = ScaledResidual(irreps_in, irreps_out, norm=residual_norm)
        self._set_twins(
            convolution=FastSplineConvolution(self.convolution), linear_in=FastLinear(self.linear_in),
            linear_out=FastLinear(self.linear_out),
        )  # fmt: skip

    def forward(self, x, sh, r, senders, receivers, edges: EdgeContext | None = None, n_out: int | None = None,
                species: torch.Tensor | None = None):  # fmt: skip
        n = x.shape[0] if n_out is None else n_out
        h = self._linear("linear_in", x)
        h = self._convolve(h, sh, r, senders, receivers, edges, n)
        m = self._linear("linear_out", h)
        return self.residual(x[:n], self.mixer(m))


class FacetModel(EnergyModel):
    """The Facet architecture (see module docstring) built from its config; the
    :class:`~facet_calc.nn.contract.EnergyModel` contract."""

    architecture = ARCHITECTURE
    example_hyperparameters = {
        "hidden": "8x0e+4x1o+2x2e",
        "embedding": 8,
        "n_layers": 2,
        "scalar_mlp": [8],
        "mixer": {"channels": 4, "grid_degree": 17},
        "cutoff": 4.0,
        "avg_num_neighbors": 10.0,
    }
    #: the S2 mixer's pointwise MLP on a finite grid is equivariant only to the grid's accuracy:
    #: measured on the example model (random weights, grid degree 17) up to 1.4e-4 in forces
    equivariance_tolerance = 2e-3

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        lmax = int(config["lmax"])
        self.irreps_sh = sphere_irreps([1] * (lmax + 1))
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.embedding = nn.Parameter(torch.randn(self.n_species, int(config["embedding"])))
        hidden = o3.Irreps(config["hidden"])
        scalars = o3.Irreps([(mul, ir) for mul, ir in hidden if ir.l == 0])
        radial = config["radial"]
        irreps = o3.Irreps(f"{int(config['embedding'])}x0e")
        layers = []
        n_layers = int(config["n_layers"])
        for t in range(n_layers):
            last = t == n_layers - 1
            out = scalars if last else hidden
            layers.append(
                FacetLayer(
                    irreps,
                    self.irreps_sh,
                    out,
                    int(radial["n_intervals"]),
                    self.cutoff,
                    float(config["avg_num_neighbors"]),
                    None if last else config["mixer"],
                    config.get("scalar_mlp"),
                    config.get("residual_norm", "layer"),
                )  # fmt: skip
            )
            irreps = out
        self.layers = nn.ModuleList(layers)
        self.readout_weight = nn.Parameter(torch.randn(scalars.dim))
        self.scale = nn.Parameter(torch.ones(self.n_species))
        self.shift = nn.Parameter(torch.zeros(self.n_species))

    def embed(self, species: torch.Tensor) -> torch.Tensor:
        """Node features before the first layer, ``(n_atoms, embedding)``."""
        return self.embedding.index_select(0, species)

    def readout(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(n_atoms,)`` eV from the last layer's scalars: extensive,
        ``e_i = scale[s_i] * w . x_i + shift[s_i]``."""
        out = x @ self.readout_weight / math.sqrt(self.readout_weight.shape[0])
        return out * self.scale[species] + self.shift[species]

    @property
    def feature_widths(self) -> list[int]:
        """Widths of the node features entering each layer and leaving the last one."""
        return [self.embedding.shape[1]] + [layer.irreps_out.dim for layer in self.layers]

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        lmax = checks.integer(checks.field(config, "lmax"), "lmax", 0, 8)
        checks.integer(checks.field(config, "embedding"), "embedding", 1, checks.MAX_WIDTH)
        hidden = checks.irreps(checks.field(config, "hidden"), "hidden")
        if max(ir.l for _, ir in hidden) != lmax:
            raise checks.ConfigError(f"hidden ({hidden}) must reach lmax = {lmax}")
        checks.integer(checks.field(config, "n_layers"), "n_layers", 2, checks.MAX_LAYERS)
        mixer = checks.field(config, "mixer")
        checks.integer(checks.field(mixer, "channels", "mixer"), "mixer.channels", 1, checks.MAX_WIDTH)
        checks.integer(checks.field(mixer, "grid_degree", "mixer"), "mixer.grid_degree", 2 * lmax, 131)
        widths = config.get("scalar_mlp", [])
        if not isinstance(widths, list):
            raise checks.ConfigError(f"scalar_mlp must be a list of widths, got {widths!r:.80}")
        for width in widths:
            checks.integer(width, "each scalar_mlp width", 1, checks.MAX_WIDTH)
        checks.positive(checks.field(config, "avg_num_neighbors"), "avg_num_neighbors")
        if config.get("residual_norm", "layer") not in EquivariantLayerNorm.MODES:
            raise checks.ConfigError(
                f"residual_norm must be one of {EquivariantLayerNorm.MODES}, got {config.get('residual_norm')!r:.40}"
            )

    @classmethod
    def config_from_hyperparameters(cls, atomic_numbers, **hyperparameters) -> dict[str, Any]:
        """:func:`facet_config`."""
        return facet_config(atomic_numbers, **hyperparameters)

    @torch.no_grad()
    def initialise(self, generator: torch.Generator) -> FacetModel:
        """Deterministic starting values from ``generator`` (float64 draws, rounded to the
        model's dtype): N(0, 1) for every weight (the forward passes scale by fan-in), random
        smooth radial tables, zero residual scales (every layer starts as the identity),
        per-species scale 1 and shift 0."""
        for name, param in self.named_parameters():
            if name.endswith("residual.norm.weight"):
                value = torch.zeros(param.shape, dtype=torch.float64)
            elif name == "scale":
                value = torch.ones(param.shape, dtype=torch.float64)
            elif name == "shift":
                value = torch.zeros(param.shape, dtype=torch.float64)
            elif name.endswith("radial.slopes"):
                continue  # set with the values below
            elif name.endswith("radial.values"):
                module = self.get_submodule(name.rsplit(".", 1)[0])
                values, slopes = random_radial_table(module.n_intervals + 1, module.n_out, module.r_max, generator)
                module.slopes.copy_(slopes.to(param))
                value = values
            else:
                value = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            param.copy_(value.to(param))
        for module in self.modules():
            if isinstance(module, SplineRadial):
                module.train(module.training)  # recompute the C2 slopes' fixed part
        return self


def facet_config(
    atomic_numbers: Sequence[int],
    hidden: str = "64x0e+32x1o+16x2e",
    embedding: int = 64,
    n_layers: int = 3,
    mixer: dict[str, Any] | None = None,
    scalar_mlp: Sequence[int] = (64,),
    cutoff: float = 5.0,
    n_intervals: int = 64,
    avg_num_neighbors: float = 30.0,
    residual_norm: str = "layer",
) -> dict[str, Any]:
    """A full ``"facet"`` config from hyperparameters (checked here, with messages).

    Args:
        atomic_numbers: the elements the model knows (species index = position in this list).
        hidden: irreps of the equivariant layers' features; orders with parity ``(-1)^l``.
        embedding: number of species-embedding scalars.
        n_layers: message-passing layers; the last one keeps scalars only.
        mixer: the spherical-grid mixer (``channels``: width of its MLP on the grid;
            ``grid_degree``: the Lebedev rule; ``lmax`` is that of ``hidden``).
        scalar_mlp: hidden widths of the last layer's MLP.
        cutoff: radius of the graph, A; the spline tables vanish with their slope there.
        n_intervals: knot intervals of each spline table over ``[0, cutoff]``.
        avg_num_neighbors: the convolution's normalisation (mean neighbours within the cutoff).
        residual_norm: ``"layer"`` (Facet's: each block's output is layer-normed per order
            before its zero-initialised per-channel scale), ``"joint"`` (one norm per node over
            all orders: smooth where an order vanishes by symmetry) or ``"none"`` (the scale alone, so the block's
            magnitude, e.g. how many neighbours sent messages, reaches the next layer).
    """
    if residual_norm not in EquivariantLayerNorm.MODES:
        raise ValueError(f"residual_norm must be one of {EquivariantLayerNorm.MODES}, got {residual_norm!r}")
    irreps = o3.Irreps(hidden)
    bad = [str(ir) for _, ir in irreps if ir.p != (-1) ** ir.l]
    if bad:
        raise ValueError(f"hidden irreps must be functions on the sphere (parity (-1)^l: 0e, 1o, 2e, ...); got {bad}")
    if len(set(atomic_numbers)) != len(atomic_numbers) or not atomic_numbers:
        raise ValueError("atomic_numbers must be a non-empty list without repeats")
    if n_layers < 2:
        raise ValueError(f"n_layers must be at least 2 (equivariant layers plus the scalar layer), got {n_layers}")
    lmax = max(ir.l for _, ir in irreps)
    mixer = {"channels": 32, "grid_degree": 17, **(mixer or {}), "lmax": lmax}
    if mixer["grid_degree"] < 2 * lmax:
        raise ValueError(f"mixer grid_degree must be at least 2 * lmax = {2 * lmax}")
    return {
        "format_version": 1,
        "architecture": ARCHITECTURE,
        "cutoff": float(cutoff),
        "atomic_numbers": [int(z) for z in atomic_numbers],
        "lmax": lmax,
        "embedding": int(embedding),
        "hidden": str(irreps),
        "n_layers": int(n_layers),
        "mixer": mixer,
        "scalar_mlp": [int(w) for w in scalar_mlp],
        "radial": {"kind": "cubic_bspline_c2", "n_intervals": int(n_intervals), "r_max": float(cutoff)},
        "avg_num_neighbors": float(avg_num_neighbors),
        "residual_norm": residual_norm,
    }
