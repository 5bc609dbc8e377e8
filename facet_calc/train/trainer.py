"""The training loop: batches, loss, AdamW, schedule, clipping, EMA, validation, early
stopping, the guard against ending worse than the start (:mod:`.guard`), a CSV log and a
checkpoint after every epoch, and exact resume.

Before epoch 1 the starting model is evaluated on the training set (the balanced loss's
scales, :func:`.loss.balance_scales`) and on the validation set (the guard's reference).

Reproducible on the CPU: the only randomness is the shuffle of each epoch, drawn from a
generator seeded with ``(seed, epoch)``, so an epoch that is redone after a resume visits the
batches in the same order, and a run killed mid-epoch and resumed ends with the same weights
as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from ase.units import GPa
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..graph import AtomicGraph, group_by_edge_budget
from ..nn.forward import evaluate
from .checkpoint import TENSORS, has_checkpoint, load_checkpoint, save_checkpoint
from .data import Configuration, batch_of
from .ema import ExponentialMovingAverage
from .guard import GuardWarning, ValidationGuard
from .loss import Metrics, balance_scales, loss_terms, predicted_stress
from .settings import TrainSettings


def predict(
    model: torch.nn.Module, batch: AtomicGraph, create_graph: bool, with_stress: bool, with_forces: bool = True
) -> dict[str, torch.Tensor]:
    """Energies (n_graphs,), forces and virials of a batch (the calculator's code path)."""
    return evaluate(model, batch, compute_forces=with_forces, compute_virial=with_stress, create_graph=create_graph)


class Trainer:
    """Trains ``model`` (its trainable parameters: those with ``requires_grad``) on
    configurations; writes ``log.csv`` and the checkpoint into ``out_dir``.

    ``on_step(trainer, epoch, step_in_epoch)`` is called after each optimizer step (tests use it
    to interrupt a run).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train: Sequence[Configuration],
        valid: Sequence[Configuration],
        settings: TrainSettings,
        out_dir: str | Path,
        progress: bool = True,
        on_step: Callable[[Trainer, int, int], None] | None = None,
    ) -> None:
        if not train:
            raise ValueError("no training configurations")
        self.settings = settings
        self.dtype = getattr(torch, settings.dtype)
        self.device = torch.device(settings.device)
        self.model = model.to(device=self.device, dtype=self.dtype)
        # second derivatives (forces in the loss) and parameter gradients: the torch backend
        self.model.set_backend("torch")
        self.model.train()
        self.train_set, self.valid_set = list(train), list(valid)
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.on_step = on_step
        self.with_stress = settings.loss.stress > 0 and any(c.has_stress for c in self.train_set)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (everything is frozen)")
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.train_set) / settings.batch_size)
        self.scheduler = self._make_scheduler()
        self.ema = ExponentialMovingAverage(self.model, settings.ema_decay) if settings.ema_decay else None
        self.epoch = 0  # epochs completed
        self.best_valid_loss = math.inf
        self.epochs_without_improvement = 0
        self.history: list[dict[str, float]] = []
        #: the balanced loss's scales (eV/atom, eV/A, GPa), measured before epoch 1; None: unbalanced
        self.scales: dict[str, float] | None = None
        self.guard: ValidationGuard | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None  # the guard's kept weights
        self.stopped_by_guard = False
        self.started = False  # the starting model has been measured (scales, guard)

    def _make_scheduler(self):
        s = self.settings
        if s.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=s.plateau_factor, patience=s.plateau_patience
            )
        total = s.epochs * self.steps_per_epoch
        warmup = max(1, round(s.warmup_epochs * self.steps_per_epoch))

        def factor(step: int) -> float:
            if s.schedule == "constant":
                return 1.0
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return s.min_lr_factor + (1 - s.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def save(self) -> None:
        state = {
            "epoch": self.epoch,
            "best_valid_loss": self.best_valid_loss,
            "epochs_without_improvement": self.epochs_without_improvement,
            "ema_updates": self.ema.updates if self.ema else 0,
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "settings": self.settings.to_dict(),
            "scales": self.scales,
            "guard": self.guard.to_dict() if self.guard else None,
            "stopped_by_guard": self.stopped_by_guard,
        }
        ema = self.ema.shadow if self.ema else None
        # the guard's kept weights go into the same file: one rename commits them with the rest
        save_checkpoint(self.checkpoint_dir, self.model, ema, self.optimizer, state, best=self.best_weights)

    def resume(self) -> bool:
        """Continue from the last checkpoint in ``out_dir``; False when there is none."""
        if not has_checkpoint(self.checkpoint_dir):
            return False
        state = load_checkpoint(self.checkpoint_dir, self.model, self.ema.shadow if self.ema else None, self.optimizer)
        saved = TrainSettings(**state["settings"]).to_dict()
        changed = sorted(k for k in saved if k != "epochs" and saved[k] != self.settings.to_dict()[k])
        if changed:
            raise ValueError(
                f"the checkpoint in {self.checkpoint_dir} was made with other settings ({', '.join(changed)}); "
                "resume with the same settings or start in a new folder"
            )
        self.epoch = state["epoch"]
        self.best_valid_loss = state["best_valid_loss"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        if self.ema:
            self.ema.updates = state["ema_updates"]
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]
        self.scales = state.get("scales")
        self.stopped_by_guard = state.get("stopped_by_guard", False)
        if state.get("guard"):
            self.guard = ValidationGuard(**state["guard"])
            tensors = load_file(str(self.checkpoint_dir / TENSORS))
            best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
            self.best_weights = {k: v.to(self.device, self.dtype) for k, v in best.items()}
        self.started = True
        # the radial tables derive their C2 slopes from the restored values
        self.model.train()
        return True

    # -- the loop ----------------------------------------------------------------------------
    def _batches(self, configs: Sequence[Configuration], shuffle_epoch: int | None) -> list[list[Configuration]]:
        order = list(range(len(configs)))
        if shuffle_epoch is not None:
            gen = torch.Generator().manual_seed(self.settings.seed * 100003 + shuffle_epoch)
            order = torch.randperm(len(configs), generator=gen).tolist()
        size = self.settings.batch_size
        batches = [[configs[i] for i in order[k : k + size]] for k in range(0, len(order), size)]
        if self.settings.max_edges is None:
            return batches
        return [
            [batch[j] for j in group]
            for batch in batches
            for group in group_by_edge_budget([c.graph.n_edges for c in batch], self.settings.max_edges)
        ]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        metrics = Metrics()
        batches = self._batches(self.train_set, shuffle_epoch=epoch)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.settings.epochs}", disable=not self.progress, leave=False)
        for step, configs in enumerate(bar):
            batch = batch_of(configs, self.dtype, self.device)
            pred = predict(self.model, batch, create_graph=True, with_stress=self.with_stress)
            terms = loss_terms(pred, batch, self.settings.loss, self.scales)
            self.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if self.settings.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], self.settings.clip_grad_norm
                )
            self.optimizer.step()
            if self.settings.schedule != "plateau":
                self.scheduler.step()
            if self.ema:
                self.ema.update()
            metrics.update(pred, batch, float(terms["total"].detach()))
            summary = metrics.summary()
            bar.set_postfix(
                loss=f"{summary['loss']:.3g}",
                E=f"{summary.get('energy_mae_meV_per_atom', 0):.1f}",
                F=f"{summary.get('forces_mae_meV_per_A', 0):.0f}",
            )
            if self.on_step is not None:
                self.on_step(self, epoch, step)
        return metrics.summary("train_")

    def _evaluated(self, configs: Sequence[Configuration]):
        """(batch, prediction) of the EMA weights (the ones that are saved) over ``configs``."""
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            for chunk in self._batches(configs, shuffle_epoch=None):
                batch = batch_of(chunk, self.dtype, self.device)
                yield batch, predict(self.model, batch, create_graph=False, with_stress=self.with_stress)

    def validate(self, configs: Sequence[Configuration] | None = None, prefix: str = "valid_") -> dict[str, float]:
        """Metrics of the EMA weights on ``configs`` (default: the validation set)."""
        metrics = Metrics()
        for batch, pred in self._evaluated(self.valid_set if configs is None else configs):
            metrics.update(pred, batch, float(loss_terms(pred, batch, self.settings.loss, self.scales)["total"]))
        return metrics.summary(prefix)

    def _weights(self) -> dict[str, torch.Tensor]:
        """A copy of the weights that would be saved now (the EMA's, or the trainable ones)."""
        if self.ema:
            return {k: v.detach().clone() for k, v in self.ema.shadow.items()}
        return {k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad}

    def start(self) -> None:
        """Measure the starting model before epoch 1: the balanced loss's scales on the training
        set, and the guard's reference on the validation set."""
        self.started = True
        if self.settings.loss.balance:
            self.scales = balance_scales(self.validate(self.train_set, prefix=""))
            self._say("balanced loss: each term divided by the starting model's RMS error on the training set: "
                      + ", ".join(f"{k} {v:.4g} {u}" for (k, v), u in
                                  zip(self.scales.items(), ("eV/atom", "eV/A", "GPa"))))  # fmt: skip
        if not self.settings.guard:
            return
        if not self.valid_set:
            warnings.warn(
                "no validation set: the fine-tuning guard cannot check that training does not make the "
                "model worse than where it started; give a validation file or a valid_fraction",
                GuardWarning,
                stacklevel=3,
            )
            return
        base = self.validate()
        self.guard = ValidationGuard.start(base, self.settings.guard_patience, self.settings.guard_tolerance)
        self.best_weights = self._weights()
        shown = {k: v for k, v in base.items() if "_mae_" in k}
        self._say("starting model on the validation set (the guard's reference): "
                  + ", ".join(f"{k.removeprefix('valid_')} {v:.4g}" for k, v in shown.items()))  # fmt: skip

    def _say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)

    def predictions(self, configs: Sequence[Configuration]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(reference, predicted) of the EMA weights: energy per atom (eV), force components
        (eV/A) and stress components (GPa), for parity plots."""
        out: dict[str, tuple[list, list]] = {"energy": ([], []), "forces": ([], []), "stress": ([], [])}
        for batch, pred in self._evaluated(configs):
            labels = batch.labels
            out["energy"][0].append(labels.energy / batch.counts)
            out["energy"][1].append(pred["energy"] / batch.counts)
            out["forces"][0].append(labels.forces[labels.force_mask].reshape(-1))
            out["forces"][1].append(pred["forces"][labels.force_mask].reshape(-1))
            if pred["virial"] is not None and bool(labels.stress_mask.any()):
                stress = predicted_stress(pred["virial"], batch.volumes.to(labels.energy.dtype))
                out["stress"][0].append(labels.stress[labels.stress_mask].reshape(-1) / GPa)
                out["stress"][1].append(stress[labels.stress_mask].reshape(-1) / GPa)
        return {
            k: (torch.cat(r).double().cpu().numpy(), torch.cat(p).double().cpu().numpy())
            for k, (r, p) in out.items()
            if r
        }

    def run(self, resume: bool = False) -> list[dict[str, float]]:
        """Train up to ``settings.epochs`` (or until early stopping); returns the history."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        if not self.started:
            self.start()
        while self.epoch < self.settings.epochs:
            if self._should_stop() or self.stopped_by_guard:
                break
            start = time.perf_counter()
            row = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(self.epoch))
            if self.valid_set:
                row.update(self.validate())
            row["seconds"] = time.perf_counter() - start
            valid_loss = row.get("valid_loss", row["train_loss"])
            if self.settings.schedule == "plateau":
                self.scheduler.step(valid_loss)
            if valid_loss < self.best_valid_loss:
                self.best_valid_loss, self.epochs_without_improvement = valid_loss, 0
            else:
                self.epochs_without_improvement += 1
            self.epoch += 1
            if self.guard is not None:
                if self.guard.judge(self.epoch, row):
                    self.best_weights = self._weights()
                self.stopped_by_guard = self.guard.should_stop
            self.history.append(row)
            self.save()  # before the log: log.csv never lists an epoch the checkpoint lacks
            self._log(row)
        return self.history

    def _should_stop(self) -> bool:
        patience = self.settings.early_stopping_patience
        return patience is not None and self.epochs_without_improvement >= patience

    def _log(self, row: dict[str, float]) -> None:
        if self.progress:
            shown = {k: row[k] for k in row if k.endswith("mae_meV_per_atom") or k.endswith("mae_meV_per_A")}
            text = ", ".join(f"{k.replace('_mae', ' MAE').replace('_per_', '/')} {v:.2f}" for k, v in shown.items())
            tqdm.write(f"epoch {row['epoch']}: loss {row['train_loss']:.4g}; {text}")
        path = self.out_dir / "log.csv"
        rows = self.history
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    def finish(self) -> torch.nn.Module:
        """Put the kept weights into the model (the EMA's; the guard's best epoch's when a later
        one was worse on validation, with a :class:`GuardWarning`) and leave training mode (the
        radial tables store their derived slopes); returns the model, ready to save."""
        if self.ema:
            self.ema.copy_to_model()
        if self.guard is not None and self.best_weights is not None:
            message = self.guard.verdict(self.epoch, self.stopped_by_guard)
            if self.guard.best_epoch != self.epoch:
                params = dict(self.model.named_parameters())
                with torch.no_grad():
                    for k, v in self.best_weights.items():
                        params[k].copy_(v)
            if message is not None:
                warnings.warn(message, GuardWarning, stacklevel=2)
                self._say(message)
        return self.model.eval()
