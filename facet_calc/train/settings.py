"""The settings of a training run, as data: saved with every checkpoint and in the card of
the potential it produces, and compared on resume."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .loss import LossWeights


@dataclass
class TrainSettings:
    """Everything that decides a training run (configuration is data: saved with checkpoints).

    ``schedule``: ``"cosine"`` (linear warm-up over ``warmup_epochs``, then cosine decay to
    ``lr * min_lr_factor`` at the last epoch), ``"plateau"`` (divide by ``1 / plateau_factor``
    when the validation loss has not improved for ``plateau_patience`` epochs) or
    ``"constant"``. ``ema_decay=None`` disables the EMA; ``early_stopping_patience=None``
    disables early stopping.

    The guard (:mod:`.guard`): the starting model is evaluated on the validation set before
    epoch 1; an epoch whose validation MAEs, each divided by the starting model's, average more
    than ``1 + guard_tolerance`` counts as worse; after ``guard_patience`` such epochs in
    a row the run stops; the weights kept are the best epoch's that is not worse (the starting
    model's at worst), with a loud warning. ``guard_patience=None`` disables the stop (the best
    weights are still kept). ``guard=False`` turns the guard off (the last epoch's weights are
    saved, whatever they are).

    ``stress_offset``: what to do when the label diagnostics (:mod:`.diagnostics`) find the
    stress labels offset from the base model by far more than their spread (likely Pulay
    stress): ``"auto"`` subtracts the measured isotropic offset from the stress labels, with a
    warning and a line in the card; ``"keep"`` trains on them as they are (warning only).
    """

    epochs: int = 50
    batch_size: int = 4
    #: also bound a batch's edges (memory): a batch of ``batch_size`` structures with more is
    #: split into consecutive steps (``facet_calc.graph.group_by_edge_budget``); None: no bound
    max_edges: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_factor: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    clip_grad_norm: float | None = 10.0
    ema_decay: float | None = 0.99
    early_stopping_patience: int | None = None
    guard: bool = True
    guard_patience: int | None = 5
    guard_tolerance: float = 0.0
    stress_offset: str = "auto"
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    loss: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = LossWeights(**self.loss)
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.max_edges is not None and self.max_edges < 1:
            problems.append(f"max_edges must be None or >= 1 (got {self.max_edges})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number (got {self.lr})")
        if self.schedule not in ("cosine", "plateau", "constant"):
            problems.append(f"schedule must be 'cosine', 'plateau' or 'constant' (got {self.schedule!r})")
        if self.guard_patience is not None and self.guard_patience < 1:
            problems.append(f"guard_patience must be None or >= 1 (got {self.guard_patience})")
        if not (self.guard_tolerance >= 0 and math.isfinite(self.guard_tolerance)):
            problems.append(f"guard_tolerance must be a finite number >= 0 (got {self.guard_tolerance})")
        if self.stress_offset not in ("auto", "keep"):
            problems.append(f"stress_offset must be 'auto' or 'keep' (got {self.stress_offset!r})")
        if self.dtype not in ("float32", "float64"):
            problems.append(f"dtype must be 'float32' or 'float64' (got {self.dtype!r})")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
