"""Model families by name: the ``architecture`` field of a potential's config.json picks one.

A family registers a class (or any callable) that takes the config dict and returns a
``torch.nn.Module`` mapping ``(species, edge_vec, senders, receivers)`` to per-atom energies,
with ``set_backend(name)``. Adding a family means registering it here; loading, the
calculator and training need no change::

    @register_architecture("my-family")
    class MyModel(nn.Module): ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

#: potential file format versions this code reads
SUPPORTED_FORMAT_VERSIONS = (1,)

ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}


def register_architecture(name: str):
    """Class decorator: make ``name`` in a config's ``architecture`` build this class."""

    def decorate(builder):
        if name in ARCHITECTURES and ARCHITECTURES[name] is not builder:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = builder
        return builder

    return decorate


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Torch's default dtype set to ``dtype`` inside the block and restored after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(config: dict[str, Any], dtype: torch.dtype = torch.float64) -> nn.Module:
    """The model that ``config["architecture"]`` names, with freshly initialised parameters.

    It is built with ``dtype`` as torch's default dtype (restored afterwards), so that e3nn
    computes its constants (Clebsch-Gordan blocks, normalisations) in that precision rather
    than rounding float32 constants up; in float64 that keeps equivariance at 1e-12, not 1e-8.
    """
    from . import facet as _facet  # noqa: F401  (registers the built-in families)
    from . import model as _families  # noqa: F401

    version = config.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(
            f"potential format_version {version!r} is not supported by this facet_calc (it reads "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); upgrade facet_calc or reconvert the potential"
        )
    name = config.get("architecture")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known architectures: {', '.join(sorted(ARCHITECTURES))}")
    with default_dtype(dtype):
        return ARCHITECTURES[name](config)
