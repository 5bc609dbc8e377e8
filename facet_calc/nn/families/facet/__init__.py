"""The Facet architecture: spline convolutions and spherical-grid mixing (native students)."""

from .model import FacetModel, facet_config

__all__ = ["FacetModel", "facet_config"]
