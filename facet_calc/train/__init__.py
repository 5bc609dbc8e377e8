"""Training and fine-tuning of facet_calc potentials (knows nothing of the command line).

* :mod:`.data`: labelled structures -> checked graphs -> batches
* :mod:`.loss`: the weighted energy/force/stress loss and the error metrics
* :mod:`.trainer`: the loop (AdamW, schedule, clipping, EMA, early stopping, checkpoints)
* :mod:`.finetune`: a shipped or saved potential tuned on new data, saved as a potential
"""

from .data import Configuration, DataError, LabelKeys, read_configurations
from .finetune import FinetuneResult, finetune, refit_shifts, set_trainable
from .loss import LossWeights
from .trainer import Trainer, TrainSettings

__all__ = [
    "Configuration",
    "DataError",
    "FinetuneResult",
    "LabelKeys",
    "LossWeights",
    "TrainSettings",
    "Trainer",
    "finetune",
    "read_configurations",
    "refit_shifts",
    "set_trainable",
]
