"""Active learning for the facet-s-7net0 distillation: pick the pool configurations where the
student disagrees most with the teacher.

The pool is teacher-labelled already (``generate_data.py --stages pool`` writes
``data/pool.extxyz``: the training generators with new seeds), so a round costs only student
evaluations::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python models/facet-s-7net0/active_learning.py \\
        --student path/to/student_folder --pool models/facet-s-7net0/data/pool.extxyz \\
        --k 300 --out models/facet-s-7net0/data/al_round1.extxyz

and the selected configurations are appended to the training set for the next round.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from ase.io import read, write


def load_student(student, dtype: str = "float64"):
    """A FacetCalculator for ``student``: a shipped name, a potential folder (loaded with
    ``verify=False`` only when no index lists it: a freshly trained student has none), or a loaded
    :class:`facet_calc.potential.Potential`."""
    from facet_calc import FacetCalculator, load_potential
    from facet_calc.potential import Potential

    if isinstance(student, Potential):
        return FacetCalculator(student)
    path = Path(student).expanduser()
    if path.is_dir():
        try:
            pot = load_potential(path, dtype=dtype)
        except ValueError as err:  # only "no index lists it"; a corrupted file stays an error
            if "is not listed in" not in str(err):
                raise
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pot = load_potential(path, dtype=dtype, verify=False)
        return FacetCalculator(pot)
    return FacetCalculator(str(student), dtype=dtype)


def force_errors(calc, frames) -> tuple[np.ndarray, np.ndarray]:
    """Per configuration: RMS and max over atoms of |F_student - F_teacher| (eV/A)."""
    rms, mx = [], []
    for fr in frames:
        atoms = fr.copy()
        atoms.calc = calc
        diff = atoms.get_forces() - fr.arrays["REF_forces"]
        norm = np.linalg.norm(diff, axis=1)
        rms.append(float(np.sqrt(np.mean(norm**2))))
        mx.append(float(np.max(norm)))
    return np.array(rms), np.array(mx)


def select_hardest(student_potential_path_or_name, pool_extxyz, k: int, out, metric: str = "rms", exclude_ids=()):
    """Evaluate the student on the teacher-labelled pool and write the ``k`` configurations with
    the largest force error (``metric``: ``"rms"`` over atoms, the default, or ``"max"``) to
    ``out`` (extxyz, labels untouched, plus ``info["AL_force_rms"]`` and ``info["AL_force_max"]``).
    ``exclude_ids``: config_ids already selected in earlier rounds. Ties are broken by config_id,
    so the selection is deterministic. Returns the selected frames, hardest first."""
    if metric not in ("rms", "max"):
        raise ValueError(f"metric must be 'rms' or 'max', not {metric!r}")
    calc = load_student(student_potential_path_or_name)
    excluded = set(exclude_ids)
    frames = [fr for fr in read(pool_extxyz, ":") if fr.info["config_id"] not in excluded]
    rms, mx = force_errors(calc, frames)
    score = rms if metric == "rms" else mx
    order = sorted(range(len(frames)), key=lambda i: (-score[i], frames[i].info["config_id"]))[:k]
    chosen = []
    for i in order:
        fr = frames[i]
        fr.info["AL_force_rms"] = float(rms[i])
        fr.info["AL_force_max"] = float(mx[i])
        chosen.append(fr)
    write(out, chosen, format="extxyz")
    return chosen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="write the k pool configurations the student gets most wrong")
    parser.add_argument("--student", required=True, help="potential folder or shipped name")
    parser.add_argument("--pool", default=str(Path(__file__).resolve().parent / "data" / "pool.extxyz"))
    parser.add_argument("--k", type=int, default=300)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metric", choices=("rms", "max"), default="rms")
    parser.add_argument("--exclude", nargs="*", default=[], help="extxyz files whose config_ids to skip")
    args = parser.parse_args(argv)
    excluded = [fr.info["config_id"] for path in args.exclude for fr in read(path, ":")]
    chosen = select_hardest(args.student, args.pool, args.k, args.out, args.metric, excluded)
    if chosen:
        print(
            f"{len(chosen)} configurations -> {args.out}; force RMS error from "
            f"{chosen[0].info['AL_force_rms']:.3f} down to {chosen[-1].info['AL_force_rms']:.3f} eV/A"
        )


if __name__ == "__main__":
    main()
