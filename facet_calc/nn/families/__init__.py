"""The model families, by the ``architecture`` name a potential's config.json gives.

The table below is the registry: a new family is a folder beside these (a subclass of
:class:`~facet_calc.nn.contract.EnergyModel`) plus one line in it. ``build_model`` builds from
a config; nothing registers itself by being imported.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..blocks.wigner import wigner_3j
from ..config_checks import ConfigError
from ..contract import EnergyModel
from .facet.model import FacetModel
from .mace_spline.model import MaceSplineModel
from .nequip_spline.model import NequipSplineModel

FAMILIES: dict[str, type[EnergyModel]] = {
    NequipSplineModel.architecture: NequipSplineModel,  # SevenNet/NequIP layout: converted potentials
    FacetModel.architecture: FacetModel,  # the Facet architecture: native, distilled students
    MaceSplineModel.architecture: MaceSplineModel,  # MACE layout: converted MACE models
}

#: potential file format versions this code reads
SUPPORTED_FORMAT_VERSIONS = (1,)

_W3J_BUFFER = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)$")


def build_model(config: dict[str, Any], dtype: torch.dtype = torch.float64) -> EnergyModel:
    """The model that ``config["architecture"]`` names, in ``dtype``, with fresh parameters.

    Nothing process-wide changes: the modules are built under whatever default dtype torch
    has, every constant the blocks derive is kept in float64 and rounded once by ``.to(dtype)``,
    and e3nn's Clebsch-Gordan buffers (built in the default dtype) are recomputed in float64
    first, so a float64 model has float64-exact constants (equivariance at 1e-12) and a float32
    model correctly rounded ones. Those buffers take the sign convention the potentials were
    trained with (:mod:`facet_calc.nn.blocks.wigner`), whichever e3nn is installed.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"a potential config must be a JSON object (a dict), got {type(config).__name__}")
    version = config.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(
            f"potential format_version {version!r} is not supported by this facet_calc (it reads "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); upgrade facet_calc or reconvert the potential"
        )
    name = config.get("architecture")
    if name not in FAMILIES:
        raise ValueError(f"unknown architecture {name!r}; known architectures: {', '.join(sorted(FAMILIES))}")
    FAMILIES[name].check_config(config)
    model = FAMILIES[name](config)
    _exact_wigner_buffers(model)
    return model.to(dtype)


def _exact_wigner_buffers(model: torch.nn.Module) -> None:
    """Recompute e3nn's Wigner-3j buffers (``_w3j_l1_l2_l3``) in float64, in the sign
    convention the family declares (``model.wigner_convention``; default e3nn >= 0.5's)."""
    convention = getattr(model, "wigner_convention", "e3nn-0.5")
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            match = _W3J_BUFFER.search(name)
            if match is not None and buffer is not None and buffer.is_floating_point():
                l1, l2, l3 = map(int, match.groups())
                module._buffers[name] = wigner_3j(l1, l2, l3, convention=convention)
