"""The structure commands: ``single``, ``relax``, ``md``, ``phonons``, ``eos``, ``elastic``.
Each reads one structure file (``single``: every frame), runs a workflow, writes its files
and ``summary.json`` (units in the key names) into ``--out`` and returns the exit status."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..options import JOB_DTYPES
from .files import UserError, prepare_out, read_structures, with_results, write_structures, write_summary

#: jobs whose physics needs a crystal: a cell periodic in all three directions
_NEEDS_CRYSTAL = {"phonons": "phonons need", "eos": "an equation of state needs", "elastic": "elastic constants need"}


def _is_crystal(atoms) -> bool:
    return bool(atoms.pbc.all()) and atoms.cell.rank == 3


def _check_structure(args, atoms) -> None:
    """Refuse up front, in one sentence, a job the structure's periodicity does not allow."""
    kind = "a molecule" if not atoms.pbc.any() else f"periodic only along {np.nonzero(atoms.pbc)[0].tolist()}"
    if args.command in _NEEDS_CRYSTAL and not _is_crystal(atoms):
        raise UserError(
            f"{_NEEDS_CRYSTAL[args.command]} a crystal periodic in three directions, and this structure is {kind}"
        )
    if args.command == "md" and args.ensemble == "npt" and not _is_crystal(atoms):
        raise UserError(
            f"NPT needs a crystal periodic in three directions (a volume to control); this structure is {kind}: "
            "use nve or nvt"
        )


@dataclass
class Job:
    """A structure command's input (``frames`` read from ``args.structure``) and output: the
    folder ``out`` and the ``stem`` its file names start with (the input's name)."""

    args: argparse.Namespace
    frames: list
    out: Path
    stem: str

    @classmethod
    def start(cls, args, files: list[str], plot: str | None = None) -> Job:
        """Read and check the structures, and prepare ``--out`` for ``files`` (and ``plot``
        with ``--plot``): names after the stem, ``summary.json`` always."""
        frames = read_structures(args.structure, args.frame)
        for frame in frames:
            _check_structure(args, frame)
        if len(frames) > 1 and args.command != "single":
            raise UserError(
                f"{args.structure!r} holds {len(frames)} structures and {args.command} takes one; "
                "pick it with --frame (0 for the first, -1 for the last)"
            )
        stem = Path(args.structure).stem or "structure"
        names = files + ([plot] if plot and args.plot else [])
        out = prepare_out(Path(args.out), ["summary.json", *(f"{stem}_{n}" for n in names)], args.overwrite)
        return cls(args, frames, out, stem)

    @property
    def atoms(self):
        return self.frames[0]

    @property
    def progress(self) -> bool:
        return not self.args.quiet

    def path(self, name: str) -> Path:
        return self.out / f"{self.stem}_{name}"

    def calculator(self):
        """The FacetCalculator the options ask for, in the job's default dtype unless --dtype."""
        from ..calculator import FacetCalculator
        from ..potential import DEFAULT_POTENTIAL, load_potential

        args = self.args
        name, dtype = args.potential or DEFAULT_POTENTIAL, args.dtype or JOB_DTYPES[args.command]
        dispersion = "d3" if args.d3 else None
        if args.no_verify:
            potential = load_potential(name, dtype=dtype, verify=False, head=args.head)
            return FacetCalculator(potential, device=args.device, dispersion=dispersion)
        return FacetCalculator(name, device=args.device, dtype=dtype, head=args.head, dispersion=dispersion)

    def finish(self, summary: dict, status: int = 0) -> int:
        write_summary(self.out, summary)
        return status


def single(args) -> int:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import GPa

    job = Job.start(args, ["single.extxyz"])
    rows = []
    # every frame in batched graphs (one model call per batch, not per frame)
    for atoms, res in zip(job.frames, job.calculator().calculate_many(job.frames)):
        atoms.calc = SinglePointCalculator(atoms, **{k: res[k] for k in ("energy", "forces", "stress") if k in res})
        row = {"energy_eV": float(res["energy"]), "n_atoms": len(atoms)}
        row["max_force_eV_per_A"] = float(np.linalg.norm(res["forces"], axis=1).max()) if len(atoms) else 0.0
        if "stress" in res:
            row["stress_GPa_voigt_xx_yy_zz_yz_xz_xy"] = (res["stress"] / GPa).tolist()
        rows.append(row)
    write_structures(job.path("single.extxyz"), job.frames)
    return job.finish(rows[0] if len(rows) == 1 else {"n_frames": len(rows), "frames": rows})


