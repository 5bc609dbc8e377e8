"""The training loss and the error metrics, from a batch and the model's predictions.

Loss = w_E * <c (dE / n_atoms)^2> + w_F * <c |dF|^2 / 3> + w_S * <c |dS|^2 / 9>, averaged over
structures (energy, stress) and atoms (forces), each term weighted by the configuration weight
``c``; with ``kind="huber"`` each squared error is replaced by the Huber function (quadratic
within ``delta`` of zero, linear beyond it). Units inside the loss: eV/atom, eV/A and GPa, so
that the default weights make the three terms comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ase.units import GPa

from ..graph import AtomicGraph


@dataclass(frozen=True)
class LossWeights:
    energy: float = 1.0
    forces: float = 1.0
    stress: float = 0.1
    kind: str = "mse"  # or "huber"
    huber_delta: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in ("mse", "huber"):
            raise ValueError(f"loss kind must be 'mse' or 'huber', got {self.kind!r}")
        if min(self.energy, self.forces, self.stress) < 0:
            raise ValueError("loss weights must be >= 0")


def predicted_stress(virial: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Stress (n, 3, 3) in eV/A^3, ASE sign, from virials dE/d(strain) (n, 3, 3)."""
    return virial / volume[:, None, None]


def _penalty(diff: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    if weights.kind == "mse":
        return diff.square()
    return torch.nn.functional.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=weights.huber_delta)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    total = weight.sum()
    return (values * weight).sum() / total if total > 0 else values.sum() * 0.0


def _volumes(batch: AtomicGraph) -> torch.Tensor:
    """``(n_graphs,)`` volumes in the labels' dtype (1 where there is no cell: no stress there)."""
    v = batch.volumes.to(batch.labels.energy.dtype)
    return torch.where(v > 0, v, torch.ones_like(v))


def loss_terms(pred: dict[str, torch.Tensor], batch: AtomicGraph, weights: LossWeights) -> dict[str, torch.Tensor]:
    """The weighted loss and its three terms (each a 0-d tensor)."""
    labels = batch.labels
    c = labels.weight
    de = (pred["energy"] - labels.energy) / batch.counts
    terms = {"energy": _weighted_mean(_penalty(de, weights), c)}
    c_atoms = c[batch.batch] * labels.force_mask
    df = pred["forces"] - labels.forces
    terms["forces"] = _weighted_mean(_penalty(df, weights).mean(dim=1), c_atoms)
    if pred.get("virial") is not None and bool(labels.stress_mask.any()):
        ds = (predicted_stress(pred["virial"], _volumes(batch)) - labels.stress) / GPa
        terms["stress"] = _weighted_mean(_penalty(ds, weights).mean(dim=(1, 2)), c * labels.stress_mask)
    else:
        terms["stress"] = de.sum() * 0.0
    terms["total"] = (
        weights.energy * terms["energy"] + weights.forces * terms["forces"] + weights.stress * terms["stress"]
    )
    return terms


class Metrics:
    """Running MAE and RMSE of energy (meV/atom), forces (meV/A) and stress (GPa)."""

    def __init__(self) -> None:
        self.sums = {k: [0.0, 0.0, 0] for k in ("energy", "forces", "stress")}
        self.loss_sum, self.loss_count = 0.0, 0

    def update(self, pred: dict[str, torch.Tensor], batch: AtomicGraph, loss: float) -> None:
        labels = batch.labels
        de = ((pred["energy"] - labels.energy) / batch.counts * 1e3).detach()
        self._add("energy", de)
        df = (pred["forces"] - labels.forces)[labels.force_mask].detach() * 1e3
        self._add("forces", df.reshape(-1))
        if pred.get("virial") is not None and bool(labels.stress_mask.any()):
            ds = (predicted_stress(pred["virial"], _volumes(batch)) - labels.stress)[labels.stress_mask] / GPa
            self._add("stress", ds.detach().reshape(-1))
        self.loss_sum += loss * batch.n_graphs
        self.loss_count += batch.n_graphs

    def _add(self, key: str, diff: torch.Tensor) -> None:
        s = self.sums[key]
        s[0] += float(diff.abs().sum())
        s[1] += float(diff.double().square().sum())
        s[2] += diff.numel()

    def summary(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}loss": self.loss_sum / max(self.loss_count, 1)}
        units = {"energy": "meV_per_atom", "forces": "meV_per_A", "stress": "GPa"}
        for key, (abs_sum, sq_sum, n) in self.sums.items():
            if n:
                out[f"{prefix}{key}_mae_{units[key]}"] = abs_sum / n
                out[f"{prefix}{key}_rmse_{units[key]}"] = (sq_sum / n) ** 0.5
        return out
