"""facet_calc: spline-radial E(3)-equivariant interatomic potentials as ASE calculators.

>>> from facet_calc import FacetCalculator, list_potentials
>>> "7net-0-spline" in list_potentials()
True
"""

from .calculator import FacetCalculator
from .potential import DEFAULT_POTENTIAL, Potential, list_potentials, load_potential

__all__ = ["FacetCalculator", "Potential", "load_potential", "list_potentials", "DEFAULT_POTENTIAL"]
__version__ = "0.1.0"
