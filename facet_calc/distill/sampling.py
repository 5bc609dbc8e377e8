"""Sampling with the teacher: the configurations the user's MD will visit, each seeded and recorded.

Four kinds of task per seed structure, each a pure function of (structure, task, teacher):

* ``md``: Langevin MD with the teacher at one temperature (velocities, thermostat noise seeded),
  a frame kept every ``md_interval`` steps;
* ``strain``: random symmetric strains (normal and shear components uniform in +-``strain``)
  of the cell, atoms slightly rattled;
* ``rrr``: rattle-relax-repeat (Gardner et al. 2025): rattle (+ a small cell strain), relax a
  few steps with the teacher, keep both, repeat from there: a random walk over the teacher's
  surface that reaches distorted, high-force regions MD rarely does;
* ``near``: near equilibrium, for phonons and the equation of state: the seed relaxed by the
  teacher (positions, and the cell of a 3D crystal), kept, then phonon-like random displacements
  (each frame's amplitude uniform in ``near_displacement`` A per component) of it, the first
  ``near_strains`` of them on isotropically strained cells (linear strains evenly spaced in
  +-``near_strain``, zero left out). MD at hundreds of kelvin rarely comes this close to the
  perfect crystal, where the harmonic force constants and the bulk modulus are measured.

Every kept frame carries ``info``: ``origin``, ``structure``, ``task`` (index), ``task_seed``,
``temperature_K`` (md) and ``step``, so rerunning a task regenerates it. A frame the teacher
fails on (raises, NaN, explosion) is dropped and counted; an MD trajectory stops at its first
such frame. :func:`deduplicate` removes frames that are the same structure within a tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.optimize import FIRE

from ..workflows.md import thermalize_momenta
from .teacher import Teacher, label


@dataclass
class SamplingPlan:
    """What the teacher samples, per seed structure (recorded in ``plan.json``)."""

    temperatures: list[float]
    md_frames: int = 20
    md_interval: int = 10
    timestep_fs: float = 1.5
    friction_per_fs: float = 0.02
    n_strains: int = 8
    strain: float = 0.04
    strain_rattle: float = 0.03
    n_excursions: int = 4
    rattle: float = 0.12
    excursion_strain: float = 0.02
    relax_steps: int = 4
    n_near: int = 24
    near_displacement: tuple[float, float] = (0.01, 0.05)
    near_strains: int = 6
    near_strain: float = 0.02
    near_relax_steps: int = 60
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def teacher_calls(self, n_structures: int) -> int:
        """Teacher evaluations the plan costs (MD steps, strains, rattles and relax steps)."""
        per = len(self.temperatures) * self.md_frames * self.md_interval + self.n_strains
        per += self.n_excursions * (1 + self.relax_steps)
        if self.n_near:
            per += self.near_relax_steps + 1 + self.n_near
        return n_structures * per

    def other_frames(self, n_structures: int) -> int:
        """Frames the tasks other than MD keep (at most: a failed frame is dropped)."""
        return n_structures * (self.n_strains + 2 * self.n_excursions + (self.n_near + 1 if self.n_near else 0))


@dataclass
class TaskResult:
    """The frames a task kept and the reasons of those it dropped."""

    frames: list[Atoms] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    attempted: int = 0


def sampling_tasks(n_structures: int, plan: SamplingPlan) -> list[dict[str, Any]]:
    """The tasks of a plan, in a fixed order, each with its own seed."""
    tasks = []
    for s in range(n_structures):
        for t in plan.temperatures:
            tasks.append({"kind": "md", "structure": s, "temperature_K": float(t)})
        if plan.n_strains:
            tasks.append({"kind": "strain", "structure": s})
        if plan.n_excursions:
            tasks.append({"kind": "rrr", "structure": s})
        if plan.n_near:
            tasks.append({"kind": "near", "structure": s})
    for k, task in enumerate(tasks):
        task["task"] = k
        task["task_seed"] = int(np.random.SeedSequence([plan.seed, k]).generate_state(1)[0])
    return tasks


def run_task(task: dict[str, Any], structure: Atoms, teacher: Teacher, plan: SamplingPlan) -> TaskResult:
    """Run one task of :func:`sampling_tasks` on its seed structure."""
    kind = task["kind"]
    rng = np.random.default_rng(task["task_seed"])
    result = TaskResult()
    if kind == "md":
        _md(structure, teacher, plan, task, rng, result)
    elif kind == "strain":
        _strains(structure, teacher, plan, task, rng, result)
    elif kind == "rrr":
        _excursions(structure, teacher, plan, task, rng, result)
    elif kind == "near":
        _near_equilibrium(structure, teacher, plan, task, rng, result)
    else:
        raise ValueError(f"unknown sampling task kind {kind!r}")
    return result


def _keep(atoms: Atoms, teacher: Teacher, task: dict, step: int, result: TaskResult) -> bool:
    result.attempted += 1
    frame, why = label(atoms, teacher)
    if frame is None:
        result.dropped.append(f"{task['kind']} task {task['task']} step {step}: {why}")
        return False
    frame.info.update({k: v for k, v in task.items()})
    frame.info["origin"] = task["kind"]
    frame.info["step"] = int(step)
    result.frames.append(frame)
    return True


def _strained(atoms: Atoms, rng: np.random.Generator, amplitude: float) -> Atoms:
    eps = rng.uniform(-amplitude, amplitude, (3, 3))
    eps = 0.5 * (eps + eps.T)
    out = atoms.copy()
    if atoms.cell.rank == 3:
        out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def _md(structure, teacher, plan, task, rng, result) -> None:
    atoms = structure.copy()
    atoms.calc = teacher.calc
    temperature = task["temperature_K"]
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=plan.timestep_fs * units.fs, temperature_K=temperature,
                   friction=plan.friction_per_fs / units.fs, fixcm=False, rng=rng)  # fmt: skip
    for k in range(1, plan.md_frames + 1):
        try:
            dyn.run(plan.md_interval)
        except Exception as err:  # the teacher failed mid-trajectory: count the rest as dropped
            result.attempted += plan.md_frames - k + 1
            result.dropped += [f"md task {task['task']} step {k * plan.md_interval}: teacher raised "
                               f"{type(err).__name__}: {str(err)[:200]}"] * (plan.md_frames - k + 1)  # fmt: skip
            return
        if not _keep(atoms, teacher, task, k * plan.md_interval, result):
            # the trajectory has exploded (or the teacher broke): what follows is no data either
            lost = plan.md_frames - k
            result.attempted += lost
            result.dropped += [result.dropped[-1]] * lost
            return


def _strains(structure, teacher, plan, task, rng, result) -> None:
    for k in range(plan.n_strains):
        atoms = _strained(structure, rng, plan.strain)
        atoms.positions += rng.normal(0, plan.strain_rattle, atoms.positions.shape)
        _keep(atoms, teacher, task, k, result)


def _excursions(structure, teacher, plan, task, rng, result) -> None:
    atoms = structure.copy()
    for k in range(plan.n_excursions):
        atoms = _strained(atoms, rng, plan.excursion_strain)
        atoms.positions += rng.normal(0, plan.rattle, atoms.positions.shape)
        if not _keep(atoms, teacher, task, 2 * k, result):
            atoms = structure.copy()  # start the walk again from the seed
            continue
        atoms.calc = teacher.calc
        try:
            FIRE(atoms, logfile=None).run(fmax=0.05, steps=plan.relax_steps)
        except Exception as err:
            result.attempted += 1
            result.dropped.append(f"rrr task {task['task']} step {2 * k + 1}: relax failed ({type(err).__name__})")
            atoms = structure.copy()
            continue
        result.attempted += plan.relax_steps - 1  # the relax steps beyond the kept frame
        if not _keep(atoms, teacher, task, 2 * k + 1, result):
            atoms = structure.copy()
        atoms.calc = None


def near_strains(plan: SamplingPlan) -> np.ndarray:
    """The isotropic linear strains of the ``near`` task: ``near_strains`` values evenly spaced
    in +-``near_strain``, zero left out (the relaxed cell has its own frames)."""
    half = -(-max(plan.near_strains, 0) // 2)
    side = plan.near_strain * np.arange(1, half + 1) / max(half, 1)
    return np.sort(np.concatenate([-side, side]))[: max(plan.near_strains, 0)]


def _near_equilibrium(structure, teacher, plan, task, rng, result) -> None:
    from ase.filters import FrechetCellFilter

    atoms = structure.copy()
    atoms.calc = teacher.calc
    crystal = atoms.cell.rank == 3 and bool(atoms.pbc.all())
    try:  # the teacher's minimum: the cell too for a crystal (its stress is part of the label)
        FIRE(FrechetCellFilter(atoms) if crystal else atoms, logfile=None).run(fmax=0.005, steps=plan.near_relax_steps)
        why = "" if np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all() else "NaN positions"
    except Exception as err:
        why = type(err).__name__
    if why:  # the relax failed: displace around the seed instead
        result.attempted += 1
        result.dropped.append(f"near task {task['task']} step 0: the teacher's relax failed ({why})")
        atoms = structure.copy()
    atoms.calc = None
    relaxed = atoms.copy()
    _keep(relaxed.copy(), teacher, task, 0, result)
    strains = near_strains(plan) if crystal else np.zeros(0)
    lo, hi = plan.near_displacement
    for k in range(plan.n_near):
        frame = relaxed.copy()
        if k < len(strains):
            frame.set_cell(relaxed.cell.array * (1.0 + strains[k]), scale_atoms=True)
        frame.positions += rng.normal(0.0, rng.uniform(lo, hi), frame.positions.shape)
        _keep(frame, teacher, task, k + 1, result)


def deduplicate(frames: list[Atoms], tolerance: float = 0.01) -> tuple[list[Atoms], int]:
    """Frames without near-duplicates: two frames of the same atoms and cell (to 1e-6 A) whose
    atoms all lie within ``tolerance`` A of each other (minimum image) are one; the first is
    kept. Returns the kept frames and the number removed."""
    kept: list[Atoms] = []
    groups: dict[tuple, list[Atoms]] = {}
    for atoms in frames:
        key = (tuple(atoms.numbers.tolist()), tuple(np.round(atoms.cell.array.ravel(), 6).tolist()))
        same = groups.setdefault(key, [])
        if any(_max_displacement(atoms, other) < tolerance for other in same):
            continue
        same.append(atoms)
        kept.append(atoms)
    return kept, len(frames) - len(kept)


def _max_displacement(a: Atoms, b: Atoms) -> float:
    delta = a.positions - b.positions
    if a.cell.rank == 3 and a.pbc.any():
        frac = np.linalg.solve(a.cell.array.T, delta.T).T
        frac -= np.round(frac) * a.pbc
        delta = frac @ a.cell.array
    return float(np.linalg.norm(delta, axis=1).max())
