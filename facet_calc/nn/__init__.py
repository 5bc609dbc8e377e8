"""Pure torch + e3nn model code: blocks, families and their contract, evaluation. Knows nothing
of ASE, files or engines."""

import torch

# e3nn 0.4.4 (what mace-torch pins) loads its constants with torch.load at import, which torch
# >= 2.6 refuses without an allowlisted ``slice``; allow it for that import only, so importing
# facet_calc depends on no global torch setting (later e3nn imports hit the module cache)
with torch.serialization.safe_globals([slice]):
    import e3nn.o3  # noqa: F401

from .contract import EnergyModel, initialise_for_training
from .families import FAMILIES, build_model
from .forward import evaluate, evaluate_by_strain

__all__ = ["EnergyModel", "FAMILIES", "build_model", "evaluate", "evaluate_by_strain", "initialise_for_training"]
