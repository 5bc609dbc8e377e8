"""The ``facet-calc`` argument parser: one sub-parser per command, with the option types that
turn a bad value into argparse's one-line error. Imports no torch (``list`` and ``--version``
stay fast)."""

from __future__ import annotations

import argparse
import math
import re

from ..options import JOB_DTYPES


def _device(text: str) -> str:
    """argparse type: cpu, cuda, cuda:N or auto."""
    if text in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or auto")


def _number(kind, text: str):
    """``text`` as a finite ``kind``: ``inf`` and ``nan`` parse as floats but make no run."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'number' if kind is float else 'whole number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive(kind):
    def parse(text: str):
        value = _number(kind, text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _finite_float(text: str) -> float:
    return _number(float, text)


def _non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _strain(text: str) -> float:
    """A relative strain in (0, 1): at 1 or more the compressed cell would have no volume."""
    value = _positive(float)(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction below 1 (0.05 is 5 %), got {text}")
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
    md.add_argument("--pressure", type=_finite_float, default=0.0, help="GPa (npt)")
    ph = sub.add_parser("phonons", help="phonon band structure and DOS (phonopy)")
    _add_common(ph, "phonons", plot="the band structure and DOS")
    ph.add_argument("--supercell", type=_positive(int), nargs=3, default=[2, 2, 2])
    eos = sub.add_parser("eos", help="equation of state and bulk modulus")
    _add_common(eos, "eos", plot="E(V) with the fit")
    eos.add_argument("--max-strain", type=_strain, default=0.05, help="relative volume change")
    el = sub.add_parser("elastic", help="elastic constants (strain-stress fit)")
    _add_common(el, "elastic")
    el.add_argument("--max-strain", type=_strain, default=0.01, help="largest strain component")


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
    ft.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    di = sub.add_parser(
        "distill",
        help="distil a fast Facet committee for one chemistry from a teacher potential",
        description="Sample the teacher (MD at several temperatures, strains, rattle-relax-repeat, displacements "
        "and strains of its relaxed structure), train a "
        "committee of small Facet students on its labels, run one round of active learning and write "
        "DIR/potential (the best student), DIR/committee (all of them: mean and spread), DIR/report (JSON, PNGs). "
        "An existing run in DIR with the same inputs is resumed.",
    )
    di.add_argument("teacher", help="shipped potential name or potential folder to distil")
    di.add_argument("--structures", required=True, help="seed structures (any ASE-readable file, every frame)")
    di.add_argument("--out", required=True, help="run folder (created; resumed when it holds the same run)")
    di.add_argument("--minutes", type=_positive(float), default=30.0,
                    help="time budget (sizes the sampling and training)")  # fmt: skip
    di.add_argument("--temperatures", type=_positive(float), nargs="+", default=[300.0],
                    help="MD temperatures you will run (K); sampling adds 1.5x the highest")  # fmt: skip
    di.add_argument("--size", choices=["small", "medium"], default="small", help="student size")
    di.add_argument("--committee", type=_positive(int), default=3, help="number of students (seeds)")
    di.add_argument("--cutoff", type=_positive(float), default=None,
                    help="students' cutoff, A (default: min(5, teacher's))")  # fmt: skip
    di.add_argument("--seed", type=int, default=0)
    di.add_argument("--workers", type=_positive(int), default=None,
                    help="students trained at once, a process each (default: min(committee, cores))")  # fmt: skip
    di.add_argument("--no-report", action="store_true", help="skip the report (phonons, EOS, RDF, speed)")
    di.add_argument("--device", default="cpu", type=_device, help="cpu, cuda, cuda:N")
    di.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    di.add_argument("--quiet", action="store_true", help="no progress lines")
    tr = sub.add_parser("train", help="train a potential from a YAML file (from scratch or from a base)")
    tr.add_argument("config", help="YAML file; see facet_calc.train.recipe for its keys")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in the run folder")
    tr.add_argument("--overwrite", action="store_true", help="replace a run already in the run folder")
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
    sub.add_parser("list", help="names of the shipped potentials, then of your own (facet-calc convert --name)")
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
    _add_convert(sub)
    return parser


def _add_convert(sub) -> None:
    conv = sub.add_parser(
        "convert",
        help="convert a SevenNet or MACE checkpoint into a potential (fidelity-checked)",
        description="Convert a SevenNet .pth checkpoint or a MACE .model/.pt file into a spline potential: measures "
        "it against the source model (float64 and float32) before writing and refuses above the bound or for a "
        "layout it cannot represent exactly. Reads a SevenNet checkpoint with torch.load(weights_only=True) (needs "
        "sevenn); a MACE file is a pickled model, so it is unpickled (only the file you name here, only if it "
        "pickles nothing beyond mace-torch, e3nn, torch and numpy; needs mace-torch).",
    )
    conv.add_argument("checkpoint", help="SevenNet checkpoint (.pth) or MACE model file (.model, .pt)")
    where = conv.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="potential folder to write (index.json goes beside it); load it by this path")
    where.add_argument("--name", help="install into your potential directory ($FACET_CALC_POTENTIALS, default "
                       "~/.local/share/facet_calc/potentials) under this name; load it by name")  # fmt: skip
    conv.add_argument("--head", help="default head of a multi-fidelity checkpoint (all heads are kept)")
    conv.add_argument("--licence", help="licence of the checkpoint, recorded in the card")
    conv.add_argument("--overwrite", action="store_true", help="replace a converted potential that exists there")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facet_calc")
    except PackageNotFoundError:  # run from a source checkout
        from .. import __version__

        return __version__
