"""The students: small Facet models sized for speed, trained as a committee of K seeds.

Sizes (``size``), measured on 64-atom Si against 7net-0-spline (issue 21: the ``small`` layout,
trained by hand, ran 1000 atoms 15.5-16x faster than the teacher on one thread):

* ``small``: 2 layers, 32x0e+16x1o+8x2e features, 32 embedding scalars, a mixer of 16
  channels on a degree-9 grid, a 32-wide scalar MLP, 32 spline intervals;
* ``medium``: 2 layers, 64x0e+32x1o+16x2e, 64 embedding scalars, a 32-channel mixer on a
  degree-11 grid, a 64-wide scalar MLP, 48 spline intervals;

both with the joint residual norm (smooth at symmetric sites, see below).

A dict of :func:`~facet_calc.nn.families.facet.facet_config` hyperparameters is also accepted
(tests use tiny ones). The per-element energy shifts come from the teacher: the mean of its
per-atom energies per element when it gives them (identifiable even at fixed stoichiometry),
else the least-squares fit of its total energies; the per-element scale starts at the spread
of the teacher's per-atom energies, so the fresh student starts near the teacher's energies.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..nn import build_model, initialise_for_training
from ..nn.families.facet import facet_config
from ..train import TrainSettings, fit
from ..train.checkpoint import has_checkpoint
from ..train.data import Configuration
from ..train.shifts import refit_shifts

SIZES: dict[str, dict[str, Any]] = {
    "small": {"hidden": "32x0e+16x1o+8x2e", "embedding": 32, "n_layers": 2,
              "mixer": {"channels": 16, "grid_degree": 9}, "scalar_mlp": [32], "n_intervals": 32,
              "residual_norm": "joint"},
    "medium": {"hidden": "64x0e+32x1o+16x2e", "embedding": 64, "n_layers": 2,
               "mixer": {"channels": 32, "grid_degree": 11}, "scalar_mlp": [64], "n_intervals": 48,
               "residual_norm": "joint"},
}  # fmt: skip
# residual_norm "joint": Facet's per-order layer norm divides each l > 0 block by its RMS, which
# is a cusp where those features vanish by symmetry (every atom of a perfect diamond or fcc
# crystal): a student of 64-atom Si with it had a restoring force constant of 151 / 130 / 75 /
# 38 eV/A^2 at displacements of 1e-4 / 1e-3 / 3e-3 / 1e-2 A (the teacher: 9.4 at each), so its
# Gamma optical phonon came out at 59.8 THz against 12.5. The joint norm divides all orders by
# one RMS per node, which the scalars keep away from zero: the same student trained with it
# has 9.717 eV/A^2 at every one of those displacements. Without any norm the students are
# smooth too but learn slower: 26 epochs on the same 116 frames (member 0, same seed) reach a
# validation force MAE of 64.3 meV/A with the joint norm, 75.1 with the per-order norm and
# 89.5 without (`benchmarks/student_ablation.py`).


def student_config(atomic_numbers: Sequence[int], size: str | dict, cutoff: float, avg_num_neighbors: float) -> dict:
    """The full Facet config of a student."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(
                f"size must be one of {sorted(SIZES)} or a dict of facet_config hyperparameters, got {size!r}"
            )
        hyper = dict(SIZES[size])
    else:
        hyper = dict(size)
    hyper.setdefault("n_intervals", 32)
    return facet_config(list(atomic_numbers), cutoff=cutoff, avg_num_neighbors=avg_num_neighbors, **hyper)


def mean_neighbours(configs: Sequence[Configuration]) -> float:
    """Mean number of neighbours within the cutoff (the convolution's normalisation)."""
    edges = sum(c.graph.n_edges for c in configs)
    atoms = sum(c.n_atoms for c in configs)
    return max(1.0, edges / max(atoms, 1))


@torch.no_grad()
def set_teacher_shifts(model: torch.nn.Module, configs: Sequence[Configuration], dtype: torch.dtype) -> dict:
    """Per-element shift (eV) and scale from the teacher's labels; returns what was set."""
    n_species = model.shift.shape[0]
    species = torch.cat([c.species for c in configs])
    labelled = all(bool(c.graph.labels.atom_energy_mask.all()) for c in configs)
    if labelled:
        values = torch.cat([c.graph.labels.atom_energies for c in configs])
        shift = torch.zeros(n_species, dtype=torch.float64)
        scale = torch.full((n_species,), 0.1, dtype=torch.float64)
        for s in range(n_species):
            chosen = values[species == s]
            if len(chosen):
                shift[s] = chosen.mean()
                scale[s] = max(float(chosen.std()) if len(chosen) > 1 else 0.0, 0.01)
        model.shift.copy_(shift.to(model.shift))
        model.scale.copy_(scale.to(model.scale))
        how = "mean of the teacher's per-atom energies"
    else:
        model.scale.fill_(0.1)
        refit_shifts(model, list(configs), dtype)
        how = "least squares on the teacher's energies"
    return {"how": how, "shift_eV": [float(v) for v in model.shift], "scale_eV": [float(v) for v in model.scale]}


