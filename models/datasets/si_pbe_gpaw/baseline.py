"""A potential's errors against the GPAW-PBE Si dataset: the "before fine-tuning" baseline.

Run from the repository root, after generate.py has written the data::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python models/datasets/si_pbe_gpaw/baseline.py \
        --potential 7net-0-spline --json models/datasets/si_pbe_gpaw/baseline_7net-0-spline.json

What it measures, with the same procedures as generate.py used for GPAW:

- the Gamma optical phonon frequency (THz) at GPAW's a0 (phonopy, 8-atom cubic cell as unit cell
  and supercell, +-0.01 A), next to GPAW's value from reference.json;
- the potential's own a0 and B0 from the same 7-point EOS scan as GPAW's (same cells);
- energy, force and stress MAE and RMSE on the valid and test sets. Energies are compared after
  fitting one per-atom offset c on the training set (least squares of E_ref - E_pred = c N),
  since two codes differ by a constant per atom. The test set is also reported without and
  with only its wider distributions (config types ending in _wide).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase.io import read
from ase.units import GPa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import generate  # noqa: E402  (the same structures and phonopy procedure as the reference)


def predict(frames, calc):
    e, f, s = [], [], []
    for fr in frames:
        atoms = fr.copy()
        atoms.calc = calc
        e.append(atoms.get_potential_energy())
        f.append(atoms.get_forces())
        s.append(atoms.get_stress(voigt=True))
    return np.array(e), f, np.array(s)


def metrics(frames, calc, offset_per_atom: float) -> dict:
    e_pred, f_pred, s_pred = predict(frames, calc)
    n = np.array([len(fr) for fr in frames])
    e_ref = np.array([fr.info["REF_energy"] for fr in frames])
    de = (e_pred + offset_per_atom * n - e_ref) / n
    df = np.concatenate([(fp - fr.arrays["REF_forces"]).ravel() for fp, fr in zip(f_pred, frames)])
    ds = (s_pred - np.array([fr.info["REF_stress"] for fr in frames])).ravel() / GPa
    return {
        "n_configs": len(frames),
        "energy_mae_meV_per_atom": 1000 * float(np.mean(np.abs(de))),
        "energy_rmse_meV_per_atom": 1000 * float(np.sqrt(np.mean(de**2))),
        "force_mae_meV_per_A": 1000 * float(np.mean(np.abs(df))),
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(df**2))),
        "stress_mae_GPa": float(np.mean(np.abs(ds))),
        "stress_rmse_GPa": float(np.sqrt(np.mean(ds**2))),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--potential", default="7net-0-spline", help="name or folder for FacetCalculator")
    ap.add_argument("--data", type=Path, default=HERE, help="folder with the extxyz files and reference.json")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    from facet_calc import FacetCalculator

    calc = FacetCalculator(args.potential, dtype="float64")
    ref = json.loads((args.data / "reference.json").read_text())
    a0 = ref["eos"]["a0_used_angstrom"]
    out = {"potential": args.potential, "dtype": "float64", "gpaw_a0_angstrom": a0}

    # Gamma phonons at GPAW's a0, same displaced cells as phonon.extxyz.
    cells = generate.phonon_configs(a0)
    stored = read(args.data / "phonon.extxyz", ":")
    for c, s in zip(cells, stored):
        if not np.allclose(c.positions, s.positions, atol=1e-6):
            raise RuntimeError("phonon.extxyz does not hold the cells phonon_configs(a0) builds")
    forces = [predict([c], calc)[1][0] for c in cells]
    ph = generate.gamma_phonons(a0, forces)
    out["gamma_optical_thz"] = ph["gamma_optical_thz"]
    out["gamma_optical_thz_gpaw"] = ref["phonon"]["gamma_optical_thz"]
    out["cubic8_gamma_thz"] = ph["cubic8_gamma_thz"]

    # The potential's own EOS on the same cells as GPAW's scan.
    eos_frames = read(args.data / "eos.extxyz", ":")
    e_eos, _, s_eos = predict(eos_frames, calc)
    fake = []
    for fr, e, s in zip(eos_frames, e_eos, s_eos):
        g = fr.copy()
        g.info["REF_energy"], g.info["REF_stress"] = float(e), s
        fake.append(g)
    eos = generate.fit_eos(fake)
    out["own_a0_angstrom"] = eos["a0_angstrom"]
    out["own_B0_GPa"] = eos["B0_GPa"]
    out["gpaw_B0_GPa"] = ref["eos"]["B0_GPa"]

    # Per-atom offset on train, then errors on valid and test.
    train = read(args.data / "train.extxyz", ":")
    e_pred, _, _ = predict(train, calc)
    n = np.array([len(fr) for fr in train])
    de = np.array([fr.info["REF_energy"] for fr in train]) - e_pred
    offset = float(np.dot(n, de) / np.dot(n, n))
    out["energy_offset_eV_per_atom"] = offset
    out["train"] = metrics(train, calc, offset)
    for stage in ("valid", "test"):
        path = args.data / f"{stage}.extxyz"
        if path.exists():
            frames = read(path, ":")
            out[stage] = metrics(frames, calc, offset)
            if stage == "test":
                # The *_wide types lie outside the training distribution; report both halves.
                same = [fr for fr in frames if not fr.info["config_type"].endswith("_wide")]
                out["test_in_distribution"] = metrics(same, calc, offset)
                out["test_wide_only"] = metrics([fr for fr in frames if fr not in same], calc, offset)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
