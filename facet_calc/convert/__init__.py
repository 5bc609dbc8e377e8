"""Converters from other model formats to facet_calc potentials (SevenNet needs the optional
``sevenn``, MACE needs ``mace-torch``).

:func:`convert` turns a checkpoint file into a measured potential folder (``facet-calc
convert``); :func:`convert_sevennet` and :func:`facet_calc.convert.mace.convert_mace` are the
bare converters (config and tensors).
"""

from .fidelity import BOUNDS, FidelityError
from .pipeline import Conversion, convert, detect_source
from .sevennet import UnsupportedLayout, convert_sevennet, unsupported_pieces

__all__ = ["BOUNDS", "Conversion", "FidelityError", "UnsupportedLayout", "convert", "convert_sevennet",
           "detect_source", "unsupported_pieces"]  # fmt: skip
