"""MACE with spline radial weights (``architecture: "facet-spline-mace"``): converted MACE models.

``MaceSplineModel`` is mace-torch's ``MACE``/``ScaleShiftMACE`` with
``RealAgnosticResidualInteractionBlock`` or ``RealAgnosticInteractionBlock`` layers, every
radial MLP (Bessel basis x polynomial cutoff -> MLP) replaced by an exact C2 spline table::

    h0   = Linear(onehot(species))
    h_t  = MaceLayer_t(h_{t-1})                        # interaction + product basis (.interaction)
    E_i  = scale[s_i] * sum_t readout_t(h_t) + shift[s_i] + E0[s_i]

Why the readouts travel with the features: MACE reads every layer's features out (a linear
readout per layer, a small MLP on the last one) and sums them, while the family contract
(:mod:`facet_calc.nn.contract`) runs ``layer`` after ``layer`` and reads out the last features
only, which the engines rely on (LAMMPS runs the layers one at a time with a ghost exchange in
between; torch-sim and the calculator call ``evaluate``). So each layer adds its readout to a
running energy column (one per head) appended to the features, and :meth:`readout` scales and
shifts that column. The species index travels the same way (one more column) because the skip
connection and the product basis depend on the species, and a layer sees only features. Both
columns are invariant scalars, so equivariance and locality are untouched; a ghost's columns are
exchanged with its features and only its own rows are ever read.

Parameters: ``scale``, ``shift`` and ``atomic_energies`` (E0) are ``(n_heads, n_species)``; the
symmetric contractions' ``U`` tensors are parameters too (so that a potential file holds the
source's basis) but do not train (``requires_grad=False``). Fine-tuning this family with
``facet_calc.train`` is not supported yet (``train.shifts`` expects ``(n_species,)`` shifts).

Edges: facet_calc's ``edge_vec = pos[sender] - pos[receiver]`` is minus MACE's vector, so the
spherical harmonics are taken of ``-edge_vec`` (``Y_l(-v) = (-1)^l Y_l(v)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from e3nn import o3
from torch import nn

from ... import config_checks as checks
from ...blocks.convolution import convolution_paths
from ...blocks.e3nn_modules import linear
from ...blocks.radial import SplineRadial, random_radial_table
from ...contract import EnergyModel
from .contraction import SymmetricContraction, coupling_basis
from .interaction import MaceLayer, activation_scale

ARCHITECTURE = "facet-spline-mace"


class ReversedHarmonics(nn.Module):
    """``Y(-edge_vec)``: MACE's edge direction (receiver minus sender)."""

    def __init__(self, irreps_sh: o3.Irreps) -> None:
        super().__init__()
        self.sh = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")

    def forward(self, edge_vec: torch.Tensor) -> torch.Tensor:
        return self.sh(-edge_vec)


