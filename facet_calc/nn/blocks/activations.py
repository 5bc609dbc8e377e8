"""Activation functions by the names used in potential configs."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def _shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.softplus(x) - math.log(2.0)


#: Activation functions by the names used in potential configs.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": nn.functional.silu,
    "tanh": torch.tanh,
    "ssp": _shifted_softplus,
    "relu": nn.functional.relu,
    "abs": torch.abs,
    "sigmoid": torch.sigmoid,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
