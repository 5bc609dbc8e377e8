"""The per-element energy shifts, fitted by least squares before training, so that data from
another code or functional (or a fresh model) does not spend the first epochs on a constant
offset per element."""

from __future__ import annotations

import torch
from ase.data import chemical_symbols

from .data import Configuration, batch_of
from .trainer import predict


@torch.no_grad()
def refit_shifts(model: torch.nn.Module, configs: list[Configuration], dtype: torch.dtype) -> torch.Tensor:
    """Change the per-species shifts by the least-squares (minimum-norm) correction that best
    matches the reference energies of ``configs``; returns the change per species (eV)."""
    model.eval()
    residual, counts = [], []
    n_species = model.shift.shape[0]
    for k in range(0, len(configs), 16):
        chunk = configs[k : k + 16]
        batch = batch_of(chunk, dtype, model.device)
        pred = predict(model, batch, create_graph=False, with_stress=False, with_forces=False)
        residual.append((batch.labels.energy - pred["energy"]).double().cpu())
        counts += [torch.bincount(c.species, minlength=n_species).double() for c in chunk]
    a, b = torch.stack(counts), torch.cat(residual)
    present = a.sum(0) > 0
    delta = torch.zeros(n_species, dtype=torch.float64)
    # the minimum-norm solution leaves unidentifiable combinations (fixed stoichiometry) alone
    delta[present] = torch.linalg.lstsq(a[:, present], b.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    model.shift.add_(delta.to(model.shift))
    return delta


def refit_shifts_by_element(
    model: torch.nn.Module, configs: list[Configuration], dtype: torch.dtype, atomic_numbers: list[int]
) -> dict[str, float]:
    """:func:`refit_shifts`, the changes reported by element symbol (eV; changed ones only)."""
    delta = refit_shifts(model, configs, dtype)
    return {chemical_symbols[atomic_numbers[i]]: float(d) for i, d in enumerate(delta) if d != 0}
