"""One round of active learning: the students' committee runs MD, the frames where its members
disagree most (largest per-atom force spread) are labelled by the teacher and added.

The committee MD starts from each seed at each sampled temperature (Langevin, seeded); a frame is
considered every ``interval`` steps with its largest ``forces_std``; a trajectory whose spread
passes ``stop_spread`` eV/A (the students are lost) ends there, that frame kept as a candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

from ..workflows.md import thermalize_momenta
from ..workflows.uncertainty import UncertaintyExceeded, UncertaintyMonitor
from .sampling import deduplicate


@dataclass
class Candidate:
    atoms: Atoms
    spread: float  # the largest per-atom forces_std, eV/A


def committee_md(
    calc, seeds: Sequence[Atoms], temperatures: Sequence[float], steps: int, interval: int, seed: int,
    timestep_fs: float = 1.5, stop_spread: float = 2.0,
) -> list[Candidate]:  # fmt: skip
    """Frames of committee MD with their force spread, every ``interval`` steps."""
    candidates: list[Candidate] = []
    for s, structure in enumerate(seeds):
        for t, temperature in enumerate(temperatures):
            rng = np.random.default_rng([seed, s, t])
            atoms = structure.copy()
            atoms.calc = calc
            thermalize_momenta(atoms, temperature, rng=rng)
            Stationary(atoms)
            dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature,
                           friction=0.02 / units.fs, fixcm=False, rng=rng)  # fmt: skip
            monitor = UncertaintyMonitor(atoms, stop_spread, action="stop")

            def record(atoms=atoms, monitor=monitor, s=s, temperature=temperature, dyn=dyn):
                if dyn.nsteps == 0:
                    return
                frame = atoms.copy()
                frame.calc = None
                frame.arrays.pop("momenta", None)
                frame.info.update({"origin": "active", "structure": s, "temperature_K": float(temperature),
                                   "step": int(dyn.nsteps)})  # fmt: skip
                candidates.append(Candidate(frame, monitor.value()))
                monitor()

            dyn.attach(record, interval=interval)
            try:
                dyn.run(steps)
            except UncertaintyExceeded:
                pass
            except Exception:  # the students' MD blew up (e.g. atoms collapsed): keep what came before
                pass
    return candidates


def select(candidates: Sequence[Candidate], n: int, tolerance: float = 0.05) -> list[Candidate]:
    """The ``n`` candidates of largest spread, near-duplicates removed."""
    ranked = sorted(candidates, key=lambda c: -c.spread)
    frames, _ = deduplicate([c.atoms for c in ranked], tolerance)
    keep = {id(f) for f in frames}
    return [c for c in ranked if id(c.atoms) in keep][:n]
