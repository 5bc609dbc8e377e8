"""The time budget: the plan of a run sized from measured costs, and refused before anything
runs when even the smallest useful plan would not fit.

Shares of the budget (measured costs: one teacher call per seed, one student training step):
sampling 25 %, the committee's training 45 %, the active-learning round 15 % (committee MD,
labels, continued training), the report 15 % (held-out teacher MD, phonons, EOS, speed). The
members train ``workers`` at a time (one process and thread each), so the training time is
sized for ``ceil(K / workers)`` members in a row. Training gets the largest share because the
students' errors fall with gradient steps long after the frames stop adding much (64-atom Si,
7net-0-spline: the validation force error was still falling at the last epoch of a 45-min run).
The plan is written to ``plan.json`` once and read on resume, so a resumed run does what the
killed one planned, and ``distill(..., md_frames=, epochs=)`` fixes the counts outright.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from .teacher import DistillError

SHARES = {"sampling": 0.25, "training": 0.45, "active": 0.15, "report": 0.15}
#: the smallest useful plan: MD frames per temperature and structure, and epochs per member
MIN_MD_FRAMES = 4
MIN_EPOCHS = 3
#: the epochs the plan aims at: the frames sampled are as many as this many epochs can visit
TARGET_EPOCHS = 24


def timed(call: Callable[[], object], repeats: int = 3) -> float:
    """Median seconds of ``call`` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def md_frames_for(budget_s: float, teacher_s: float, n_structures: int, n_temperatures: int, interval: int,
                  fixed_calls: int) -> int:  # fmt: skip
    """MD frames per (structure, temperature) that the sampling share affords."""
    calls = SHARES["sampling"] * budget_s / max(teacher_s, 1e-6) - fixed_calls
    return int(max(0, calls) // max(1, n_structures * n_temperatures * interval))


def epochs_for(budget_s: float, share: float, step_s: float, steps_per_epoch: int, members: int) -> int:
    """Epochs per member that ``share`` of the budget affords (validation: +15 %)."""
    return int(share * budget_s // max(1e-6, 1.15 * step_s * steps_per_epoch * members))


def check_budget(minutes: float, teacher_s: float, step_s: float, n_structures: int, temperatures: Sequence[float],
                 interval: int, fixed_calls: int, members: int, n_train_min: int, batch_size: int,
                 workers: int = 1) -> None:  # fmt: skip
    """Refuse a budget too small for one round (sampling, training, active learning), saying
    what one round needs (``members`` trained ``workers`` at a time)."""
    budget_s = minutes * 60
    sampling = (n_structures * len(temperatures) * MIN_MD_FRAMES * interval + fixed_calls) * teacher_s
    in_a_row = math.ceil(members / max(1, workers))
    training = 1.15 * MIN_EPOCHS * in_a_row * math.ceil(n_train_min / batch_size) * step_s
    need = (sampling / SHARES["sampling"] + training / SHARES["training"]) * 1.1
    if budget_s < need:
        raise DistillError(
            f"a budget of {minutes:g} min is too small for one round: with the teacher at {teacher_s * 1e3:.0f} ms "
            f"per call and a student training step at {step_s * 1e3:.0f} ms, {MIN_MD_FRAMES} MD frames per "
            f"temperature and {MIN_EPOCHS} epochs for {members} members ({workers} at a time) need about "
            f"{math.ceil(need / 60)} min; "
            "give --minutes of at least that, fewer --temperatures or seed structures, or a smaller --committee"
        )