class MaceSplineModel(EnergyModel):
    """MACE (mace-torch's layout) with spline radial weights; see the module docstring."""

    architecture = ARCHITECTURE
    example_hyperparameters = {"channels": 4, "max_L": 1, "max_ell": 2, "correlation": 3, "n_layers": 2,
                               "cutoff": 4.0, "avg_num_neighbors": 10.0, "n_intervals": 40}  # fmt: skip
    equivariance_tolerance = 5e-13

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.wigner_convention = config.get("wigner_convention", "e3nn-0.5")
        n_species = self.n_species
        self.n_heads = max(1, len(config.get("heads", [])))
        self.irreps_sh = o3.Irreps(config["irreps_sh"])
        self.spherical_harmonics = ReversedHarmonics(self.irreps_sh)
        self.embedding = linear(f"{n_species}x0e", config["irreps_embedding"])
        radial_cfg = config["radial"]
        n_knots = int(radial_cfg["n_intervals"]) + 1
        layers = []
        for spec in config["layers"]:
            zeros = torch.zeros(n_knots, int(spec["weight_numel"]))
            radial = SplineRadial(zeros, zeros, self.cutoff, c1_only_at=radial_cfg.get("c1_only_at", []))
            avg = float(spec.get("avg_num_neighbors", config["avg_num_neighbors"]))  # MACE: per interaction
            layers.append(MaceLayer(spec, self.irreps_sh, radial, n_species, self.n_heads, avg,
                                    self.wigner_convention))  # fmt: skip
        self.layers = nn.ModuleList(layers)
        self.scale = nn.Parameter(torch.ones(self.n_heads, n_species))
        self.shift = nn.Parameter(torch.zeros(self.n_heads, n_species))
        self.atomic_energies = nn.Parameter(torch.zeros(self.n_heads, n_species))
        self.head = 0

    def set_head(self, index: int) -> MaceSplineModel:
        """Evaluate head ``index`` of ``config["heads"]`` (every head's energy is carried; the
        readout picks one)."""
        super().set_head(index)
        self.head = index
        return self

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        super().check_config(config)
        checks.irreps(checks.field(config, "irreps_sh"), "irreps_sh")
        checks.irreps(checks.field(config, "irreps_embedding"), "irreps_embedding")
        checks.positive(checks.field(config, "avg_num_neighbors"), "avg_num_neighbors")
        if config.get("wigner_convention", "e3nn-0.5") not in ("e3nn-0.5", "e3nn-0.4"):
            raise checks.ConfigError(f"wigner_convention must be 'e3nn-0.5' or 'e3nn-0.4', got "
                                     f"{config.get('wigner_convention')!r:.40}")  # fmt: skip
        checks.heads(config)
        layers = checks.layer_specs(config)
        for t, spec in enumerate(layers):
            where = f"layers[{t}]"
            for key in ("irreps_in", "irreps_target", "irreps_mid", "irreps_out"):
                checks.irreps(checks.field(spec, key, where), f"{where}.{key}")
            checks.integer(checks.field(spec, "correlation", where), f"{where}.correlation", 1, 4)
            checks.integer(checks.field(spec, "weight_numel", where), f"{where}.weight_numel", 1,
                           checks.MAX_WEIGHTS_PER_EDGE)  # fmt: skip
            if checks.field(spec, "readout", where).get("kind") not in ("linear", "nonlinear"):
                raise checks.ConfigError(f"{where}.readout.kind must be 'linear' or 'nonlinear'")

    @classmethod
    def config_from_hyperparameters(cls, atomic_numbers, **hyperparameters) -> dict[str, Any]:
        """:func:`mace_spline_config`."""
        return mace_spline_config(atomic_numbers, **hyperparameters)

    def initialise(self, generator: torch.Generator) -> MaceSplineModel:
        return initialise_parameters(self, generator)

    def embed(self, species: torch.Tensor) -> torch.Tensor:
        """``[Linear(onehot) | zero energies | species index]``, ``(n_atoms, feature_widths[0])``."""
        dtype = self.scale.dtype
        h = self.embedding(nn.functional.one_hot(species, self.n_species).to(dtype))
        zeros = h.new_zeros((h.shape[0], self.n_heads))
        return torch.cat((h, zeros, species.to(dtype).unsqueeze(1)), dim=1)

    def readout(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(n_atoms,)`` eV: the carried readout sum, scaled, shifted, plus E0."""
        dim = self.layers[-1].irreps_out.dim
        e = x[:, dim + self.head]
        k = self.head
        return e * self.scale[k][species] + self.shift[k][species] + self.atomic_energies[k][species]

    @property
    def feature_widths(self) -> list[int]:
        return [self.embedding.irreps_out.dim + self.n_heads + 1] + [layer.width_out for layer in self.layers]


def mace_spline_config(
    atomic_numbers: Sequence[int],
    *,
    channels: int = 16,
    max_L: int = 1,
    max_ell: int = 3,
    correlation: int | Sequence[int] = 3,
    n_layers: int = 2,
    cutoff: float = 5.0,
    n_intervals: int = 100,
    avg_num_neighbors: float,
    mlp_hidden: int = 16,
    residual_first: bool = True,
    heads: Sequence[str] = (),
    name: str = "facet-spline-mace",
) -> dict[str, Any]:
    """A complete ``facet-spline-mace`` config built the way mace-torch's ``MACE`` builds its
    layers (``hidden_irreps = channels x (0e + 1o + ..)`` up to ``max_L``, edge harmonics up to
    ``max_ell``, the last layer keeping scalars only and reading out through an MLP of
    ``mlp_hidden`` SiLU units per head). ``U`` tensors: :func:`.contraction.coupling_basis`."""
    numbers = [int(z) for z in atomic_numbers]
    if not numbers or len(set(numbers)) != len(numbers) or not all(1 <= z <= 118 for z in numbers):
        raise ValueError(f"atomic_numbers must be distinct atomic numbers 1..118, got {list(atomic_numbers)}")
    if isinstance(correlation, int):
        correlation = [correlation] * n_layers
    irreps_sh = o3.Irreps.spherical_harmonics(max_ell)
    hidden = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(max_L + 1)])
    target = (irreps_sh * channels).sort()[0].simplify()
    heads = list(heads)
    n_heads = max(1, len(heads))
    layers = []
    irreps_in = o3.Irreps(f"{channels}x0e")
    for t in range(n_layers):
        irreps_out = o3.Irreps(f"{channels}x0e") if t == n_layers - 1 else hidden
        irreps_mid, instructions = convolution_paths(irreps_in, irreps_sh, target)
        irreps_a = o3.Irreps([(1, ir) for _, ir in target])
        n_params = [[coupling_basis(irreps_a, ir, nu).shape[-1] for nu in range(1, correlation[t] + 1)]
                    for _, ir in irreps_out]  # fmt: skip
        last = t == n_layers - 1
        layers.append({
            "residual": bool(residual_first or t > 0),
            "irreps_in": str(irreps_in),
            "irreps_mid": str(irreps_mid),
            "irreps_target": str(target),
            "irreps_out": str(irreps_out),
            "instructions": [list(ins) for ins in instructions],
            "weight_numel": int(sum(irreps_in[i].mul for i, *_ in instructions)),
            "correlation": int(correlation[t]),
            "n_params": n_params,
            "readout": ({"kind": "nonlinear", "hidden": f"{mlp_hidden * n_heads}x0e",
                         "activation_scale": activation_scale()} if last else {"kind": "linear"}),
        })  # fmt: skip
        irreps_in = irreps_out
    config = {
        "format_version": 1,
        "architecture": ARCHITECTURE,
        "name": name,
        "description": f"facet-spline-mace model, {channels} channels, max_L {max_L}, correlation {correlation}",
        "cutoff": float(cutoff),
        "atomic_numbers": numbers,
        "irreps_sh": str(irreps_sh),
        "irreps_embedding": f"{channels}x0e",
        "avg_num_neighbors": float(avg_num_neighbors),
        "wigner_convention": "e3nn-0.5",
        "radial": {"kind": "cubic_hermite_c2", "n_intervals": int(n_intervals), "r_max": float(cutoff),
                   "c1_only_at": []},  # fmt: skip
        "layers": layers,
    }
    if heads:
        config["heads"] = heads
        config["default_head"] = heads[0]
    return config


@torch.no_grad()
def initialise_parameters(model: MaceSplineModel, generator: torch.Generator) -> MaceSplineModel:
    """Deterministic random parameters (float64 draws from ``generator``); ``U`` gets
    :func:`.contraction.coupling_basis`. Returns ``model``."""
    done: set[int] = set()

    def assign(param: nn.Parameter, value: torch.Tensor) -> None:
        param.copy_(value.to(dtype=param.dtype, device=param.device))
        done.add(id(param))

    for module in model.modules():
        if isinstance(module, (o3.Linear, o3.FullyConnectedTensorProduct)):
            for param in module.parameters(recurse=False):
                assign(param, torch.randn(param.shape, generator=generator, dtype=torch.float64))
        elif isinstance(module, SplineRadial):
            values, slopes = random_radial_table(module.n_intervals + 1, module.n_out, module.r_max, generator)
            assign(module.values, values)
            assign(module.slopes, slopes)
            module.train(module.training)
        elif isinstance(module, SymmetricContraction):
            module.set_basis()
            for pname, param in module.named_parameters(recurse=False):
                if pname.startswith("U_"):
                    done.add(id(param))
                else:
                    k = max(1, param.shape[1])
                    assign(param, torch.randn(param.shape, generator=generator, dtype=torch.float64) / k)
    assign(model.scale, torch.ones(model.scale.shape, dtype=torch.float64))
    assign(model.shift, torch.zeros(model.shift.shape, dtype=torch.float64))
    assign(model.atomic_energies, torch.zeros(model.atomic_energies.shape, dtype=torch.float64))
    unknown = [n for n, p in model.named_parameters() if id(p) not in done]
    if unknown:
        raise ValueError(f"initialise_parameters does not know {unknown}")
    return model
