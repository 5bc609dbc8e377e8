"""An exponential moving average of the trainable weights: the weights that are evaluated on
the validation set and saved."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class ExponentialMovingAverage:
    """``ema = d * ema + (1 - d) * w`` after every step, with ``d = min(decay, (1 + n) / (10 + n))``
    so that the first steps are not dominated by the initial weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = model
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in self.model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1 - d)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model carries the EMA weights inside the block, its own weights after it."""
        params = dict(self.model.named_parameters())
        backup = {k: params[k].detach().clone() for k in self.shadow}
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    params[k].copy_(v)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        params = dict(self.model.named_parameters())
        for k, v in self.shadow.items():
            params[k].copy_(v)
