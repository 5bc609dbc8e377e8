"""The SevenNet/NequIP layout with spline radial weights (converted SevenNet potentials)."""

from .config import nequip_spline_config
from .model import NequipSplineModel

__all__ = ["NequipSplineModel", "nequip_spline_config"]
