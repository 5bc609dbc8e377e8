"""e3nn modules as the families build them: parameter holders and the reference path.

e3nn generates code for every ``Linear`` and ``TensorProduct`` at construction and, by default,
optimises the einsums of that code with opt_einsum_fx. For a SevenNet-sized model that
optimisation is most of the start-up of every command (about 40 ms per linear, 25 linears and
tensor products), while the fast paths never run the generated code: they read the parameters.
So the modules are built with ``_optimize_einsums=False``, passed per module (e3nn's
``set_optimization_defaults`` would change the setting for the whole process). The reference
path then contracts in the order written, which changes its results by round-off only.
"""

from __future__ import annotations

from e3nn import o3


def linear(irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, **kwargs) -> o3.Linear:
    """``o3.Linear(irreps_in, irreps_out, biases=False, **kwargs)`` without einsum optimisation."""
    kwargs.setdefault("biases", False)
    return o3.Linear(o3.Irreps(irreps_in), o3.Irreps(irreps_out), _optimize_einsums=False, **kwargs)


def tensor_product(irreps_in1, irreps_in2, irreps_out, instructions, **kwargs) -> o3.TensorProduct:
    """``o3.TensorProduct`` without einsum optimisation (same arguments)."""
    return o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions, _optimize_einsums=False, **kwargs)
