"""Pure torch + e3nn model code: blocks, families and their contract, evaluation. Knows nothing
of ASE, files or engines."""

from .contract import EnergyModel, initialise_for_training
from .families import FAMILIES, build_model
from .forward import evaluate, evaluate_by_strain

__all__ = ["EnergyModel", "FAMILIES", "build_model", "evaluate", "evaluate_by_strain", "initialise_for_training"]
