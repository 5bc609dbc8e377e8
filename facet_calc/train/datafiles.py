"""The files a training run reads: the labelled training structures, the validation ones (or
a seeded fraction of the training file) and where their labels are; read against a model's
elements and cutoff, and described for the card (names, sha256, counts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import Configuration, LabelKeys, read_configurations, split
from .settings import TrainSettings


@dataclass(frozen=True)
class DataFiles:
    """``train``: labelled structures (every frame of an ASE-readable file); ``valid``: the
    validation file, or None for a split of ``valid_fraction`` of ``train`` seeded by the
    run's seed; ``keys``: where the labels are."""

    train: Path
    valid: Path | None = None
    valid_fraction: float = 0.1
    keys: LabelKeys = field(default_factory=LabelKeys)

    def read(
        self, atomic_numbers: list[int], cutoff: float, settings: TrainSettings
    ) -> tuple[list[Configuration], list[Configuration]]:
        """(training, validation) configurations, their graphs built with ``cutoff`` (A)."""
        use_stress = settings.loss.stress > 0
        train = read_configurations(self.train, atomic_numbers, cutoff, self.keys, use_stress)
        if self.valid is None:
            return split(train, self.valid_fraction, settings.seed)
        return train, read_configurations(self.valid, atomic_numbers, cutoff, self.keys, use_stress)

    def provenance(self, n_train: int, n_valid: int) -> dict[str, Any]:
        """The files, their sha256 and the number of configurations each set holds."""
        from ..potential import sha256_of  # the one file digest of the package (potentials use it)

        return {
            "train_file": str(self.train),
            "train_sha256": sha256_of(Path(self.train)),
            "valid_file": None if self.valid is None else str(self.valid),
            "valid_sha256": None if self.valid is None else sha256_of(Path(self.valid)),
            "n_train": n_train,
            "n_valid": n_valid,
        }
