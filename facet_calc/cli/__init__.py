"""The ``facet-calc`` command: list and inspect potentials, run the common workflows on a file.

    facet-calc list
    facet-calc info 7net-0-spline
    facet-calc single POSCAR
    facet-calc relax structure.cif --fmax 0.01 --out results/
    facet-calc md structure.xyz --ensemble nvt --temperature 300 --steps 1000 --plot
    facet-calc phonons POSCAR --supercell 2 2 2 --plot
    facet-calc eos POSCAR --plot
    facet-calc elastic POSCAR
    facet-calc finetune 7net-0-spline --train dft.extxyz --out runs/ft --epochs 30 --lr 1e-4
    facet-calc train config.yaml
    facet-calc distill 7net-0-spline --structures si64.extxyz --out runs/si --minutes 30 --temperatures 300 1000
    facet-calc convert checkpoint_best.pth --name my-7net

Every run writes its structures (extxyz, with their energy, forces and stress, or ASE
trajectories) and ``summary.json`` (units in the key names) into ``--out`` (default: the
current folder), PNG plots with ``--plot``; existing results there are kept unless
``--overwrite`` is given. A file with several structures is used whole by ``single`` and refused
by the other commands unless ``--frame`` picks one. Errors in files or options are reported in
one sentence, with exit status 2 (values such as ``--temperature inf`` are refused by the
parser); Ctrl-C stops with status 130 (``md`` and ``relax`` first write a summary of the steps
done, marked ``"interrupted": true``, and ``relax`` the last structure).

Modules: :mod:`.parser` (the arguments), :mod:`.files` (reading and writing), one module per
kind of command (:mod:`.potentials`, :mod:`.jobs`, :mod:`.training`); none imports torch
before a command needs it.
"""

from __future__ import annotations

import os
import sys

from . import jobs, potentials, training
from .files import UserError
from .parser import build_parser

__all__ = ["COMMANDS", "OPENMP_SPIN_COUNT", "UserError", "build_parser", "main", "run",
           "short_openmp_spin"]  # fmt: skip

#: command name -> the function that runs it (takes the parsed arguments, returns the exit status)
COMMANDS = {
    "list": potentials.list_names,
    "info": potentials.info,
    "export-lammps-mliap": potentials.export_lammps_mliap,
    "convert": potentials.convert,
    "single": jobs.single,
    "relax": jobs.relax,
    "md": jobs.md,
    "phonons": jobs.phonons,
    "eos": jobs.eos,
    "elastic": jobs.elastic,
    "finetune": training.finetune,
    "train": training.train,
    "distill": training.distill,
}


def run(args) -> int:
    """Run the command; returns the exit status (0, or 130 for an interrupted MD run)."""
    return COMMANDS[args.command](args)


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
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UserError, ValueError, OSError, MemoryError) as err:  # OSError: files, folders, permissions
        message = " ".join(str(err).split())  # one line, whatever the exception put in it
        print(f"facet-calc: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facet-calc: interrupted", file=sys.stderr)
        return 130
