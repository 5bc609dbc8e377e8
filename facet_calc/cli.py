"""The ``facet-calc`` command: list and inspect potentials, run the common workflows on a file.

    facet-calc list
    facet-calc info 7net-0-spline
    facet-calc single POSCAR
    facet-calc relax structure.cif --fmax 0.01 --out results/
    facet-calc md structure.xyz --ensemble nvt --temperature 300 --steps 1000 --plot
    facet-calc phonons POSCAR --supercell 2 2 2 --plot
    facet-calc eos POSCAR --plot
    facet-calc elastic POSCAR

Every run writes its structures (extxyz or ASE trajectory) and ``summary.json`` (units in the
key names) into ``--out`` (default: the current folder), PNG plots with ``--plot``; existing
results there are kept unless ``--overwrite`` is given. A file with several structures is used
whole by ``single`` and refused by the other commands unless ``--frame`` picks one. Errors in
files or options are reported in one sentence, with exit status 2; Ctrl-C stops with status 130
(``md`` first writes a summary of the steps done, marked ``"interrupted": true``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

#: each job's default dtype: float64 where finite differences or small energy differences matter
DEFAULT_DTYPES = {"single": "float32", "relax": "float32", "md": "float32", "phonons": "float64", "eos": "float64",
                  "elastic": "float64"}  # fmt: skip


def _device(text: str) -> str:
    """argparse type: cpu, cuda, cuda:N or auto."""
    import re

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
                   help=f"floating-point precision (default for this job: {DEFAULT_DTYPES[job]})")  # fmt: skip
    p.add_argument("--frame", default=None, help="which structure of a multi-structure file (ASE index: 0, -1, ...)")
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    if plot:  # only jobs that draw something take --plot
        p.add_argument("--plot", action="store_true", help=f"also write a PNG of {plot}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facet-calc", description="List and inspect potentials, and run the common workflows on a structure file."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="names of the shipped potentials")
    info = sub.add_parser("info", help="metadata and model card of a potential")
    info.add_argument("name")
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
    from .cli_train import add_commands

    add_commands(sub)
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
        from . import __version__

        return __version__


class UserError(Exception):
    """A problem with the user's input, reported as one sentence."""


def _read(path: str, frame: str | None = None) -> list:
    """Every structure in ``path`` (or the one ``frame`` picks), as a list of Atoms."""
    from ase.io import read

    if not Path(path).is_file():
        raise UserError(f"structure file {path!r} does not exist")
    index = ":" if frame is None else frame
    try:
        frames = read(path, index=index)
    except (IndexError, ValueError, StopIteration) as err:
        if frame is not None:
            raise UserError(f"--frame {frame!r} does not select a structure of {path!r} ({err})") from err
        raise UserError(f"could not read {path!r} as a structure ({type(err).__name__}: {err})") from err
    except Exception as err:  # ASE raises many types for unreadable files, some without a message
        detail = f"{type(err).__name__}: {err}" if str(err) else f"its reader failed with a bare {type(err).__name__}"
        raise UserError(
            f"could not read {path!r} as a structure ({detail}); check that it is a complete file in a format "
            "ASE reads (CIF, POSCAR, extxyz, ...), with a suffix that names the format"
        ) from err
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise UserError(f"{path!r} holds no structure" + ("" if frame is None else f" at --frame {frame}"))
    return frames


def _calculator(args, default_dtype: str):
    from .calculator import FacetCalculator
    from .potential import DEFAULT_POTENTIAL, load_potential

    name, dtype = args.potential or DEFAULT_POTENTIAL, args.dtype or default_dtype
    dispersion = "d3" if args.d3 else None
    if args.no_verify:
        potential = load_potential(name, dtype=dtype, verify=False, head=args.head)
        return FacetCalculator(potential, device=args.device, dispersion=dispersion)
    return FacetCalculator(name, device=args.device, dtype=dtype, head=args.head, dispersion=dispersion)


def _outputs(args, stem: str) -> list[str]:
    """Names of the files a command writes into --out (checked before anything runs)."""
    plot = getattr(args, "plot", False)
    names = {
        "single": [f"{stem}_single.extxyz"],
        "relax": [f"{stem}_relax.traj", f"{stem}_relaxed.extxyz"],
        "md": [f"{stem}_md.traj"] + ([f"{stem}_md.png"] if plot else []),
        "phonons": [f"{stem}_phonopy_params.yaml"] + ([f"{stem}_phonons.png"] if plot else []),
        "eos": [f"{stem}_eos.png"] if plot else [],
        "elastic": [],
    }[args.command]
    return ["summary.json", *names]


def _prepare_out(args, stem: str) -> Path:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder; name a folder (it is created if missing)")
    existing = [name for name in _outputs(args, stem) if (out / name).exists()]
    if existing and not args.overwrite:
        raise UserError(
            f"{str(out)!r} already holds results ({', '.join(existing)}); choose another --out or pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {str(out)!r}: {err.strerror or err}") from err
    return out


