"""Pure torch + e3nn building blocks. Knows nothing of ASE or files."""

from .model import FacetModel, evaluate, evaluate_by_strain
from .radial import SplineRadial, fit_clamped_cubic_spline

__all__ = ["FacetModel", "evaluate", "evaluate_by_strain", "SplineRadial", "fit_clamped_cubic_spline"]
