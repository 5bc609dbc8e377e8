"""Converters from other model formats to facet_calc potentials (needs the optional ``sevenn``).

:func:`convert` turns a checkpoint file into a measured potential folder (``facet-calc
convert``); :func:`convert_sevennet` is the bare SevenNet converter (config and tensors).
"""

from .fidelity import BOUNDS, FidelityError
from .pipeline import Conversion, convert, detect_source
from .sevennet import UnsupportedLayout, convert_sevennet, unsupported_pieces

__all__ = ["BOUNDS", "Conversion", "FidelityError", "UnsupportedLayout", "convert", "convert_sevennet",
           "detect_source", "unsupported_pieces"]  # fmt: skip
