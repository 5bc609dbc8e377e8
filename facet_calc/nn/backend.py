"""The one switch that says how the convolutions and linears are computed.

Three implementations of the same maps, with the same parameters and the same results:

* ``"e3nn"``: e3nn's generic ``TensorProduct`` and ``Linear`` -- the reference that the others
  are tested against;
* ``"torch"``: specialised pure-torch operations (any device; twice differentiable in training
  mode, so it is the backend for training on forces and for Hessians);
* ``"kernel"``: the fused convolution kernel (compiled C++ on the CPU, Triton on CUDA) with the
  specialised linears; differentiable once, and not with respect to the spline tables. Where no
  kernel serves the device (no compiler, no Triton, ``FACET_CALC_KERNELS=0``) the torch path
  runs instead.

``"auto"`` means ``"kernel"``. Choose with ``FacetModel.set_backend(name)`` (or the ``backend``
argument of ``load_potential`` and ``FacetCalculator``); ``FacetModel.backend`` says which one
actually runs on the model's device.
"""

from __future__ import annotations

import torch

BACKENDS = ("e3nn", "torch", "kernel")


def check_backend(name: str) -> str:
    """``name`` with ``"auto"`` resolved; ``ValueError`` for an unknown name."""
    if name == "auto":
        return "kernel"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of 'auto', {', '.join(map(repr, BACKENDS))}")
    return name


def effective_backend(name: str, device: torch.device) -> str:
    """The backend that runs for the requested ``name`` on ``device``."""
    name = check_backend(name)
    if name == "kernel":
        from .fast_convolution import kernel_backend

        return "kernel" if kernel_backend(torch.device(device)) is not None else "torch"
    return name
