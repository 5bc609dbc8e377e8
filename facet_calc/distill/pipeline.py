"""``distill(teacher, structures, out)``: sampling, labels, a committee of students, one round of
active learning, the potential and the report, in one resumable run folder.

    from facet_calc.distill import distill
    result = distill("7net-0-spline", "si64.extxyz", "runs/si", minutes=30, temperatures=[300, 1000])
    FacetCalculator(result.potential_dir)      # the fastest: one student
    FacetCalculator(result.committee_dir)      # mean and spread of the K students

The run folder::

    run.json                 the inputs (a rerun with other inputs is refused, never mixed)
    plan.json                what the budget bought (sampling counts, epochs), measured once
    data/tasks/NNNN.extxyz   each sampling task's labelled frames (info: origin, seeds, T, step)
    data/train.extxyz, valid.extxyz      deduplicated, split by the seed
    students/round-R/member-K/           log.csv, checkpoint/, final.safetensors
    active/round-R.extxyz    the frames the committee disagreed on, labelled by the teacher
    committee/               K potentials (FacetCalculator(committee) gives mean and spread)
    potential/               the best member as a normal potential folder, with its card
    report/                  report.json and PNGs (see :mod:`.report`)

Everything is written under a temporary name and renamed, so a run killed at any point resumes
from its last completed task or training epoch and ends with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.io import read, write

from ..train import LossWeights, TrainSettings
from ..train.data import Configuration, batch_of, read_configurations
from . import budget
from .checks import check_seeds
from .sampling import SamplingPlan, TaskResult, deduplicate, run_task, sampling_tasks
from .students import MemberJob, load_weights, new_student, student_config, train_committee
from .teacher import KEYS, DistillError, label, resolve_teacher

#: a structure on which the teacher fails more often than this (sampling frames) is an error
MAX_DROPPED_FRACTION = 0.5
#: the fraction of the sampled frames held out for validation
VALID_FRACTION = 0.1
#: the active-learning round continues each member at this fraction of the first peak learning
#: rate (benchmarks/distill.py, 64-atom Si, 7net-0-spline, 3 more epochs on 68 + 18 frames: at 1/2
#: the committee's validation force MAE went from 105 to 128 meV/A and the best student's held-out
#: errors were 1.37 meV/atom, 60.4 meV/A; at 1/10: 112 meV/A and 0.51 meV/atom, 58.3 meV/A)
CONTINUE_LR_FACTOR = 0.1


@dataclass
class DistillResult:
    """``potential_dir``: the best student (a normal potential folder); ``committee_dir``: all
    of them; ``report``: the measured numbers (also in ``out/report/report.json``)."""

    out: Path
    potential_dir: Path
    committee_dir: Path
    report: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[distill {time.strftime('%H:%M:%S')}] {text}", flush=True)


def read_seeds(structures: Any) -> tuple[list[Atoms], list[str]]:
    """Seed structures from a file (every frame), an Atoms or a list of Atoms, with names."""
    if isinstance(structures, Atoms):
        return [structures.copy()], ["structure 0"]
    if isinstance(structures, (str, Path)):
        path = Path(structures)
        if not path.is_file():
            raise DistillError(f"seed structure file {str(path)!r} does not exist")
        try:
            frames = read(path, index=":")
        except Exception as err:  # ASE raises many types for unreadable files
            raise DistillError(f"could not read {str(path)!r} ({type(err).__name__}: {err})") from err
        return [f.copy() for f in frames], [f"{path.name}[{k}]" for k in range(len(frames))]
    frames = list(structures)
    return [f.copy() if isinstance(f, Atoms) else f for f in frames], [f"structure {k}" for k in range(len(frames))]


def _digest(seeds: Sequence[Atoms]) -> str:
    h = hashlib.sha256()
    for a in seeds:
        for arr in (a.numbers, a.positions, a.cell.array, a.pbc):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _write_frames(path: Path, frames: list[Atoms]) -> None:
    tmp = path.with_name(path.name + ".tmp.extxyz")
    write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def _read_frames(path: Path) -> list[Atoms]:
    return list(read(path, index=":", format="extxyz")) if path.stat().st_size else []


def _claim(out: Path, inputs: dict[str, Any], overwrite: bool) -> bool:
    """Claim ``out`` for this run: True to resume (same inputs), False to start; refuses a
    folder with another run or other files unless ``overwrite``."""
    recorded = out / "run.json"
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if recorded.is_file():
        before = json.loads(recorded.read_text())
        changed = [f"{k}: {before.get(k)!r:.60} then, {inputs.get(k)!r:.60} now"
                   for k in sorted(set(before) | set(inputs)) if before.get(k) != inputs.get(k)]  # fmt: skip
        if changed:
            raise DistillError(
                f"{out} holds a distillation run with other inputs ({'; '.join(changed)}); rerun with the same "
                "inputs to resume it, choose another --out, or pass --overwrite to replace it"
            )
        return True
    if out.exists() and any(out.iterdir()):
        raise DistillError(f"{out} exists and holds other files; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(recorded, inputs)
    return False


def _configs(frames: list[Atoms], elements: list[int], cutoff: float) -> list[Configuration]:
    return read_configurations(frames, elements, cutoff, keys=KEYS) if frames else []


def _made(jobs: list[MemberJob]) -> list[MemberJob]:
    for job in jobs:
        Path(job.folder).mkdir(parents=True, exist_ok=True)
    return jobs


def distill(
    teacher: Any,
    structures: Any,
    out: str | Path,
    minutes: float = 30.0,
    temperatures: Sequence[float] = (300.0,),
    size: str | dict = "small",
    committee: int = 3,
    seed: int = 0,
    max_temperature_factor: float = 1.5,
    cutoff: float | None = None,
    md_frames: int | None = None,
    epochs: int | None = None,
    active_epochs: int | None = None,
    active_frames: int | None = None,
    active_steps: int | None = None,
    atom_energy_weight: float = 0.1,
    lr: float = 5e-3,
    batch_size: int = 2,
    report: bool | dict = True,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
    sampling: dict[str, Any] | None = None,
    workers: int | None = None,
) -> DistillResult:
    """Distil ``teacher`` into a committee of ``committee`` fast Facet students for the
    chemistry of ``structures``, within about ``minutes`` of compute.

    Args:
        teacher: a potential name or folder, or any ASE calculator.
        structures: seed structures (a file ASE reads, every frame; an Atoms; a list of Atoms).
        out: the run folder; an existing run with the same inputs is resumed, one with other
            inputs refused (``overwrite=True`` replaces it).
        temperatures: the MD temperatures the user needs (K); sampling adds
            ``max_temperature_factor`` x the highest (default 1.5x).
        size: ``"small"``, ``"medium"`` or a dict of ``facet_config`` hyperparameters.
        committee: number of students K (seeds ``seed * 1000 + k``).
        cutoff: the students' cutoff (A); default ``min(5.0, teacher's)``.
        md_frames, epochs, active_epochs, active_frames, active_steps: fix what the budget
            would otherwise size (MD frames per structure and temperature, epochs of the first
            training and of the active-learning retraining, frames added, committee MD steps).
        atom_energy_weight: weight of the teacher's per-atom energies in the loss (0: unused;
            used only when the teacher gives them).
        lr, batch_size: the students' peak learning rate and structures per step. Small data
            sets train better on more, smaller steps: 64-atom Si, 68 frames, validation force MAE
            of a student after 16 epochs, 271 meV/A at batch 4 against 139 at batch 2 (of 25
            epochs; 121 at the end). The plan sizes by the cost per frame, which the batch
            size hardly changes.
        report: False, True, or a dict of options of :func:`.report.make_report`.
        sampling: overrides of :class:`.sampling.SamplingPlan` fields (tests: fewer strains).
        workers: members trained at once, each in its own process of one torch thread (default:
            ``min(committee, CPU cores)``; 1 trains them one after another in this process).
            The plan sizes the epochs for ``ceil(committee / workers)`` members in a row; the
            weights do not depend on it (up to float rounding when thread counts differ), so a
            run may be resumed with another value.
    """
    start_time = time.perf_counter()
    out = Path(out)
    if committee < 1:
        raise DistillError(f"committee must be at least 1 student, got {committee}")
    if not minutes > 0:
        raise DistillError(f"minutes must be positive, got {minutes}")
    workers = min(committee, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise DistillError(f"workers must be at least 1, got {workers}")
    temperatures = sorted(float(t) for t in temperatures)
    if not temperatures or min(temperatures) <= 0 or not all(math.isfinite(t) for t in temperatures):
        raise DistillError(f"temperatures must be positive numbers of kelvin, got {temperatures}")
    seeds, names = read_seeds(structures)
    check_seeds(seeds, None, names)  # the structures first: a bad file is found before a teacher loads
    teach = resolve_teacher(teacher, device)
    check_seeds(seeds, teach, names)
    elements = sorted({int(z) for a in seeds for z in a.numbers})
    cutoff = float(cutoff if cutoff is not None else min(5.0, teach.cutoff or 5.0))
    sampled_temperatures = sorted(set(temperatures + [round(max(temperatures) * max_temperature_factor, 1)]))
    inputs = {
        "teacher": teach.name, "seeds_sha256": _digest(seeds), "temperatures_K": temperatures,
        "sampled_temperatures_K": sampled_temperatures, "size": size, "committee": committee, "seed": seed,
        "cutoff_A": cutoff, "minutes": minutes, "md_frames": md_frames, "epochs": epochs,
        "active_epochs": active_epochs, "active_frames": active_frames, "active_steps": active_steps,
        "atom_energy_weight": atom_energy_weight, "lr": lr, "batch_size": batch_size, "sampling": sampling or {},
    }  # fmt: skip
    resumed = _claim(out, json.loads(json.dumps(inputs, default=str)), overwrite)
    _say(progress, f"{'resuming' if resumed else 'starting'} in {out}: teacher {teach.name}, {len(seeds)} seed "
         f"structure(s), temperatures {sampled_temperatures} K, {committee} students ({size})")  # fmt: skip
    clock = _Clock(out, start_time)
    plan = _plan(out, teach, seeds, names, elements, cutoff, sampled_temperatures, inputs, workers, progress)
    clock("plan")
    budget_s = minutes * 60
    # -- sampling ---------------------------------------------------------------------------
    sampling_plan = SamplingPlan(**plan["sampling"])
    frames, sampling_summary = _sample(out, seeds, names, teach, sampling_plan, progress)
    train_frames, valid_frames = _split(out, frames, seed)
    train = _configs(train_frames, elements, cutoff)
    valid = _configs(valid_frames, elements, cutoff)
    clock("sampling")
    # -- the committee ---------------------------------------------------------------------
    config = student_config(elements, size, cutoff, plan.get("avg_num_neighbors") or _neighbours(plan, out, train))
    use_atom_energy = atom_energy_weight if all(bool(c.graph.labels.atom_energy_mask.all()) for c in train) else 0.0
    loss = LossWeights(energy=1.0, forces=1.0, stress=1.0, atom_energy=use_atom_energy)
    n_epochs = plan["training"]["epochs"] if epochs is None else epochs
    settings = [TrainSettings(epochs=n_epochs, batch_size=batch_size, lr=lr, seed=seed * 1000 + k, loss=loss,
                              guard=False, device=device, warmup_epochs=min(1.0, n_epochs / 4))  # fmt: skip
                for k in range(committee)]
    jobs = [MemberJob(config, seed * 1000 + k, train, valid, settings[k], out / "students" / "round-0" / f"member-{k}")
            for k in range(committee)]  # fmt: skip
    todo = sum(not job.final.is_file() for job in jobs)
    if todo:
        _say(progress, f"training {todo} of {committee} students ({workers} at a time): {n_epochs} epochs on "
             f"{len(train)} frames")  # fmt: skip
    train_committee(_made(jobs), workers)
    members, shifts = [], None
    for job in jobs:
        model, shifts = new_student(config, job.seed, train, "float32")
        load_weights(job.final, model)
        members.append(model)
    clock("training")
    learning_curve = [_member_errors(members, valid, "round 0", len(train))]
    _say(progress, f"round 0 committee on validation: {learning_curve[-1]}")
    # -- one round of active learning ------------------------------------------------------
    active = plan["active"]
    active_summary = {}
    n_active = active["frames"] if active_frames is None else active_frames
    if n_active > 0:
        selected, active_summary = _active_round(out, members, config, seeds, teach, sampled_temperatures, active,
                                                 active_steps, n_active, seed, progress)  # fmt: skip
        added = _configs(selected, elements, cutoff)
        if added:
            train = train + added
            n_more = active["epochs"] if active_epochs is None else active_epochs
            more = [TrainSettings(**{**settings[k].to_dict(), "epochs": n_more, "lr": lr * CONTINUE_LR_FACTOR,
                                     "warmup_epochs": 0.0}) for k in range(committee)]  # fmt: skip
            again = [MemberJob(config, job.seed, train, valid, more[k], out / "students" / "round-1" / f"member-{k}",
                               start=job.final) for k, job in enumerate(jobs)]  # fmt: skip
            _say(progress, f"continuing {committee} students ({workers} at a time): {n_more} epochs with "
                 f"{len(added)} new frames")  # fmt: skip
            train_committee(_made(again), workers)
            for job, model in zip(again, members):
                load_weights(job.final, model)
            learning_curve.append(_member_errors(members, valid, "round 1", len(train)))
            _say(progress, f"round 1 committee on validation: {learning_curve[-1]}")
            kept = _keep_better_round(jobs, members, learning_curve[-2], learning_curve[-1])
            if kept:
                active_summary["kept_round_0"] = kept
                learning_curve.append(_member_errors(members, valid, "final", len(train)))
                _say(progress, f"members {kept} keep their round-0 weights (round 1 raised their validation "
                     f"force error); final committee on validation: {learning_curve[-1]}")  # fmt: skip
    clock("active_learning")
    # -- outputs ---------------------------------------------------------------------------
    from .output import write_outputs

    summary = {
        "teacher": teach.name, "elements": elements, "plan": plan, "sampling": sampling_summary,
        "active": active_summary, "learning_curve": learning_curve, "n_train": len(train), "n_valid": len(valid),
        "shifts": shifts, "loss": loss.__dict__, "student_config": config, "resumed": resumed,
    }  # fmt: skip
    result = write_outputs(out, members, config, summary, teach, seeds, sampled_temperatures, temperatures, valid,
                           report, budget_s * budget.SHARES["report"], seed, progress)  # fmt: skip
    clock("outputs_and_report")
    result.summary["wall_time_s_this_call"] = time.perf_counter() - start_time
    result.summary["timing"] = clock.data
    report_file = out / "report" / "report.json"
    report_json = json.loads(report_file.read_text()) if report_file.is_file() else {}
    _write_json(out / "summary.json", {**result.summary, "report": report_json})
    _say(progress, f"done in {result.summary['wall_time_s_this_call'] / 60:.1f} min: {result.potential_dir}")
    return result


class _Clock:
    """Wall time of this call by stage, kept in ``timing.json`` after every stage, so that the
    total over a killed call and its resumption can be added up (a stage cut short by the kill
    counts up to the last stage that ended)."""

    def __init__(self, out: Path, start: float) -> None:
        self.path, self.start = out / "timing.json", start
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"calls": []}
        self.data["calls"].append({})
        self.last = start

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.data["calls"][-1][stage] = round(now - self.last, 2)
        self.last = now
        self.data["total_s"] = round(sum(sum(c.values()) for c in self.data["calls"]), 2)
        _write_json(self.path, self.data)


def _neighbours(plan: dict, out: Path, train: list[Configuration]) -> float:
    from .students import mean_neighbours

    plan["avg_num_neighbors"] = round(mean_neighbours(train), 3)
    _write_json(out / "plan.json", plan)
    return plan["avg_num_neighbors"]


def _plan(out, teach, seeds, names, elements, cutoff, temperatures, inputs, workers, progress) -> dict[str, Any]:
    """The run's plan: read from ``plan.json`` or sized from measured costs and written."""
    path = out / "plan.json"
    if path.is_file():
        return json.loads(path.read_text())
    budget_s = inputs["minutes"] * 60
    # the teacher on every seed: it must work there, and its cost sizes the sampling
    labelled = []
    for atoms, name in zip(seeds, names):
        frame, why = label(atoms, teach)
        if frame is None:
            raise DistillError(f"{name}: the teacher fails on the seed structure itself ({why}); check the structure")
        labelled.append(frame)
    probe = seeds[0].copy()
    teacher_s = budget.timed(lambda: (probe.rattle(1e-3), label(probe, teach)), repeats=2)
    teacher_s *= sum(len(a) for a in seeds) / len(seeds) / len(seeds[0])  # per call, mean seed size
    sampling = SamplingPlan(temperatures=temperatures, seed=inputs["seed"], **inputs["sampling"])
    md_calls = len(seeds) * len(temperatures) * sampling.md_frames * sampling.md_interval
    fixed_calls = sampling.teacher_calls(len(seeds)) - md_calls  # strains, excursions, near equilibrium
    # a student training step on the labelled seeds, at the run's batch size
    batch = int(inputs["batch_size"])
    fixed = [inputs[k] for k in ("md_frames", "epochs", "active_epochs", "active_frames", "active_steps")]
    step_s = float("nan")
    if any(v is None for v in fixed):  # something to size: measure a training step
        configs = read_configurations(labelled, elements, cutoff, keys=KEYS)
        step_s = _training_step_seconds(student_config(elements, inputs["size"], cutoff, 30.0), configs, batch)
    members = inputs["committee"]
    in_a_row = math.ceil(members / workers)  # members each worker trains one after another
    other_frames = sampling.other_frames(len(seeds))  # strains, excursions, near equilibrium
    n_frames_guess = len(seeds) * (len(temperatures) * budget.MIN_MD_FRAMES) + other_frames
    if inputs["md_frames"] is None or inputs["epochs"] is None:
        budget.check_budget(inputs["minutes"], teacher_s, step_s, len(seeds), temperatures, sampling.md_interval,
                            fixed_calls, members, n_frames_guess, batch, workers)  # fmt: skip
    if inputs["md_frames"] is not None:
        sampling.md_frames = int(inputs["md_frames"])
    else:
        # as many frames as the training share can fit TARGET_EPOCHS epochs over (gradient steps,
        # not frames, bound the accuracy), and the sampling share spent on longer gaps between
        # them (less correlated frames)
        per_frame = 1.15 * step_s / batch * in_a_row * budget.TARGET_EPOCHS
        affordable = budget.SHARES["training"] * budget_s / per_frame - other_frames
        n_md = max(budget.MIN_MD_FRAMES, int(affordable / max(1, len(seeds) * len(temperatures))))
        sampling.md_frames = min(200, n_md)
        calls = budget.SHARES["sampling"] * budget_s / max(teacher_s, 1e-6) - fixed_calls
        per_frame_calls = calls / max(1, len(seeds) * len(temperatures) * sampling.md_frames)
        sampling.md_interval = int(min(50, max(sampling.md_interval, per_frame_calls)))
    n_train = int(0.9 * (len(seeds) * len(temperatures) * sampling.md_frames + other_frames))
    steps = math.ceil(n_train / batch)
    epochs, active_epochs, active_frames, active_steps = fixed[1:]
    if math.isfinite(step_s):  # size what was not given
        sized = min(300, max(budget.MIN_EPOCHS, budget.epochs_for(budget_s, budget.SHARES["training"], step_s, steps,
                                                                  in_a_row)))  # fmt: skip
        epochs = sized if epochs is None else epochs
        # active learning: committee MD (K students' cost per step), labels, retraining
        active_frames = max(4, n_train // 5) if active_frames is None else active_frames
        more = max(2, budget.epochs_for(budget_s, 0.10, step_s, math.ceil((n_train + active_frames) / batch), in_a_row))
        active_epochs = min(epochs, more) if active_epochs is None else active_epochs
        eval_s = step_s / 3 * members  # a committee MD step: K forward+backward without the parameter gradients
        md_budget = 0.05 * budget_s - active_frames * teacher_s
        steps_md = int(max(20, md_budget / max(eval_s, 1e-6) / max(1, len(seeds) * len(temperatures))))
        active_steps = min(steps_md, 2000) if active_steps is None else active_steps
    plan = {
        "measured": {"teacher_s_per_call": teacher_s, "student_train_step_s": step_s},
        "budget_s": budget_s, "shares": budget.SHARES,
        "sampling": sampling.to_dict(),
        "training": {"epochs": epochs, "n_train_estimate": n_train, "workers": workers, "members_in_a_row": in_a_row},
        "active": {"frames": active_frames, "epochs": active_epochs, "steps": active_steps,
                   "interval": 10, "stop_spread_eV_per_A": 2.0},
    }  # fmt: skip
    _say(progress, f"plan: teacher {teacher_s * 1e3:.0f} ms/call, student step {step_s * 1e3:.0f} ms; "
         f"{sampling.md_frames} MD frames per structure and temperature, {epochs} epochs x {members} students "
         f"({workers} at a time), "
         f"active learning {active_frames} frames + {plan['active']['epochs']} epochs")  # fmt: skip
    _write_json(path, plan)
    return plan


def _training_step_seconds(config: dict, configs: list[Configuration], batch_size: int) -> float:
    from ..nn.forward import evaluate
    from ..train.loss import loss_terms

    model, _ = new_student(config, 0, configs, "float32")
    model.set_backend("torch").train()
    batch = batch_of((configs * batch_size)[:batch_size], torch.float32, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        pred = evaluate(model, batch, compute_virial=True, create_graph=True)
        loss = loss_terms(pred, batch, LossWeights())["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    return budget.timed(step, repeats=2)


def _sample(out, seeds, names, teach, plan: SamplingPlan, progress) -> tuple[list[Atoms], dict[str, Any]]:
    """Run (or read back) every sampling task; dedupe; the counts."""
    folder = out / "data" / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    tasks = sampling_tasks(len(seeds), plan)
    frames: list[Atoms] = []
    per_structure = {k: [0, 0] for k in range(len(seeds))}  # attempted, dropped
    dropped_reasons: list[str] = []
    for task in tasks:
        path = folder / f"{task['task']:04d}.extxyz"
        meta = folder / f"{task['task']:04d}.json"
        if path.is_file() and meta.is_file():
            result = TaskResult(_read_frames(path), **json.loads(meta.read_text()))
        else:
            desc = task["kind"] + (f" {task['temperature_K']:g} K" if task["kind"] == "md" else "")
            _say(progress, f"sampling task {task['task'] + 1}/{len(tasks)}: {desc} on {names[task['structure']]}")
            result = run_task(task, seeds[task["structure"]], teach, plan)
            _write_frames(path, result.frames)
            _write_json(meta, {"dropped": result.dropped, "attempted": result.attempted})
        counts = per_structure[task["structure"]]
        counts[0] += result.attempted
        counts[1] += len(result.dropped)
        dropped_reasons += result.dropped
        frames += result.frames
    for k, (attempted, dropped) in per_structure.items():
        if attempted and dropped > MAX_DROPPED_FRACTION * attempted:
            raise DistillError(
                f"{names[k]}: the teacher failed on {dropped} of {attempted} sampled frames (e.g. "
                f"{dropped_reasons[0] if dropped_reasons else '?'}); check the structure and the temperatures, "
                "or use another teacher"
            )
    unique, duplicates = deduplicate(frames)
    summary = {
        "tasks": len(tasks), "frames": len(frames), "duplicates_removed": duplicates, "kept": len(unique),
        "dropped": sum(d for _, d in per_structure.values()), "attempted": sum(a for a, _ in per_structure.values()),
        "dropped_examples": dropped_reasons[:5],
        "by_origin": {o: sum(1 for f in unique if f.info.get("origin") == o) for o in ("md", "strain", "rrr", "near")},
    }  # fmt: skip
    if summary["dropped"]:
        _say(progress, f"dropped {summary['dropped']} of {summary['attempted']} frames the teacher failed on "
             f"(e.g. {dropped_reasons[0]})")  # fmt: skip
    _say(progress, f"sampled {len(unique)} frames ({duplicates} duplicates removed): {summary['by_origin']}")
    return unique, summary


def _split(out: Path, frames: list[Atoms], seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """The seeded train/validation split, written once as the record of the data."""
    order = np.random.default_rng([seed, 7]).permutation(len(frames))
    n_valid = max(1, round(VALID_FRACTION * len(frames)))
    if len(frames) < 3:
        raise DistillError(f"only {len(frames)} usable frames were sampled; give a larger budget or more seeds")
    valid = [frames[i] for i in sorted(order[:n_valid])]
    train = [frames[i] for i in sorted(order[n_valid:])]
    data = out / "data"
    if not (data / "valid.extxyz").is_file():
        _write_frames(data / "train.extxyz", train)
        _write_frames(data / "valid.extxyz", valid)
    return train, valid


#: a member keeps its round-0 weights when the active-learning round raised its validation force
#: error by more than this fraction (64-atom Si, 7net-0-spline, round 6: 4 more epochs on 35
#: frames of the largest disagreement took the members from 32.5 / 34.9 / 37.4 to 47.8 / 40.9 /
#: 45.9 meV/A: frames far from the teacher's MD pull a small student away from it)
ROUND_1_TOLERANCE = 0.02


def _keep_better_round(jobs: list[MemberJob], members: list, before: dict, after: dict) -> list[int]:
    """Reload the round-0 weights of every member whose validation force MAE rose by more than
    :data:`ROUND_1_TOLERANCE` in round 1; returns their indices."""
    old, new = before.get("member_forces_mae_meV_per_A"), after.get("member_forces_mae_meV_per_A")
    if not (old and new):  # no validation frames: nothing to compare
        return []
    kept = []
    for k, (job, model) in enumerate(zip(jobs, members)):
        if new[k] > old[k] * (1 + ROUND_1_TOLERANCE):
            load_weights(job.final, model)
            kept.append(k)
    return kept


@torch.no_grad()
def _member_errors(members, valid: list[Configuration], name: str, n_train: int) -> dict[str, Any]:
    """Validation MAE of the committee mean and of each member (meV/atom, meV/A)."""
    from ..nn.committee import evaluate_committee

    if not valid:
        return {"round": name, "n_train": n_train}
    for m in members:
        m.eval().requires_grad_(False)
    e_err, f_err, member_f = [], [], [[] for _ in members]
    for k in range(0, len(valid), 8):
        batch = batch_of(valid[k : k + 8], members[0].dtype, members[0].device)
        outs = evaluate_committee(members, batch, compute_virial=False)
        labels = batch.labels
        e_err.append(((outs["energy"].mean(0) - labels.energy) / batch.counts).abs() * 1e3)
        f_err.append((outs["forces"].mean(0) - labels.forces).abs().reshape(-1) * 1e3)
        for j in range(len(members)):
            member_f[j].append((outs["forces"][j] - labels.forces).abs().reshape(-1) * 1e3)
    return {
        "round": name, "n_train": n_train,
        "committee_energy_mae_meV_per_atom": float(torch.cat(e_err).mean()),
        "committee_forces_mae_meV_per_A": float(torch.cat(f_err).mean()),
        "member_forces_mae_meV_per_A": [float(torch.cat(f).mean()) for f in member_f],
    }  # fmt: skip


def _active_round(out, members, config, seeds, teach, temperatures, active, active_steps, n_active, seed, progress):
    """Committee MD, the frames of largest disagreement, labelled by the teacher (or read back)."""
    from ..calculator import FacetCalculator
    from ..committee import Committee
    from ..potential import Potential
    from .active import committee_md, select

    path = out / "active" / "round-1.extxyz"
    meta = out / "active" / "round-1.json"
    if path.is_file() and meta.is_file():
        return _read_frames(path), json.loads(meta.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    for m in members:
        m.eval().requires_grad_(False).set_backend("auto")
    pots = [Potential(f"member-{k}", config, m, out) for k, m in enumerate(members)]
    calc = FacetCalculator(Committee("students", pots), threads=1)
    steps = active["steps"] if active_steps is None else active_steps
    _say(progress, f"active learning: committee MD, {steps} steps at each of {temperatures} K per seed")
    candidates = committee_md(calc, seeds, temperatures, steps, active["interval"], seed,
                              stop_spread=active["stop_spread_eV_per_A"])  # fmt: skip
    chosen = select(candidates, n_active)
    labelled, dropped = [], 0
    for c in chosen:
        frame, why = label(c.atoms, teach)
        if frame is None:
            dropped += 1
            continue
        frame.info.update(c.atoms.info)
        frame.info["committee_forces_std_max"] = c.spread
        labelled.append(frame)
    spreads = [c.spread for c in candidates]
    summary = {
        "candidates": len(candidates), "selected": len(chosen), "labelled": len(labelled), "dropped": dropped,
        "spread_max_eV_per_A": max(spreads, default=0.0),
        "spread_median_eV_per_A": float(np.median(spreads)) if spreads else 0.0,
        "selected_spread_min_eV_per_A": min((c.spread for c in chosen), default=0.0),
    }  # fmt: skip
    for m in members:
        m.set_backend("torch")
    _write_frames(path, labelled)
    _write_json(meta, summary)
    _say(progress, f"active learning: {len(labelled)} frames of largest disagreement labelled "
         f"(spread {summary['selected_spread_min_eV_per_A']:.3f}-{summary['spread_max_eV_per_A']:.3f} "
         "eV/A)")  # fmt: skip
    return labelled, summary
