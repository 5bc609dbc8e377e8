"""PNG figures of a training run: learning curves and parity plots.

Drawn with matplotlib's object API on an Agg canvas, so the user's plotting backend (a
Jupyter session, say) is never switched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_UNITS = {"energy": "meV/atom", "forces": "meV/A", "stress": "GPa"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_learning_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """MAE of energy, forces and stress on train and valid per epoch (log scale)."""
    keys = [k for k in ("energy", "forces", "stress") if any(f"train_{k}_mae" in c for c in history[0])]
    fig = _figure(4 * len(keys), 3.2)
    epochs = [row["epoch"] for row in history]
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        for split in ("train", "valid"):
            name = next((c for c in history[0] if c.startswith(f"{split}_{key}_mae")), None)
            if name:
                ax.plot(epochs, [row.get(name, np.nan) for row in history], marker="o", ms=3, label=split)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{key} MAE ({_UNITS[key]})")
        ax.legend()
    fig.savefig(str(path), dpi=120)


def plot_parity(values: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> None:
    """Predicted against reference for each quantity; ``values[key] = (reference, predicted)``
    in the units of ``_UNITS`` (energy per atom, force and stress components)."""
    keys = [k for k in ("energy", "forces", "stress") if k in values and len(values[k][0])]
    fig = _figure(4 * len(keys), 3.8)
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        ref, pred = (np.asarray(v, dtype=float) for v in values[key])
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=6, alpha=0.6)
        mae = np.abs(pred - ref).mean()
        unit = {"energy": "eV/atom", "forces": "eV/A", "stress": "GPa"}[key]
        ax.set_xlabel(f"reference {key} ({unit})")
        ax.set_ylabel(f"predicted {key} ({unit})")
        scale = 1e3 if key != "stress" else 1.0
        ax.set_title(f"MAE {mae * scale:.3g} {_UNITS[key]}")
    if title:
        fig.suptitle(title)
    fig.savefig(str(path), dpi=120)
