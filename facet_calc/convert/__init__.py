"""Converters from other model formats to facet_calc potentials (optional extras)."""

from .sevennet import convert_sevennet

__all__ = ["convert_sevennet"]
