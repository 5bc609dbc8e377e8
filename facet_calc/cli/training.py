"""The training commands: ``finetune`` (a potential tuned on labelled structures), ``train`` (a
run described by a YAML file, from scratch or from a base) and ``distill`` (a committee of fast
students from a teacher)."""

from __future__ import annotations

from pathlib import Path


def settings_from_args(args):
    """The :class:`~facet_calc.train.TrainSettings` that ``finetune``'s options give."""
    from ..train import LossWeights, TrainSettings

    return TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        ema_decay=args.ema_decay or None,
        early_stopping_patience=args.patience,
        seed=args.seed,
        stress_offset=args.stress_offset,
        device=args.device,
        dtype=args.dtype,
        loss=LossWeights(
            energy=args.energy_weight, forces=args.force_weight, stress=args.stress_weight, kind=args.loss
        ),
    )


def finetune(args) -> int:
    import torch

    from ..train import LabelKeys
    from ..train import finetune as run_finetune

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    result = run_finetune(
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
        overwrite=args.overwrite,
        progress=not args.quiet,
        plots=True,
    )
    print(f"fine-tuned potential written to {result.potential_dir}; load it with "
          f"FacetCalculator({str(result.potential_dir)!r})")  # fmt: skip
    return 0


def train(args) -> int:
    from ..train.recipe import train_from_yaml

    folder = train_from_yaml(Path(args.config), resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    print(f"potential written to {folder}")
    return 0


def distill(args) -> int:
    from ..distill import distill as run_distill

    result = run_distill(
        args.teacher, args.structures, args.out, minutes=args.minutes, temperatures=args.temperatures,
        size=args.size, committee=args.committee, seed=args.seed, cutoff=args.cutoff,
        report=not args.no_report, overwrite=args.overwrite, progress=not args.quiet, device=args.device,
        workers=args.workers,
    )  # fmt: skip
    print(f"distilled potential written to {result.potential_dir} (committee: {result.committee_dir}); load it "
          f"with FacetCalculator({str(result.potential_dir)!r})")  # fmt: skip
    return 0
