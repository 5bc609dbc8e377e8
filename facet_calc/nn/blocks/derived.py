"""Tensors derived from a module's parameters (assembled weight matrices, reordered spline
tables), kept between calls while the parameters stay as they are.

Inference re-assembles the same matrices from the same parameters at every step; at 216 atoms
that was several per cent of a step. A cached value is reused only while every source tensor is
the very object it was made from (moving a model to another device or dtype makes new ones) and
has not been modified in place since (``Tensor._version``, which ``copy_``, ``load_state_dict``
and optimiser steps bump). Nothing is cached while a source takes gradients and gradient mode
is on: then the derivation must be part of the graph (training).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch


class DerivedCache:
    """``cache.get(key, sources, make)``: ``make()``, or the value it gave last time for
    ``key`` if ``sources`` (a tuple of tensors) are unchanged since."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple[torch.Tensor, ...], tuple[int, ...], torch.Tensor]] = {}

    def get(self, key: Hashable, sources: tuple[torch.Tensor, ...], make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled() and any(s.requires_grad for s in sources):
            self._entries.pop(key, None)
            return make()
        entry = self._entries.get(key)
        if entry is not None:
            kept, versions, value = entry
            # identity, not equality: the entry holds its sources, so their storage cannot be reused
            if len(kept) == len(sources) and all(
                a is b and a._version == v for a, b, v in zip(kept, sources, versions)
            ):
                return value
        value = make()
        self._entries[key] = (sources, tuple(s._version for s in sources), value)
        return value
