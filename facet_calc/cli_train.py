"""The training commands of ``facet-calc``: ``finetune`` and ``train`` (from a YAML file).

    facet-calc finetune 7net-0-spline --train dft.extxyz --out runs/ft --epochs 30 --lr 1e-4
    facet-calc train config.yaml

Kept apart from ``cli.py`` so that the structure commands do not import the training code.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub) -> None:
    ft = sub.add_parser(
        "finetune",
        help="fine-tune a potential on your labelled structures",
        description="Fine-tune a shipped or saved potential on labelled structures (energy, forces, "
        "stress); writes a potential folder DIR/potential, log.csv, plots and a checkpoint into DIR.",
    )
    ft.add_argument("base", help="shipped potential name or potential folder to start from")
    ft.add_argument("--train", required=True, help="labelled structures (any ASE-readable file, all frames)")
    ft.add_argument("--valid", help="validation structures (default: a seeded 10%% split of --train)")
    ft.add_argument("--out", required=True, help="run folder (created)")
    _add_settings(ft)
    ft.add_argument("--energy-key", help="info key of the energy (default: the attached results)")
    ft.add_argument("--forces-key", help="arrays key of the forces (default: the attached results)")
    ft.add_argument("--stress-key", help="info key of the stress (default: the attached results)")
    ft.add_argument("--freeze", nargs="*", default=[], metavar="PREFIX", help="parameter name prefixes to keep")
    ft.add_argument("--readout-only", action="store_true", help="train only the readout, scale and shift")
    ft.add_argument("--no-shift-refit", action="store_true", help="keep the base's per-element energy shifts")
    ft.add_argument("--name", help="name of the new potential (default: the --out folder name)")
    ft.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    tr = sub.add_parser("train", help="train a potential from a YAML file (from scratch or from a base)")
    tr.add_argument("config", help="YAML file; see facet_calc.train.recipe for its keys")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in the run folder")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    p.add_argument("--schedule", choices=["cosine", "plateau", "constant"], default="cosine")
    p.add_argument("--energy-weight", type=float, default=1.0, help="weight of the energy term (eV/atom)^2")
    p.add_argument("--force-weight", type=float, default=1.0, help="weight of the force term (eV/A)^2")
    p.add_argument("--stress-weight", type=float, default=0.1, help="weight of the stress term (GPa)^2")
    p.add_argument("--loss", choices=["mse", "huber"], default="mse")
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without improvement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")


def settings_from_args(args):
    from .train import LossWeights, TrainSettings

    return TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        ema_decay=args.ema_decay or None,
        early_stopping_patience=args.patience,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        loss=LossWeights(
            energy=args.energy_weight, forces=args.force_weight, stress=args.stress_weight, kind=args.loss
        ),
    )


def run(args) -> None:
    from .train import LabelKeys, finetune

    if args.command == "finetune":
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
        result = finetune(
            args.base,
            args.train,
            args.out,
            settings_from_args(args),
            valid=args.valid,
            keys=LabelKeys(energy=args.energy_key, forces=args.forces_key, stress=args.stress_key),
            freeze=tuple(args.freeze),
            train_only="readout" if args.readout_only else None,
            shift_refit=not args.no_shift_refit,
            name=args.name,
            resume=args.resume,
            progress=not args.quiet,
            plots=True,
        )
        print(f"fine-tuned potential written to {result.potential_dir}; load it with "
              f"FacetCalculator({str(result.potential_dir)!r})")  # fmt: skip
        return
    from .train.recipe import train_from_yaml

    folder = train_from_yaml(Path(args.config), resume=args.resume, progress=not args.quiet)
    print(f"potential written to {folder}")
