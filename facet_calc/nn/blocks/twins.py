"""A layer built of reference modules, each with a fast twin; its :class:`Backend` picks which runs."""

from __future__ import annotations

import torch
from torch import nn

from ..backend import KERNEL, Backend


class TwinnedLayer(nn.Module):
    """Base of the families' layers: ``self.fast[name]`` is the fast twin of the reference module
    ``self.<name>`` (same parameters, read at every call), and ``set_backend`` hands the choice
    to the layer and to every sub-block that has one (the S2 mixer, the residual)."""

    def _set_twins(self, **fast: nn.Module) -> None:
        """Register the fast twins, by the names of their reference modules."""
        self.fast = nn.ModuleDict(fast)
        #: which implementation runs (``nn.backend``); set through the model's ``set_backend``
        self.backend: Backend = KERNEL

    def set_backend(self, backend: Backend) -> None:
        for module in self.modules():
            if isinstance(getattr(module, "backend", None), Backend):
                module.backend = backend

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.backend.linear(getattr(self, name), self.fast[name], x)

    def _convolve(self, h, sh, r, senders, receivers, edges, n_rows: int) -> torch.Tensor:
        """The layer's ``convolution`` (reference) or its fast twin, for ``n_rows`` receivers."""
        conv = self.convolution
        return self.backend.convolution(conv, self.fast["convolution"], h, sh, r, senders, receivers, edges, n_rows)
