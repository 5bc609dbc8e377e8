"""facet_calc: spline-radial SE(3)-equivariant interatomic potentials as ASE calculators.

>>> from facet_calc import FacetCalculator, list_potentials
>>> "7net-0-spline" in list_potentials()
True
"""

from importlib import import_module

__all__ = ["FacetCalculator", "Potential", "load_potential", "list_potentials", "DEFAULT_POTENTIAL"]
__version__ = "0.1.0"

# Imported on first use (PEP 562): ``facet-calc list`` and ``--version`` need no torch.
_LAZY = {"FacetCalculator": "calculator", "Potential": "potential", "load_potential": "potential",
         "DEFAULT_POTENTIAL": "potential", "list_potentials": "index"}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'facet_calc' has no attribute {name!r}")
