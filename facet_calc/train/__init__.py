"""Training and fine-tuning of facet_calc potentials (knows nothing of the command line).

* :mod:`.data`: labelled structures -> checked graphs -> batches
* :mod:`.datafiles`: the files a run reads (train, valid or a seeded split, label keys)
* :mod:`.loss`: the weighted (balanced by default) energy/force/stress loss and the error metrics
* :mod:`.diagnostics`: the labels checked against the base before fine-tuning (offsets,
  consistency, outliers, duplicates, train/valid overlap)
* :mod:`.guard`: the validation guard (never end worse than the start without saying so)
* :mod:`.settings`: :class:`TrainSettings`, everything that decides a run, as data
* :mod:`.trainer`: the loop (AdamW, schedule, clipping, EMA, early stopping, checkpoints)
* :mod:`.fit`: ``fit(model, train, valid, settings, out_dir)``, the core; no potential files
* :mod:`.shifts`: the least-squares fit of the per-element energy shifts
* :mod:`.output`: a trained model saved as a potential folder with its model card
* :mod:`.finetune`: a shipped or saved potential + refitted shifts + ``fit``
* :mod:`.scratch`: a model config, freshly initialised + fitted shifts + ``fit``
* :mod:`.recipe`: a YAML file that describes either kind of run
"""

from .data import Configuration, DataError, LabelKeys, read_configurations
from .datafiles import DataFiles
from .diagnostics import LabelReport, TrainingDataWarning, diagnose
from .finetune import FinetuneResult, finetune
from .fit import FitResult, fit, set_trainable
from .guard import GuardWarning, ValidationGuard
from .loss import LossWeights
from .output import TrainResult
from .scratch import train_from_scratch
from .settings import TrainSettings
from .shifts import refit_shifts
from .trainer import Trainer

__all__ = [
    "Configuration",
    "DataError",
    "DataFiles",
    "FinetuneResult",
    "FitResult",
    "GuardWarning",
    "LabelReport",
    "LabelKeys",
    "LossWeights",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "TrainingDataWarning",
    "ValidationGuard",
    "diagnose",
    "finetune",
    "fit",
    "read_configurations",
    "refit_shifts",
    "set_trainable",
    "train_from_scratch",
]