#: built models by config, copied for each member (building compiles e3nn's linears: seconds)
_BUILT: dict[str, torch.nn.Module] = {}


def new_student(config: dict, seed: int, train: Sequence[Configuration], dtype: str) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised student (``seed``) with the teacher's shifts."""
    key = json.dumps(config, sort_keys=True) + dtype
    if key not in _BUILT:
        _BUILT.clear()  # one config at a time is all a run needs
        _BUILT[key] = build_model(config, getattr(torch, dtype))
    model = copy.deepcopy(_BUILT[key])
    initialise_for_training(model, seed)
    shifts = set_teacher_shifts(model, train, getattr(torch, dtype))
    return model.requires_grad_(True), shifts


def train_member(
    model: torch.nn.Module, train: Sequence[Configuration], valid: Sequence[Configuration], settings: TrainSettings,
    folder: Path, progress: bool = False,
) -> list[dict[str, float]]:  # fmt: skip
    """Train one member in ``folder`` (log.csv, checkpoint/), resuming the checkpoint there
    if a killed run left one; returns the history. The model is trained in place."""
    model.requires_grad_(True)
    result = fit(model, train, valid, settings, folder, resume=has_checkpoint(Path(folder) / "checkpoint"),
                 progress=progress)  # fmt: skip
    return result.history


@dataclass
class MemberJob:
    """One member's training: a fresh student (``seed``) or, with ``start``, the weights a
    previous round saved; trained on ``train`` and saved to ``folder/final.safetensors``."""

    config: dict
    seed: int
    train: list[Configuration]
    valid: list[Configuration]
    settings: TrainSettings
    folder: Path
    start: Path | None = None
    dtype: str = "float32"

    @property
    def final(self) -> Path:
        return Path(self.folder) / "final.safetensors"


def run_job(job: MemberJob, threads: int | None = None) -> list[dict[str, float]]:
    """Build, train (resuming a checkpoint in ``job.folder``) and save one member; returns the
    history. ``threads``: torch threads for the training (restored after)."""
    from safetensors.torch import save_file

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, _ = new_student(job.config, job.seed, job.train, job.dtype)
        if job.start is not None:
            load_weights(job.start, model)
        history = train_member(model, job.train, job.valid, job.settings, job.folder)
        tmp = job.final.with_name(job.final.name + ".tmp")
        save_file({k: v.contiguous() for k, v in weights(model).items()}, str(tmp))
        os.replace(tmp, job.final)
        return history
    finally:
        torch.set_num_threads(before)


def train_committee(jobs: Sequence[MemberJob], workers: int = 1) -> None:
    """Run the jobs whose ``final`` is missing: in this process one after another
    (``workers=1``), or in ``workers`` spawned processes of one torch thread each. Each job is
    the same pure function of its inputs either way (seeded; the trainer's checkpoints make a
    killed job resume where it stopped), so the weights do not depend on ``workers``."""
    todo = [job for job in jobs if not job.final.is_file()]
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            run_job(job)
        return
    # spawn, not fork: a forked child inherits the parent's OpenMP pool state and can hang.
    # The jobs travel as bytes of the standard pickler (their tensors' data inline): the pool's
    # own pickler (torch's) would share every tensor of the training data through a file
    # descriptor of its own, and a few hundred frames of three jobs took 20000 of them, past
    # the open-files limit (the workers died with "Too many open files").
    payloads = [pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL) for job in todo]
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_run_sent_job, payload, 1) for payload in payloads]:
            future.result()  # a worker's exception is raised here


def _run_sent_job(payload: bytes, threads: int) -> list[dict[str, float]]:
    """:func:`run_job` in a worker, on a job that :func:`train_committee` pickled (our own
    process's bytes, never a file)."""
    return run_job(pickle.loads(payload), threads)


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Copy saved member weights into ``model`` (in eval mode after)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[name])
    model.eval()


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a potential folder stores."""
    return {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
