"""An MD observer that watches a committee's force spread and warns or stops the run.

    calc = FacetCalculator("runs/si/committee")       # a committee: results carry forces_std
    monitor = UncertaintyMonitor(atoms, threshold=0.3, action="stop")
    dyn.attach(monitor, interval=10)                   # any ASE dynamics
    dyn.run(10000)                                     # raises UncertaintyExceeded past 0.3 eV/A

or ``run_md(..., observers=[monitor])``, which ends the run early and says why. The watched
value is the largest per-atom ``forces_std`` (eV/A) of the current step; ``history`` keeps
``(step, value)`` of every call.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms


class UncertaintyExceeded(RuntimeError):
    """The committee's force spread passed the monitor's threshold (the MD was stopped)."""


class UncertaintyWarning(UserWarning):
    """The committee's force spread passed the monitor's threshold (the MD continues)."""


class UncertaintyMonitor:
    """Callable for ``dyn.attach``: reads ``forces_std`` of ``atoms.calc`` (a committee
    calculator) and, above ``threshold`` eV/A, warns (``action="warn"``, once per crossing) or
    raises :class:`UncertaintyExceeded` (``action="stop"``)."""

    def __init__(self, atoms: Atoms, threshold: float, action: str = "stop") -> None:
        if action not in ("stop", "warn"):
            raise ValueError(f"action must be 'stop' or 'warn', got {action!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be a positive force spread in eV/A, got {threshold!r}")
        self.atoms = atoms
        self.threshold = float(threshold)
        self.action = action
        self.calls = 0
        self.history: list[tuple[int, float]] = []
        self._above = False

    def value(self) -> float:
        """The largest per-atom force spread of the current structure (eV/A)."""
        calc = self.atoms.calc
        if calc is None or "forces_std" not in getattr(calc, "implemented_properties", []):
            raise ValueError(
                "UncertaintyMonitor needs a committee calculator (FacetCalculator on a committee folder or a "
                "list of potentials), whose results carry forces_std; this calculator has none"
            )
        return float(np.max(calc.get_property("forces_std", self.atoms)))

    def __call__(self) -> None:
        value = self.value()
        self.history.append((self.calls, value))
        self.calls += 1
        if value <= self.threshold:
            self._above = False
            return
        message = (
            f"committee force spread {value:.3g} eV/A exceeds the threshold {self.threshold:.3g} eV/A "
            f"(call {self.calls}): the students disagree here, so the structure has left their training data"
        )
        if self.action == "stop":
            raise UncertaintyExceeded(message + "; MD stopped")
        if not self._above:
            warnings.warn(message, UncertaintyWarning, stacklevel=2)
        self._above = True