#: jobs whose physics needs a crystal: a cell periodic in all three directions
_NEEDS_CRYSTAL = {"phonons": "phonons need", "eos": "an equation of state needs", "elastic": "elastic constants need"}


def _check_structure(args, atoms) -> None:
    """Refuse up front, in one sentence, a job the structure's periodicity does not allow."""
    crystal = bool(atoms.pbc.all()) and atoms.cell.rank == 3
    kind = "a molecule" if not atoms.pbc.any() else f"periodic only along {np.nonzero(atoms.pbc)[0].tolist()}"
    if args.command in _NEEDS_CRYSTAL and not crystal:
        raise UserError(
            f"{_NEEDS_CRYSTAL[args.command]} a crystal periodic in three directions, and this structure is {kind}"
        )
    if args.command == "md" and args.ensemble == "npt" and not crystal:
        raise UserError(
            f"NPT needs a crystal periodic in three directions (a volume to control); this structure is {kind}: "
            "use nve or nvt"
        )


def _write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def run(args) -> int:
    """Run the command; returns the exit status (0, or 130 for an interrupted MD run)."""
    if args.command == "list":
        from .index import list_potentials

        print("\n".join(list_potentials()))
        return 0
    from ase import units
    from ase.io import write

    from . import workflows
    from .potential import load_potential

    if args.command in ("finetune", "train"):
        from . import cli_train

        cli_train.run(args)
        return 0
    if args.command == "export-lammps-mliap":
        from .lammps.mliap import export

        path = export(args.potential, args.out, dtype=args.dtype, device=args.device)
        print(f"wrote {path}; in LAMMPS: pair_style mliap unified {path} 0, then pair_coeff * * <elements>")
        return 0
    if args.command == "info":
        potential = load_potential(args.name, backend="e3nn")
        meta = {k: potential.config[k] for k in ("name", "description", "cutoff", "source") if k in potential.config}
        meta["n_elements"] = len(potential.atomic_numbers)
        print(json.dumps(meta, indent=1))
        card = potential.path / "card.md"
        if card.is_file():
            print(card.read_text())
        return 0

    frames = _read(args.structure, args.frame)
    for frame in frames:
        _check_structure(args, frame)
    stem = Path(args.structure).stem or "structure"
    if len(frames) > 1 and args.command != "single":
        raise UserError(
            f"{args.structure!r} holds {len(frames)} structures and {args.command} takes one; "
            "pick it with --frame (0 for the first, -1 for the last)"
        )
    out = _prepare_out(args, stem)
    atoms = frames[0]
    progress = not args.quiet
    status = 0
    if args.command == "single":
        from ase.calculators.singlepoint import SinglePointCalculator

        calc = _calculator(args, "float32")
        results = []
        # every frame in batched graphs (one model call per batch, not per frame)
        for atoms, res in zip(frames, calc.calculate_many(frames)):
            atoms.calc = SinglePointCalculator(atoms, **{k: res[k] for k in ("energy", "forces", "stress") if k in res})
            row = {"energy_eV": float(res["energy"]), "n_atoms": len(atoms)}
            row["max_force_eV_per_A"] = float(np.linalg.norm(res["forces"], axis=1).max()) if len(atoms) else 0.0
            if "stress" in res:
                row["stress_GPa_voigt_xx_yy_zz_yz_xz_xy"] = (res["stress"] / units.GPa).tolist()
            results.append(row)
        summary = results[0] if len(frames) == 1 else {"n_frames": len(frames), "frames": results}
        write(out / f"{stem}_single.extxyz", frames)
    elif args.command == "relax":
        # the cell relaxes only for a crystal: a molecule has none, a slab's vacuum must stay
        crystal = bool(atoms.pbc.all()) and atoms.cell.rank == 3
        result = workflows.relax(atoms, _calculator(args, "float32"), fmax=args.fmax,
                                 relax_cell=crystal and not args.fixed_cell, max_steps=args.steps,
                                 trajectory=str(out / f"{stem}_relax.traj"), progress=progress)  # fmt: skip
        write(out / f"{stem}_relaxed.extxyz", result.atoms)
        summary = {"energy_eV": result.energy_ev, "max_force_eV_per_A": result.max_force_ev_per_a,
                   "max_stress_GPa": result.max_stress_gpa, "steps": result.n_steps,
                   "converged": result.converged, "cell_relaxed": crystal and not args.fixed_cell}  # fmt: skip
        if result.atoms.cell.rank == 3:
            summary["volume_A3"] = result.atoms.get_volume()
        if args.plot:
            result.plot(str(out / f"{stem}_relax.png"))
    elif args.command == "md":
        result = workflows.run_md(atoms, _calculator(args, "float32"), ensemble=args.ensemble,
                                  temperature_k=args.temperature, timestep_fs=args.timestep,
                                  steps=args.steps, pressure_gpa=args.pressure,
                                  trajectory=str(out / f"{stem}_md.traj"), progress=progress)  # fmt: skip
        logged = len(result.time_fs) > 0
        summary = {"ensemble": args.ensemble, "steps": args.steps, "steps_done": result.steps_done,
                   "interrupted": result.interrupted, "timestep_fs": args.timestep,
                   "mean_temperature_K": float(result.temperature_k.mean()) if logged else None,
                   "final_total_energy_eV": float(result.total_energy_ev[-1]) if logged else None}  # fmt: skip
        if args.plot and logged:
            result.plot(str(out / f"{stem}_md.png"))
        if result.interrupted:
            print(f"facet-calc: interrupted after {result.steps_done} of {args.steps} steps; "
                  f"the summary in {out / 'summary.json'} covers them", file=sys.stderr)  # fmt: skip
            status = 130
    elif args.command == "phonons":
        result = workflows.phonons(atoms, _calculator(args, "float64"), supercell=tuple(args.supercell),
                                   progress=progress)  # fmt: skip
        summary = {"gamma_frequencies_THz": result.gamma_frequencies_thz.tolist(),
                   "min_frequency_THz": result.min_frequency_thz,
                   "imaginary_modes": result.has_imaginary_modes()}  # fmt: skip
        result.phonopy.save(str(out / f"{stem}_phonopy_params.yaml"))
        write(out / f"{stem}_primitive.extxyz", result.primitive)
        tables = result.write_tables(str(out / stem))
        at_300 = int(np.argmin(np.abs(result.temperatures_k - 300.0)))
        summary["n_atoms_primitive"] = len(result.primitive)
        summary["free_energy_eV_per_primitive_cell_at_300K"] = float(result.free_energy_ev[at_300])
        summary["entropy_eV_per_K_per_primitive_cell_at_300K"] = float(result.entropy_ev_per_k[at_300])
        summary["heat_capacity_eV_per_K_per_primitive_cell_at_300K"] = float(result.heat_capacity_ev_per_k[at_300])
        summary["tables"] = [Path(t).name for t in tables]
        if args.plot:
            result.plot(str(out / f"{stem}_phonons.png"))
    elif args.command == "eos":
        result = workflows.eos(atoms, _calculator(args, "float64"), max_strain=args.max_strain, progress=progress)
        summary = {"V0_A3": result.v0_a3, "V0_per_atom_A3": result.v0_per_atom_a3, "E0_eV": result.e0_ev,
                   "B0_GPa": result.b0_gpa, "eos": result.eos_name}  # fmt: skip
        at_v0 = atoms.copy()  # the structure scaled to the fitted equilibrium volume
        at_v0.set_cell(atoms.cell.array * np.cbrt(result.v0_a3 / atoms.get_volume()), scale_atoms=True)
        write(out / f"{stem}_eos_v0.extxyz", at_v0)
        if args.plot:
            result.plot(str(out / f"{stem}_eos.png"))
    elif args.command == "elastic":
        result = workflows.elastic_constants(atoms, _calculator(args, "float64"), max_strain=args.max_strain,
                                             progress=progress)  # fmt: skip
        summary = {"C_GPa_voigt": np.round(result.c_gpa, 3).tolist(),
                   "C_standard_error_GPa_voigt": np.round(result.c_err_gpa, 3).tolist(),
                   "bulk_modulus_GPa": result.bulk_modulus_gpa,
                   "shear_modulus_GPa": result.shear_modulus_gpa}  # fmt: skip
        write(out / f"{stem}_elastic.extxyz", atoms)  # the reference state the strains were applied to
    else:  # pragma: no cover - argparse rejects unknown commands
        raise UserError(f"unknown command {args.command!r}")
    _write_summary(out, summary)
    return status


#: libgomp's spin count for ``facet-calc``: idle OpenMP threads spin this many times, then sleep
#: (``benchmarks/contention.py --competitors 3``, 216-atom Si on 2 cores, two threads: 70 ms/step
#: idle and 227 ms beside three busy processes, against libgomp's default 65 / 667 ms and
#: OMP_WAIT_POLICY=passive 101 / 199 ms)
OPENMP_SPIN_COUNT = "10000"


def short_openmp_spin(environ: dict, torch_loaded: bool) -> None:
    """Set ``GOMP_SPINCOUNT`` in ``environ`` for a process that has not loaded torch (so not
    libgomp, which reads it once) and whose user chose no OpenMP wait policy: a short spin keeps
    idle-machine speed and stops a busy machine's cores being burnt by waiting threads."""
    if not torch_loaded and "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT


def main(argv=None) -> int:
    short_openmp_spin(os.environ, "torch" in sys.modules)  # (README: several processes side by side)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UserError, ValueError, OSError, MemoryError) as err:  # OSError: files, folders, permissions
        message = " ".join(str(err).split())  # one line, whatever the exception put in it
        print(f"facet-calc: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facet-calc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
