"""The ``facet-calc`` argument parser: one sub-parser per command, with the option types that
turn a bad value into argparse's one-line error. Imports no torch (``list`` and ``--version``
stay fast)."""

from __future__ import annotations

import argparse
import re

from ..options import JOB_DTYPES


def _device(text: str) -> str:
    """argparse type: cpu, cuda, cuda:N or auto."""
    if text in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or auto")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _add_common(p: argparse.ArgumentParser, job: str, plot: str | None = None) -> None:
    p.add_argument("structure", help="structure file ASE can read (CIF, POSCAR, extxyz, ...)")
    p.add_argument("--potential", default=None, help="potential name, or the path of a potential folder "
                   "(default: 7net-0-spline)")  # fmt: skip
    p.add_argument("--no-verify", action="store_true",
                   help="load a potential folder no index.json lists, unchecked (your own conversions)")  # fmt: skip
    p.add_argument("--head", default=None, help="fidelity of a multi-fidelity potential, e.g. pbe or r2scan")
    p.add_argument("--d3", action="store_true", help="add D3(BJ) dispersion with PBE parameters (needs facet_calc[d3])")
    p.add_argument("--device", default="cpu", type=_device, help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help=f"floating-point precision (default for this job: {JOB_DTYPES[job]})")  # fmt: skip
    p.add_argument("--frame", default=None, help="which structure of a multi-structure file (ASE index: 0, -1, ...)")
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    if plot:  # only jobs that draw something take --plot
        p.add_argument("--plot", action="store_true", help=f"also write a PNG of {plot}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_structure_jobs(sub) -> None:
    _add_common(sub.add_parser("single", help="energy, forces and stress"), "single")
    relax = sub.add_parser("relax", help="relax positions and, for a crystal, the cell")
    _add_common(relax, "relax", plot="energy and largest force against step")
    relax.add_argument("--fmax", type=_positive(float), default=0.01, help="eV/A")
    relax.add_argument("--fixed-cell", action="store_true")
    relax.add_argument("--steps", type=_positive(int), default=1000)
    md = sub.add_parser("md", help="molecular dynamics")
    _add_common(md, "md", plot="energies and temperature against time")
    md.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nvt")
    md.add_argument("--temperature", type=_non_negative_float, default=300.0, help="K")
    md.add_argument("--timestep", type=_positive(float), default=1.0, help="fs")
    md.add_argument("--steps", type=_positive(int), default=1000)
    md.add_argument("--pressure", type=float, default=0.0, help="GPa (npt)")
    ph = sub.add_parser("phonons", help="phonon band structure and DOS (phonopy)")
    _add_common(ph, "phonons", plot="the band structure and DOS")
    ph.add_argument("--supercell", type=_positive(int), nargs=3, default=[2, 2, 2])
    eos = sub.add_parser("eos", help="equation of state and bulk modulus")
    _add_common(eos, "eos", plot="E(V) with the fit")
    eos.add_argument("--max-strain", type=_positive(float), default=0.05, help="relative volume change")
    el = sub.add_parser("elastic", help="elastic constants (strain-stress fit)")
    _add_common(el, "elastic")
    el.add_argument("--max-strain", type=_positive(float), default=0.01)


def _add_training(sub) -> None:
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
    # balanced loss: each term is divided by the base's RMS error on it, so the weights carry no units
    p.add_argument("--energy-weight", type=float, default=1.0, help="relative weight of the energy term")
    p.add_argument("--force-weight", type=float, default=1.0, help="relative weight of the force term")
    p.add_argument("--stress-weight", type=float, default=1.0, help="relative weight of the stress term (0: no stress)")
    p.add_argument("--loss", choices=["mse", "huber"], default="mse", help="huber: quadratic within one scale")
    p.add_argument("--stress-offset", choices=["auto", "keep"], default="auto",
                   help="a stress offset flagged as likely Pulay stress: subtract it (auto) or train on it (keep)")
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without improvement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facet-calc", description="List and inspect potentials, and run the common workflows on a structure file."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="names of the shipped potentials")
    info = sub.add_parser("info", help="metadata and model card of a potential")
    info.add_argument("name")
    _add_structure_jobs(sub)
    _add_training(sub)
    mliap = sub.add_parser(
        "export-lammps-mliap", help="ML-IAP unified model file for LAMMPS builds with the Python coupling"
    )
    mliap.add_argument("potential", help="potential name or folder")
    mliap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    mliap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    mliap.add_argument("--out", required=True, help="output file (.pkl): pair_style mliap unified OUT 0")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facet_calc")
    except PackageNotFoundError:  # run from a source checkout
        from .. import __version__

        return __version__
