"""A ``facet-spline-nequip`` config from a few hyperparameters, and its initial parameters.

:func:`nequip_spline_config` writes the full model config (every layer's irreps, tensor-product
instructions, weight count and gate) that :class:`.model.NequipSplineModel` reads, built the way
NequIP and SevenNet build theirs; :func:`initialise_parameters` gives a freshly built model
deterministic random parameters. Example::

    >>> from facet_calc.nn.contract import initialise_for_training
    >>> from facet_calc.nn.families import build_model
    >>> config = nequip_spline_config([1, 8], channels=8, lmax=1, n_layers=2, avg_num_neighbors=12.0)
    >>> model = initialise_for_training(build_model(config), seed=0)
    >>> config["layers"][0]["irreps_tp_out"]
    '8x0e+8x1e'

Layer rule (SevenNet ``IrrepsConvolution`` / NequIP ``InteractionBlock``): the hidden features
hold ``channels[l]`` copies of each irrep ``l <= lmax`` (both parities when ``parity``). A layer
outputs the hidden irreps that its input and the edge spherical harmonics can reach; its
convolution has one ``'uvu'`` path, with ``mul_in`` radial weights, for every input irrep, every
spherical harmonic and every irrep of their product that the layer outputs; the last layer
outputs scalars only. Each output irrep ``l > 0`` is gated by its own even scalars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from e3nn import o3
from torch import nn

from ...blocks.activations import ACTIVATIONS
from ...blocks.convolution import convolution_paths
from ...blocks.radial import SplineRadial, random_radial_table
from ...blocks.species_linear import SpeciesLinear

ARCHITECTURE = "facet-spline-nequip"

#: Activation of odd scalars (``parity=True``): it must be an odd function to keep the parity,
#: and NequIP and SevenNet both use tanh.
ODD_ACTIVATION = "tanh"

#: the self-connection of a layer: one linear map, or one per species (``SpeciesLinear``)
SELF_CONNECTIONS = ("linear", "species")


def _irreps_str(irreps: list[tuple[int, o3.Irrep]]) -> str:
    return str(o3.Irreps(irreps).simplify())


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_activation(name: str, value: str) -> str:
    if value not in ACTIVATIONS:
        raise ValueError(f"{name}={value!r} is not a known activation; choose one of {sorted(ACTIVATIONS)}")
    return value


def _layer(
    irreps_in: o3.Irreps,
    irreps_sh: o3.Irreps,
    target: o3.Irreps,
    denominator: float,
    act_scalars: str,
    act_gates: str,
    self_connection: str = "linear",
) -> tuple[dict[str, Any], o3.Irreps]:
    """One layer's config entry and its output irreps (the next layer's input)."""
    # the target irreps this layer can reach (NequIP drops the others: no path, no weights)
    reachable = {ir_out for _, ir_in in irreps_in for _, ir_sh in irreps_sh for ir_out in ir_in * ir_sh}
    irreps_out = o3.Irreps([(mul, ir) for mul, ir in target if ir in reachable])

    irreps_mid, instructions = convolution_paths(irreps_in, irreps_sh, irreps_out)
    weight_numel = sum(irreps_in[i].mul for i, *_ in instructions)

    scalars = [(mul, ir) for mul, ir in irreps_out if ir.l == 0]
    gated = [(mul, ir) for mul, ir in irreps_out if ir.l > 0]
    # the hidden features always hold even scalars (the embedding), so 0e gates always exist
    gates = [(mul, o3.Irrep("0e")) for mul, _ in gated]
    scalars_irreps = o3.Irreps(scalars).simplify()
    gates_irreps = o3.Irreps(gates).simplify()
    spec = {
        "irreps_in": str(irreps_in),
        "irreps_tp_out": str(irreps_mid),
        "instructions": [list(ins) for ins in instructions],
        "weight_numel": int(weight_numel),
        "denominator": float(denominator),
        "self_connection": self_connection,
        "gate": {
            "scalars": str(scalars_irreps),
            "act_scalars": [act_scalars if ir.p == 1 else ODD_ACTIVATION for _, ir in scalars_irreps],
            "gates": str(gates_irreps),
            "act_gates": [act_gates for _ in gates_irreps],
            "gated": _irreps_str(gated),
        },
    }
    # e3nn's Gate outputs the activated scalars followed by the gated irreps
    return spec, o3.Irreps(scalars + gated).simplify()


def nequip_spline_config(
    atomic_numbers: Sequence[int],
    *,
    channels: int | Sequence[int] = 32,
    lmax: int = 2,
    n_layers: int = 3,
    cutoff: float = 5.0,
    n_intervals: int = 100,
    readout_hidden: int | None = None,
    parity: bool = False,
    activation_scalars: str = "silu",
    activation_gates: str = "silu",
    self_connection: str | Sequence[str] = "linear",
    avg_num_neighbors: float,
    name: str = "facet-spline-nequip",
) -> dict[str, Any]:
    """The complete config of a ``facet-spline-nequip`` model (JSON-able dict, format 1).

    Args:
        atomic_numbers: the elements the model knows, in species-index order.
        avg_num_neighbors: mean number of neighbours within ``cutoff`` in the training data;
            every convolution divides its message sum by its square root (NequIP's and
            SevenNet's ``avg_num_neigh`` normalisation), which keeps the features O(1).
        channels: multiplicity of each hidden irrep; one int for every ``l``, or one per
            ``l = 0..lmax`` (SevenNet-0: ``(128, 64, 32)``). ``channels[0]`` is also the width
            of the species embedding and of the last layer's scalar output.
        lmax: largest ``l`` of the edge spherical harmonics and of the hidden features.
        n_layers: number of interaction layers.
        cutoff: radial cutoff in Angstrom.
        n_intervals: knot intervals of each spline radial table on ``[0, cutoff]``.
        readout_hidden: scalars between the last layer and the energy; ``None``: half the last
            layer's width, as SevenNet does.
        parity: ``True``: O(3) (the spherical harmonics have parity ``(-1)**l`` and the features
            hold both parities); ``False``: SO(3), every irrep even, as SevenNet-0 has.
        activation_scalars: activation of the even scalars (odd ones get ``tanh``).
        activation_gates: activation of the gate scalars. NequIP and SevenNet use ``"silu"``.
        self_connection: ``"linear"`` (SevenNet-0) or ``"species"``, one linear map per species
            (SevenNet's ``nequip`` self-connection, in SevenNet-MF-ompa/-omat/-omni); one value
            for every layer or a list of one per layer.
        name: stored as the config's ``name``.

    Returns the config dict; ``facet_calc.nn.families.build_model(config)`` builds the model
    (parameters then need ``initialise_for_training`` or loaded weights).
    """
    numbers = list(atomic_numbers)
    if not numbers:
        raise ValueError("atomic_numbers is empty: the model needs at least one element")
    for z in numbers:
        if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not 1 <= z <= 118:
            raise ValueError(f"atomic_numbers holds {z!r}, which is not an atomic number (an integer 1..118)")
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"atomic_numbers holds duplicates: {numbers}")
    lmax = _check_positive_int("lmax", lmax, minimum=0)
    n_layers = _check_positive_int("n_layers", n_layers)
    n_intervals = _check_positive_int("n_intervals", n_intervals, minimum=2)
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = [channels] * (lmax + 1)
    channels = list(channels)
    if len(channels) != lmax + 1:
        raise ValueError(f"channels needs one multiplicity per l = 0..{lmax}, got {channels}")
    channels = [_check_positive_int(f"channels[{l}]", c) for l, c in enumerate(channels)]
    cutoff = float(cutoff)
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive distance in Angstrom, got {cutoff!r}")
    avg = float(avg_num_neighbors)
    if not (math.isfinite(avg) and avg > 0):
        raise ValueError(
            f"avg_num_neighbors must be positive (mean neighbours within the cutoff), got {avg_num_neighbors!r}"
        )
    _check_activation("activation_scalars", activation_scalars)
    _check_activation("activation_gates", activation_gates)
    kinds = [self_connection] * n_layers if isinstance(self_connection, str) else list(self_connection)
    if len(kinds) != n_layers or any(kind not in SELF_CONNECTIONS for kind in kinds):
        raise ValueError(
            f"self_connection={self_connection!r}; give one of {SELF_CONNECTIONS}, or a list of one per layer"
        )

    irreps_sh = o3.Irreps.spherical_harmonics(lmax, p=-1 if parity else 1)
    parities = (1, -1) if parity else (1,)
    hidden = o3.Irreps([(channels[l], (l, p)) for l in range(lmax + 1) for p in parities]).sort().irreps
    irreps_embedding = o3.Irreps(f"{channels[0]}x0e")
    last = o3.Irreps(f"{channels[0]}x0e")

    denominator = math.sqrt(avg)
    layers = []
    irreps_x = irreps_embedding
    for t in range(n_layers):
        target = last if t == n_layers - 1 else hidden
        spec, irreps_x = _layer(
            irreps_x, irreps_sh, target, denominator, activation_scalars, activation_gates, kinds[t]
        )
        layers.append(spec)

    if readout_hidden is None:
        readout_hidden = max(1, irreps_x.dim // 2)
    readout_hidden = _check_positive_int("readout_hidden", readout_hidden)

    hyperparameters = {
        "channels": channels,
        "lmax": lmax,
        "n_layers": n_layers,
        "cutoff": cutoff,
        "n_intervals": n_intervals,
        "readout_hidden": readout_hidden,
        "parity": bool(parity),
        "activation_scalars": activation_scalars,
        "activation_gates": activation_gates,
        "self_connection": self_connection if isinstance(self_connection, str) else kinds,
        "avg_num_neighbors": avg,
    }
    return {
        "format_version": 1,
        "architecture": ARCHITECTURE,
        "name": name,
        "description": f"facet-spline-nequip model built from hyperparameters {hyperparameters}",
        "hyperparameters": hyperparameters,
        "cutoff": cutoff,
        "atomic_numbers": [int(z) for z in numbers],
        "irreps_sh": str(irreps_sh),
        "sh_normalization": "component",
        "irreps_embedding": str(irreps_embedding),
        "readout_hidden": f"{readout_hidden}x0e",
        "radial": {"kind": "cubic_hermite_c2", "n_intervals": n_intervals, "r_max": cutoff, "c1_only_at": []},
        "layers": layers,
    }


@torch.no_grad()
def initialise_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every parameter of a freshly built model a deterministic starting value; in place.

    * e3nn ``Linear`` weights: standard normal, as e3nn itself initialises them (e3nn's path
      normalisation then keeps the features O(1)); biases zero;
    * spline radial tables: :func:`random_radial_table` (zero value and slope at the cutoff);
    * per-species ``scale`` 1 and ``shift`` 0.

    The draws come, in module order, from ``generator`` in float64 on the CPU, so the same
    seed gives the same weights for any dtype and device (rounded to the model's dtype). A
    parameter this function does not know raises
    ``ValueError``, rather than being left at whatever value it had.

    Returns ``model``.
    """
    done: set[int] = set()

    def assign(param: nn.Parameter, value: torch.Tensor) -> None:
        param.copy_(value.to(dtype=param.dtype, device=param.device))
        done.add(id(param))

    for module in model.modules():
        if isinstance(module, o3.Linear):
            for pname, param in module.named_parameters(recurse=False):
                if pname == "weight":
                    assign(param, torch.randn(param.shape, generator=generator, dtype=torch.float64))
                elif pname == "bias":
                    assign(param, torch.zeros(param.shape, dtype=torch.float64))
        elif isinstance(module, SpeciesLinear):  # one e3nn linear weight per species
            assign(module.weight, torch.randn(module.weight.shape, generator=generator, dtype=torch.float64))
        elif isinstance(module, SplineRadial):
            fixed = getattr(module, "fixed_slope_knots", None)
            breaks = [] if fixed is None else torch.nonzero(fixed[1:-1]).flatten().add(1).tolist()
            values, slopes = random_radial_table(module.n_intervals + 1, module.n_out, module.r_max, generator, breaks)
            assign(module.values, values)
            assign(module.slopes, slopes)
            # a table in training mode caches the part of its C2 slopes that the fixed end
            # slopes give; re-entering the current mode recomputes it from the new table
            module.train(module.training)
    for pname in ("scale", "shift"):
        param = getattr(model, pname, None)
        if isinstance(param, nn.Parameter):
            assign(param, torch.full(param.shape, 1.0 if pname == "scale" else 0.0, dtype=torch.float64))
    unknown = [pname for pname, param in model.named_parameters() if id(param) not in done]
    if unknown:
        raise ValueError(
            f"initialise_parameters does not know how to initialise {unknown} of {type(model).__name__}; "
            "it handles e3nn Linear and SpeciesLinear weights, SplineRadial tables, scale and shift"
        )
    return model
