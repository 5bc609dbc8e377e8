"""How the convolutions, linears and gates are computed: a :class:`Backend` handed to layers.

Three implementations of the same maps, with the same parameters and the same results:

* :data:`REFERENCE` (``"e3nn"``): e3nn's generic ``TensorProduct``, ``Linear`` and ``Gate``
  -- the plain path that the others are tested against;
* :data:`TORCH` (``"torch"``): specialised pure-torch operations (any device; twice
  differentiable, so it is the backend for training on forces and for Hessians);
* :data:`KERNEL` (``"kernel"``): the fused convolution kernel (compiled C++ on the CPU, Triton
  on CUDA) with the specialised linears; differentiable once, and not with respect to the
  spline tables. Where no kernel serves the device (no compiler, no Triton, or the
  environment sets ``FACET_CALC_KERNELS=0``, read at every evaluation) the torch path runs.

``"auto"`` means ``"kernel"``. Choose with ``model.set_backend(name)`` (or the ``backend``
argument of ``load_potential``); ``model.backend`` names the one that actually runs on the
model's device. Layers call ``backend.linear(...)``, ``backend.convolution(...)`` and
``backend.gate(...)`` with their reference module and its fast twin; nothing else in a layer
depends on the choice.
"""

from __future__ import annotations

import torch

from ._kernels import kernel_launcher


class Backend:
    """One implementation choice (see module docstring); compare with ``is`` or ``.name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    # the three backends are compared by identity (``is``): a copied or unpickled model must
    # hold the same objects, or a deep copy (e.g. a float32 copy of a model) would silently
    # leave the fused kernel for the torch path
    def __copy__(self) -> Backend:
        return self

    def __deepcopy__(self, memo: dict) -> Backend:
        return self

    def __reduce__(self):
        return (resolve_backend, (self.name,))

    @property
    def reference(self) -> bool:
        """e3nn's generic modules run (every other choice runs the fast twins)."""
        return self is REFERENCE

    def linear(self, linear: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``linear`` (an ``o3.Linear``) of ``x``, or its ``FastLinear`` twin on its weights
        (with the compiled per-order products for :data:`KERNEL`, where they serve)."""
        return linear(x) if self.reference else fast(x, linear.weight, use_kernel=self is KERNEL)

    def gate(self, gate: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return gate(x) if self.reference else fast(x)

    def convolution(self, conv, fast, x, sh, r, senders, receivers, edges=None, n_rows=None) -> torch.Tensor:
        """``conv`` (a ``SplineConvolution``), or its ``FastSplineConvolution`` twin (fused
        kernel for :data:`KERNEL`, where one serves the device)."""
        if self.reference:
            return conv(x, sh, r, senders, receivers, n_rows=n_rows)
        table = conv.radial.table()
        return fast(x, sh, r, senders, receivers, table, use_kernel=self is KERNEL, edges=edges, n_rows=n_rows)

    def on(self, device: torch.device) -> Backend:
        """The backend that runs on ``device``: :data:`KERNEL` reads :data:`TORCH` where no
        kernel serves it."""
        if self is KERNEL and kernel_launcher(torch.device(device)) is None:
            return TORCH
        return self


REFERENCE = Backend("e3nn")
TORCH = Backend("torch")
KERNEL = Backend("kernel")
BACKENDS = {b.name: b for b in (REFERENCE, TORCH, KERNEL)}


def resolve_backend(choice: str | Backend = "auto") -> Backend:
    """A :class:`Backend` from its name (``"auto"``: :data:`KERNEL`); ``ValueError`` for an
    unknown name."""
    if isinstance(choice, Backend):
        return choice
    if choice == "auto":
        return KERNEL
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}; choose one of 'auto', {', '.join(map(repr, BACKENDS))}")
    return BACKENDS[choice]
