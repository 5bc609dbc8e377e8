"""The fine-tuning guard: a run may not end worse on the validation set than where it started
without saying so.

The starting model (the base, after the per-element shift refit) is evaluated on the
validation set before epoch 1. After every epoch, each property's validation MAE (energy per
atom, forces, stress) is divided by the base's; an epoch is *worse* when the mean of these
ratios exceeds ``1 + tolerance``. The best epoch is the one with the lowest mean ratio, the
base (epoch 0, mean ratio 1) at worst, so the kept weights are never worse than the base on the
validation set as a whole; when they are worse on one property (e.g. forces x0.6 but stress
x1.2), the warning names it. After ``patience`` worse epochs in a row the run stops. (Requiring
every ratio <= 1 was measured too strict: on 4 validation frames the stress MAE, 0.7 GPa,
fluctuates by 30 % and vetoed epochs with forces x0.57 and energies x0.3.)

    guard = ValidationGuard.start(base_row, patience=5, tolerance=0.0)
    improved = guard.judge(epoch, row)      # after each epoch's validation
    guard.should_stop                       # patience exhausted
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: (property, the validation MAE column of the history that measures it)
MAE_COLUMNS = (
    ("energy", "valid_energy_mae_meV_per_atom"),
    ("forces", "valid_forces_mae_meV_per_A"),
    ("stress", "valid_stress_mae_GPa"),
)


class GuardWarning(UserWarning):
    """Fine-tuning did not end with its last epoch's weights: it was stopped, or an earlier
    epoch (or the base itself) was kept because the later ones were worse on validation."""


@dataclass
class ValidationGuard:
    """``base``: the starting model's validation MAE per property (meV/atom, meV/A, GPa);
    ``best_epoch``: the epoch whose weights are kept (0: the base)."""

    base: dict[str, float]
    patience: int | None = 5
    tolerance: float = 0.0
    best_epoch: int = 0
    best_score: float = 1.0
    worse_in_a_row: int = 0
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)  # epoch -> property -> ratio

    @classmethod
    def start(cls, base_row: dict[str, float], patience: int | None, tolerance: float) -> ValidationGuard:
        base = {p: base_row[col] for p, col in MAE_COLUMNS if col in base_row and base_row[col] > 0}
        return cls(base=base, patience=patience, tolerance=tolerance)

    def judge(self, epoch: int, row: dict[str, float]) -> bool:
        """Record ``epoch``'s validation row; True when it is the new best (keep its weights)."""
        ratios = {p: row[col] / self.base[p] for p, col in MAE_COLUMNS if p in self.base and col in row}
        self.ratios[str(epoch)] = ratios
        score = sum(ratios.values()) / max(len(ratios), 1)
        worse = not ratios or score > 1 + self.tolerance
        self.worse_in_a_row = self.worse_in_a_row + 1 if worse else 0
        if not worse and score < self.best_score:
            self.best_epoch, self.best_score = epoch, score
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.worse_in_a_row >= self.patience

    def describe(self, epoch: int) -> str:
        """``epoch``'s validation MAE against the base, e.g. ``energy x0.82, forces x1.31``."""
        return ", ".join(f"{p} x{r:.3g}" for p, r in self.ratios.get(str(epoch), {}).items())

    def worse_properties(self) -> list[str]:
        """The properties on which the kept weights are worse than the base (validation MAE)."""
        ratios = self.ratios.get(str(self.best_epoch), {})
        return [f"{p} x{r:.3g}" for p, r in ratios.items() if r > 1]

    def verdict(self, last_epoch: int, stopped: bool) -> str | None:
        """The warning to give when the kept weights are not the last epoch's, or are worse than
        the base on some property (None: neither)."""
        worse = self.worse_properties()
        if self.best_epoch == last_epoch and not stopped:
            if not worse:
                return None
            shown = self.describe(last_epoch)
            return (f"fine-tuning guard: the saved potential (epoch {last_epoch}: {shown} of the base's validation "
                    f"MAE) is better than the base overall but WORSE on {', '.join(worse)}")  # fmt: skip
        why = (
            f"stopped after {self.worse_in_a_row} epochs in a row worse than the base on the validation set "
            f"(epoch {last_epoch}: {self.describe(last_epoch)} of the base's MAE)"
            if stopped
            else f"the last epoch is worse than epoch {self.best_epoch} on the validation set "
            f"(epoch {last_epoch}: {self.describe(last_epoch)} of the base's MAE)"
        )
        if self.best_epoch == 0:
            return (
                f"fine-tuning guard: {why}; no epoch improved on the base on the validation set, "
                "so the saved potential is the BASE (with its refitted energy shifts). Check the label "
                "diagnostics above (offsets, outliers), lower --lr, or change the loss weights."
            )
        also = f" It is WORSE than the base on {', '.join(worse)}." if worse else ""
        return (
            f"fine-tuning guard: {why}; the saved potential has the weights of epoch {self.best_epoch} "
            f"({self.describe(self.best_epoch)} of the base's MAE).{also}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard_summary(guard: dict[str, Any] | None) -> str:
    """The card's bullet on the guard (from the ``guard`` entry of a run's provenance)."""
    if guard is None:
        return "- Guard: no validation set, so nothing checked that training did not make the model worse."
    base = ", ".join(f"{p} {v:.4g}" for p, v in guard["base"].items())
    kept = "the starting model (base)" if guard["best_epoch"] == 0 else f"epoch {guard['best_epoch']}"
    ratios = guard["ratios"].get(str(guard["best_epoch"]), {})
    shown = ", ".join(f"{p} x{r:.3g}" for p, r in ratios.items()) or "x1"
    stopped = f"; stopped early after epoch {guard['epochs_run']}" if guard["stopped"] else ""
    return (
        f"- Guard: validation MAE of the starting model {base} (meV/atom, meV/A, GPa); weights kept: {kept} "
        f"({shown} of the starting model's MAE){stopped}."
    )