def relax(args) -> int:
    from ..workflows import relax as run_relax

    job = Job.start(args, ["relax.traj", "relaxed.extxyz"], plot="relax.png")
    # the cell relaxes only for a crystal (the workflow also keeps a slab's cell: see cell_relaxed)
    relax_cell = _is_crystal(job.atoms) and not args.fixed_cell
    calc = job.calculator()
    result = run_relax(job.atoms, calc, fmax=args.fmax, relax_cell=relax_cell, max_steps=args.steps,
                       trajectory=str(job.path("relax.traj")), progress=job.progress)  # fmt: skip
    write_structures(job.path("relaxed.extxyz"), with_results(result.atoms, calc))
    summary = {"energy_eV": result.energy_ev, "max_force_eV_per_A": result.max_force_ev_per_a,
               "max_stress_GPa": result.max_stress_gpa, "steps": result.n_steps,
               "converged": result.converged, "cell_relaxed": result.cell_relaxed,
               "interrupted": result.interrupted}  # fmt: skip
    if result.atoms.cell.rank == 3:
        summary["volume_A3"] = result.atoms.get_volume()
    if args.plot and len(result.energies_ev):
        result.plot(str(job.path("relax.png")))
    if not result.interrupted:
        return job.finish(summary)
    print(f"facet-calc: interrupted after {result.n_steps} steps; {job.path('relaxed.extxyz')} holds the last "
          f"structure and {job.out / 'summary.json'} its summary (not converged)", file=sys.stderr)  # fmt: skip
    return job.finish(summary, status=130)


def md(args) -> int:
    from ..workflows import run_md

    job = Job.start(args, ["md.traj"], plot="md.png")
    result = run_md(job.atoms, job.calculator(), ensemble=args.ensemble, temperature_k=args.temperature,
                    timestep_fs=args.timestep, steps=args.steps, pressure_gpa=args.pressure,
                    trajectory=str(job.path("md.traj")), progress=job.progress)  # fmt: skip
    logged = len(result.time_fs) > 0
    summary = {"ensemble": args.ensemble, "steps": args.steps, "steps_done": result.steps_done,
               "interrupted": result.interrupted, "timestep_fs": args.timestep,
               "mean_temperature_K": float(result.temperature_k.mean()) if logged else None,
               "final_total_energy_eV": float(result.total_energy_ev[-1]) if logged else None}  # fmt: skip
    if args.plot and logged:
        result.plot(str(job.path("md.png")))
    if not result.interrupted:
        return job.finish(summary)
    print(f"facet-calc: interrupted after {result.steps_done} of {args.steps} steps; "
          f"the summary in {job.out / 'summary.json'} covers them", file=sys.stderr)  # fmt: skip
    return job.finish(summary, status=130)


def phonons(args) -> int:
    from ..workflows import phonons as run_phonons

    job = Job.start(args, ["phonopy_params.yaml", "primitive.extxyz"], plot="phonons.png")
    calc = job.calculator()
    result = run_phonons(job.atoms, calc, supercell=tuple(args.supercell), progress=job.progress)
    result.phonopy.save(str(job.path("phonopy_params.yaml")))
    write_structures(job.path("primitive.extxyz"), with_results(result.primitive, calc))
    tables = result.write_tables(str(job.out / job.stem))
    at_300 = int(np.argmin(np.abs(result.temperatures_k - 300.0)))
    summary = {"gamma_frequencies_THz": result.gamma_frequencies_thz.tolist(),
               "min_frequency_THz": result.min_frequency_thz, "imaginary_modes": result.has_imaginary_modes(),
               "n_atoms_primitive": len(result.primitive),
               "free_energy_eV_per_primitive_cell_at_300K": float(result.free_energy_ev[at_300]),
               "entropy_eV_per_K_per_primitive_cell_at_300K": float(result.entropy_ev_per_k[at_300]),
               "heat_capacity_eV_per_K_per_primitive_cell_at_300K": float(result.heat_capacity_ev_per_k[at_300]),
               "tables": [Path(t).name for t in tables]}  # fmt: skip
    if args.plot:
        result.plot(str(job.path("phonons.png")))
    return job.finish(summary)


def eos(args) -> int:
    from ..workflows import eos as run_eos

    job = Job.start(args, ["eos_v0.extxyz"], plot="eos.png")
    atoms, calc = job.atoms, job.calculator()
    result = run_eos(atoms, calc, max_strain=args.max_strain, progress=job.progress)
    summary = {"V0_A3": result.v0_a3, "V0_per_atom_A3": result.v0_per_atom_a3, "E0_eV": result.e0_ev,
               "B0_GPa": result.b0_gpa, "eos": result.eos_name}  # fmt: skip
    at_v0 = atoms.copy()  # the structure scaled to the fitted equilibrium volume
    at_v0.set_cell(atoms.cell.array * np.cbrt(result.v0_a3 / atoms.get_volume()), scale_atoms=True)
    write_structures(job.path("eos_v0.extxyz"), with_results(at_v0, calc))
    if args.plot:
        result.plot(str(job.path("eos.png")))
    return job.finish(summary)


def elastic(args) -> int:
    from ..workflows import elastic_constants

    job = Job.start(args, ["elastic.extxyz"])
    calc = job.calculator()
    result = elastic_constants(job.atoms, calc, max_strain=args.max_strain, progress=job.progress)
    summary = {"C_GPa_voigt": np.round(result.c_gpa, 3).tolist(),
               "C_standard_error_GPa_voigt": np.round(result.c_err_gpa, 3).tolist(),
               "bulk_modulus_GPa": result.bulk_modulus_gpa, "shear_modulus_GPa": result.shear_modulus_gpa}  # fmt: skip
    # the reference state the strains were applied to, with its own results
    write_structures(job.path("elastic.extxyz"), with_results(job.atoms, calc))
    return job.finish(summary)
