"""MACE (mace-torch's layout) with spline radial weights (converted MACE models)."""

from .model import MaceSplineModel, mace_spline_config

__all__ = ["MaceSplineModel", "mace_spline_config"]
