"""Generate a small plane-wave PBE dataset for diamond silicon with GPAW, with full provenance.

Run from the repository root (one GPAW process, one core)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python models/datasets/si_pbe_gpaw/generate.py \
        --stages eos,phonon,train,valid,test

Stages, in the order they are meant to run (later ones need the EOS):

- ``convergence``: one rattled and strained 8-atom cell at a series of plane-wave cutoffs and
  k-point grids; writes ``convergence.json`` (errors against the most converged settings).
- ``eos``: 7 ideal 8-atom cubic cells around a guess lattice constant; Birch-Murnaghan fit
  gives GPAW-PBE's a0 and B0 (``eos.extxyz``, ``reference.json``).
- ``phonon``: the displaced cells phonopy needs for the Gamma phonons of the 8-atom cell at a0
  (supercell = unit cell, 0.01 A, plus and minus); the Gamma optical frequency goes into
  ``reference.json`` (``phonon.extxyz``).
- ``train``, ``valid``, ``test``: rattled, strained, strained-and-rattled 8-atom cells and a few
  7-atom vacancy cells around a0, each stage with its own seeds; test also holds slightly wider
  distributions (``<stage>.extxyz``).

Every frame carries ``REF_energy`` (eV, the force-consistent free energy), ``REF_forces`` (eV/A,
per atom) and ``REF_stress`` (eV/A^3, Voigt order xx yy zz yz xz xy, ASE sign: tensile positive),
plus ``config_type``, ``config_id``, the seed and the generation parameters, and
``settings_sha256``: the hash of the ``dft`` part of the settings recorded in ``reference.json``.

Deterministic: every configuration is built from its own seed ``(stage seed, index)``, so it does
not depend on which configurations ran before. Resumable: frames are appended one at a time as
each single point finishes; a rerun skips the configurations already in the file (after checking
that the stored structure is the one the seed regenerates and the settings hash matches).
"""

from __future__ import annotations

import os

# One core per GPAW process: BLAS and OpenMP threads must be pinned before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.units import GPa  # noqa: E402

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# DFT settings. Changing any of these changes settings_sha256, and a resumed run refuses to mix.
# ---------------------------------------------------------------------------------------------
ECUT_EV = 400.0
KPTS = (4, 4, 4)
GPAW_PARAMETERS = {
    "mode": {"name": "pw", "ecut": ECUT_EV},
    "xc": "PBE",
    "kpts": {"size": list(KPTS), "gamma": False},  # Monkhorst-Pack (shifted for even sizes)
    "occupations": {"name": "fermi-dirac", "width": 0.01},  # eV
    "setups": "paw",  # the standard PAW setup Si.PBE from gpaw-data
    "spinpol": False,
    "convergence": {"energy": 1e-6, "density": 1e-6, "eigenstates": 1e-8, "forces": 1e-4},
    "parallel": {"domain": 1, "band": 1},
}

# Structure generation
A_GUESS = 5.47  # A, centre of the EOS scan (PBE Si is about 5.47 A)
EOS_STRAINS = np.linspace(-0.02, 0.02, 7)  # relative change of the lattice constant
PHONON_DISTANCE = 0.01  # A
STAGE_SEEDS = {"train": 1001, "valid": 2002, "test": 3003, "convergence": 0}

# (config_type, count, parameters). Strain: a symmetric tensor whose six independent components
# are uniform in [-max_strain, max_strain] (normal and shear alike), applied as
# cell' = cell (1 + eps) with the atoms scaled along; rattle: Gaussian displacement of each
# Cartesian component with standard deviation sigma drawn uniformly from rattle_range.
PLANS = {
    "train": [
        ("rattle", 12, {"rattle_range": (0.02, 0.10), "max_strain": 0.0}),
        ("strain", 6, {"rattle_range": (0.0, 0.0), "max_strain": 0.03}),
        ("strain_rattle", 14, {"rattle_range": (0.02, 0.10), "max_strain": 0.03}),
        ("vacancy", 2, {"rattle_range": (0.02, 0.08), "max_strain": 0.0}),
    ],
    "valid": [
        ("rattle", 2, {"rattle_range": (0.02, 0.10), "max_strain": 0.0}),
        ("strain", 2, {"rattle_range": (0.0, 0.0), "max_strain": 0.03}),
        ("strain_rattle", 3, {"rattle_range": (0.02, 0.10), "max_strain": 0.03}),
        ("vacancy", 1, {"rattle_range": (0.02, 0.08), "max_strain": 0.0}),
    ],
    "test": [
        ("rattle", 2, {"rattle_range": (0.02, 0.10), "max_strain": 0.0}),
        ("rattle_wide", 2, {"rattle_range": (0.10, 0.15), "max_strain": 0.0}),
        ("strain", 2, {"rattle_range": (0.0, 0.0), "max_strain": 0.03}),
        ("strain_wide", 1, {"rattle_range": (0.0, 0.0), "max_strain": 0.045}),
        ("strain_rattle", 3, {"rattle_range": (0.02, 0.10), "max_strain": 0.03}),
        ("strain_rattle_wide", 1, {"rattle_range": (0.10, 0.15), "max_strain": 0.045}),
        ("vacancy", 1, {"rattle_range": (0.02, 0.08), "max_strain": 0.0}),
    ],
}

# Convergence check: (ecut, k) pairs; the reference is the last cutoff / largest grid.
CONVERGENCE_CUTOFFS = [300.0, 400.0, 500.0]
CONVERGENCE_K_FOR_CUTOFFS = 3
CONVERGENCE_KGRIDS = [2, 3, 4, 5]
CONVERGENCE_ECUT_FOR_KGRIDS = ECUT_EV


def settings_block() -> dict:
    """Every setting behind the numbers, with versions. Only the "dft" part is hashed into
    settings_sha256 (the structures are checked by regenerating them from their seeds instead)."""
    return {
        "dft": {
            "code": "GPAW",
            "gpaw_parameters": GPAW_PARAMETERS,
            "energy_reported": "free energy (force consistent): atoms.get_potential_energy(force_consistent=True)",
            "stress_convention": "eV/A^3, Voigt xx yy zz yz xz xy, ASE sign (tensile positive)",
        },
        "structure": {
            "a_guess": A_GUESS,
            "eos_strains": EOS_STRAINS.tolist(),
            "phonon_distance": PHONON_DISTANCE,
            "stage_seeds": STAGE_SEEDS,
            "plans": {
                k: [[t, n, {kk: list(v) if isinstance(v, tuple) else v for kk, v in p.items()}] for t, n, p in plan]
                for k, plan in PLANS.items()
            },
            "rng": "numpy.random.default_rng([stage_seed, index])",
        },
        "versions": versions(),
        "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def versions() -> dict:
    import ase
    import gpaw
    import phonopy
    import scipy

    try:
        import gpaw_data

        gpaw_data_version = getattr(gpaw_data, "__version__", None)
        if gpaw_data_version is None:
            from importlib.metadata import version

            gpaw_data_version = version("gpaw-data")
    except ImportError:
        gpaw_data_version = None
    return {
        "gpaw": gpaw.__version__,
        "gpaw_data": gpaw_data_version,
        "ase": ase.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "phonopy": phonopy.__version__,
        "python": platform.python_version(),
        "setup_Si_PBE": setup_provenance(),
    }


def setup_provenance() -> dict:
    """Path and sha256 of the PAW setup file GPAW will read for Si."""
    from gpaw import setup_paths

    for d in setup_paths:
        for name in ("Si.PBE.gz", "Si.PBE"):
            p = Path(d) / name
            if p.exists():
                return {"file": name, "directory": str(d), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    raise FileNotFoundError(
        f"No Si.PBE PAW setup in GPAW's setup paths {list(map(str, setup_paths))}; install gpaw-data "
        "(pip install gpaw-data) or set GPAW_SETUP_PATH to a folder holding Si.PBE.gz"
    )


def settings_hash(settings: dict) -> str:
    """First 16 hex digits of the sha256 of the DFT settings (canonical JSON)."""
    return hashlib.sha256(json.dumps(settings["dft"], sort_keys=True).encode()).hexdigest()[:16]


def calc_summary() -> str:
    p = GPAW_PARAMETERS
    k = "x".join(map(str, p["kpts"]["size"]))
    return f"GPAW PW({p['mode']['ecut']:g} eV) {p['xc']} k={k} MP FD({p['occupations']['width']:g} eV) paw"


# ---------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------
def ideal_cell(a: float) -> Atoms:
    """The 8-atom cubic diamond cell of lattice constant a (A)."""
    return bulk("Si", "diamond", a=a, cubic=True)


def random_strain(rng: np.random.Generator, max_strain: float) -> np.ndarray:
    """(3, 3) symmetric strain tensor, six independent components uniform in [-max, max]."""
    v = rng.uniform(-max_strain, max_strain, size=6)
    return np.array([[v[0], v[5], v[4]], [v[5], v[1], v[3]], [v[4], v[3], v[2]]])


def make_config(stage: str, index: int, config_type: str, params: dict, a0: float) -> Atoms:
    """Configuration `index` of `stage`, from its own seed; depends on nothing else."""
    rng = np.random.default_rng([STAGE_SEEDS[stage], index])
    atoms = ideal_cell(a0)
    info = {
        "config_type": config_type,
        "config_id": f"{stage}_{index:03d}",
        "seed": f"{STAGE_SEEDS[stage]},{index}",
        "a_ideal": a0,
    }
    if config_type == "vacancy":
        removed = int(rng.integers(len(atoms)))
        del atoms[removed]
        info["vacancy_removed_index"] = removed
    eps = random_strain(rng, params["max_strain"]) if params["max_strain"] > 0 else np.zeros((3, 3))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    lo, hi = params["rattle_range"]
    sigma = float(rng.uniform(lo, hi)) if hi > 0 else 0.0
    if sigma > 0:
        atoms.positions = atoms.positions + rng.normal(0.0, sigma, size=atoms.positions.shape)
    atoms.wrap()
    info["strain_voigt"] = np.array([eps[0, 0], eps[1, 1], eps[2, 2], eps[1, 2], eps[0, 2], eps[0, 1]])
    info["rattle_sigma"] = sigma
    atoms.info.update(info)
    return atoms


def stage_configs(stage: str, a0: float) -> list[Atoms]:
    configs, index = [], 0
    for config_type, count, params in PLANS[stage]:
        for _ in range(count):
            configs.append(make_config(stage, index, config_type, params, a0))
            index += 1
    return configs


def eos_configs() -> list[Atoms]:
    out = []
    for i, s in enumerate(EOS_STRAINS):
        atoms = ideal_cell(A_GUESS * (1.0 + s))
        atoms.info.update(
            {
                "config_type": "eos",
                "config_id": f"eos_{i:03d}",
                "seed": "none",
                "a_ideal": A_GUESS * (1.0 + s),
                "rattle_sigma": 0.0,
            }
        )
        out.append(atoms)
    return out


def phonopy_object(a0: float, primitive: bool):
    """phonopy with the 8-atom cubic cell as unit cell and supercell (identity).

    primitive=True: Gamma frequencies of the 2-atom fcc primitive cell (6 modes: 3 acoustic,
    3 optical); False: those of the 8-atom cell (24 modes, X-point modes folded in).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = ideal_cell(a0)
    cell = PhonopyAtoms(
        symbols=unit.get_chemical_symbols(), cell=unit.cell.array, scaled_positions=unit.get_scaled_positions()
    )
    pm = [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]] if primitive else "P"
    ph = Phonopy(cell, supercell_matrix=np.eye(3, dtype=int), primitive_matrix=pm)
    ph.generate_displacements(distance=PHONON_DISTANCE, is_plusminus=True)
    return ph


def phonon_configs(a0: float) -> list[Atoms]:
    ph = phonopy_object(a0, primitive=False)
    out = []
    for i, sc in enumerate(ph.supercells_with_displacements):
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        d = ph.dataset["first_atoms"][i]
        atoms.info.update(
            {
                "config_type": "phonon",
                "config_id": f"phonon_{i:03d}",
                "seed": "none",
                "a_ideal": a0,
                "rattle_sigma": 0.0,
                "displaced_atom": int(d["number"]),
                "displacement": np.asarray(d["displacement"], dtype=float),
            }
        )
        out.append(atoms)
    return out


def gamma_phonons(a0: float, forces: list[np.ndarray]) -> dict:
    """Gamma frequencies (THz) from the forces on phonon_configs(a0), in that order."""
    res = {}
    for primitive in (True, False):
        ph = phonopy_object(a0, primitive)
        ph.forces = np.array(forces)
        ph.produce_force_constants()
        ph.run_qpoints([[0.0, 0.0, 0.0]])
        f = np.sort(ph.qpoints.frequencies[0])
        res["primitive" if primitive else "cubic8"] = f
    prim = res["primitive"]
    return {
        "gamma_optical_thz": float(np.mean(prim[3:])),
        "gamma_optical_spread_thz": float(prim[3:].max() - prim[3:].min()),
        "gamma_acoustic_thz": prim[:3].tolist(),
        "cubic8_gamma_thz": res["cubic8"].tolist(),
        "procedure": (
            "phonopy: unit cell = 8-atom cubic diamond cell at a0, supercell_matrix = identity, "
            f"generate_displacements(distance={PHONON_DISTANCE}, is_plusminus=True), "
            "produce_force_constants() (no extra symmetrisation); Gamma optical = mean of the three "
            "optical frequencies of the fcc primitive cell (primitive_matrix = FCC) at q = 0"
        ),
    }


# ---------------------------------------------------------------------------------------------
# Single points and incremental files
# ---------------------------------------------------------------------------------------------
def single_point(atoms: Atoms, txt: Path) -> tuple[Atoms, dict]:
    """GPAW energy, forces, stress on `atoms`; returns a copy with REF_* attached and timing info."""
    from gpaw import GPAW

    work = atoms.copy()
    work.calc = GPAW(**GPAW_PARAMETERS, txt=str(txt))
    t0 = time.perf_counter()
    free_energy = work.get_potential_energy(force_consistent=True)
    forces = work.get_forces()
    stress = work.get_stress(voigt=True)
    wall = time.perf_counter() - t0
    extrapolated = work.get_potential_energy()
    iterations = work.calc.get_number_of_iterations() if hasattr(work.calc, "get_number_of_iterations") else None
    out = atoms.copy()
    out.calc = None
    out.info["REF_energy"] = float(free_energy)
    out.info["REF_stress"] = np.asarray(stress, dtype=float)
    out.arrays["REF_forces"] = np.asarray(forces, dtype=float)
    out.info["gpaw_energy_zero_width"] = float(extrapolated)
    return out, {"wall_s": round(wall, 2), "scf_iterations": iterations}


def frame_text(atoms: Atoms) -> str:
    from ase.io import write

    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue()


def read_done(path: Path, sha: str) -> dict[str, Atoms]:
    """Frames already in `path` by config_id; refuses a file written with other settings."""
    if not path.exists() or path.stat().st_size == 0:
        return {}
    from ase.io import read

    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as exc:  # a truncated last frame from a hard kill
        raise RuntimeError(f"{path} cannot be read ({exc}); remove its last, incomplete frame and rerun") from exc
    done = {}
    for fr in frames:
        if fr.info.get("settings_sha256") != sha:
            raise RuntimeError(
                f"{path}: frame {fr.info.get('config_id')} was computed with settings "
                f"{fr.info.get('settings_sha256')}, "
                f"these settings hash to {sha}; write to another --out folder instead of mixing them"
            )
        done[fr.info["config_id"]] = fr
    return done


def run_stage(stage: str, configs: list[Atoms], out: Path, settings: dict, log) -> list[Atoms]:
    path = out / f"{stage}.extxyz"
    sha = settings_hash(settings)
    done = read_done(path, sha)
    logs = out / "gpaw_logs"
    logs.mkdir(exist_ok=True)
    results = []
    for atoms in configs:
        cid = atoms.info["config_id"]
        if cid in done:
            stored = done[cid]
            if len(stored) != len(atoms) or not np.allclose(stored.positions, atoms.positions, atol=1e-6):
                raise RuntimeError(
                    f"{path}: stored {cid} is not the structure its seed regenerates; "
                    "the generator changed - write to a new --out folder"
                )
            results.append(stored)
            log(f"{stage} {cid}: already computed, skipped")
            continue
        atoms.info["settings_sha256"] = sha
        atoms.info["calc_settings"] = calc_summary()
        frame, timing = single_point(atoms, logs / f"{cid}.txt")
        with open(path, "a") as fh:  # one write per frame, then fsync: a kill loses at most this frame
            fh.write(frame_text(frame))
            fh.flush()
            os.fsync(fh.fileno())
        with open(out / "timings.jsonl", "a") as fh:
            fh.write(
                json.dumps({"config_id": cid, "natoms": len(frame), **timing, "loadavg_1min": os.getloadavg()[0]})
                + "\n"
            )
        fmax = np.abs(frame.arrays["REF_forces"]).max()
        log(
            f"{stage} {cid} ({frame.info['config_type']}): E={frame.info['REF_energy']:.6f} eV "
            f"max|F|={fmax:.3f} eV/A  {timing['wall_s']:.1f} s, {timing['scf_iterations']} SCF iterations"
        )
        results.append(frame)
    return results


# ---------------------------------------------------------------------------------------------
# Reference values
# ---------------------------------------------------------------------------------------------
def fit_eos(frames: list[Atoms]) -> dict:
    from ase.eos import EquationOfState

    vols = np.array([fr.get_volume() for fr in frames])
    energies = np.array([fr.info["REF_energy"] for fr in frames])
    pressures = np.array([-np.mean(fr.info["REF_stress"][:3]) for fr in frames])
    eos = EquationOfState(vols, energies, eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    # Cross-check of the stress: pressure from the fitted E(V) against GPAW's stress at each volume.
    dv = 1e-4 * v0
    p_fit = np.array(
        [-(eos.func(v + dv, *eos.eos_parameters) - eos.func(v - dv, *eos.eos_parameters)) / (2 * dv) for v in vols]
    )
    a0 = float(v0 ** (1.0 / 3.0))
    return {
        "a0_angstrom": a0,
        "a0_used_angstrom": round(a0, 4),
        "B0_GPa": float(b / GPa),
        "e0_eV_per_atom": float(e0 / 8),
        "v0_angstrom3_per_atom": float(v0 / 8),
        "fit": "ase.eos.EquationOfState(eos='birchmurnaghan') on the 8-atom cell, 7 points",
        "points": [
            {
                "a": float(v ** (1 / 3)),
                "E_eV": float(e),
                "p_stress_GPa": float(p / GPa),
                "p_from_EOS_GPa": float(q / GPa),
            }
            for v, e, p, q in zip(vols, energies, pressures, p_fit)
        ],
        "max_abs_p_stress_minus_p_EOS_GPa": float(np.max(np.abs(pressures - p_fit)) / GPa),
    }


def update_reference(out: Path, settings: dict, **sections) -> None:
    path = out / "reference.json"
    ref = json.loads(path.read_text()) if path.exists() else {}
    ref["settings"] = settings
    ref["settings_sha256"] = settings_hash(settings)
    ref.update(sections)
    path.write_text(json.dumps(ref, indent=1) + "\n")


def load_a0(out: Path, settings: dict) -> float:
    path = out / "eos.extxyz"
    frames = list(read_done(path, settings_hash(settings)).values())
    if len(frames) < len(EOS_STRAINS):
        raise RuntimeError(f"{path} holds {len(frames)} of {len(EOS_STRAINS)} EOS points; run --stages eos first")
    return fit_eos(frames)["a0_used_angstrom"]


def convergence_cell() -> Atoms:
    """The test cell of the convergence check: rattled (0.05 A) and strained (normal and shear)."""
    rng = np.random.default_rng(STAGE_SEEDS["convergence"])
    atoms = ideal_cell(A_GUESS)
    atoms.positions = atoms.positions + rng.normal(0.0, 0.05, atoms.positions.shape)
    eps = np.array([[0.02, 0.01, 0.0], [0.01, -0.01, 0.015], [0.0, 0.015, 0.0]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def run_convergence(out: Path, log) -> None:
    """Energy, forces and stress of convergence_cell() against cutoff (at k = 3) and k-grid
    (at the production cutoff); differences against the highest cutoff / densest grid run."""
    from gpaw import GPAW

    path = out / "convergence.json"
    res = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    runs = [(e, CONVERGENCE_K_FOR_CUTOFFS) for e in CONVERGENCE_CUTOFFS]
    runs += [(CONVERGENCE_ECUT_FOR_KGRIDS, k) for k in CONVERGENCE_KGRIDS]
    header = {
        "cell": "generate.convergence_cell(): 8-atom cell, a = A_GUESS, rattle 0.05 A (seed 0), strain "
        "[[0.02, 0.01, 0], [0.01, -0.01, 0.015], [0, 0.015, 0]]",
        "other_settings": "as reference.json settings.dft, only mode.ecut and kpts.size changed",
    }

    def write(summary=None):
        doc = {**header, "runs": res}
        if summary is not None:
            doc["summary"] = summary
        path.write_text(json.dumps(doc, indent=1) + "\n")

    for ecut, k in dict.fromkeys(runs):  # the shared (ecut, k) point runs once
        key = f"ecut{ecut:g}_k{k}"
        if key in res:
            continue
        params = dict(GPAW_PARAMETERS, mode={"name": "pw", "ecut": ecut}, kpts={"size": [k, k, k], "gamma": False})
        atoms = convergence_cell()
        atoms.calc = GPAW(**params, txt=str(out / "gpaw_logs" / f"conv_{key}.txt"))
        t0 = time.perf_counter()
        e = atoms.get_potential_energy(force_consistent=True)
        f, s = atoms.get_forces(), atoms.get_stress()
        res[key] = {"ecut": ecut, "k": k, "E": e, "F": f.tolist(), "S": s.tolist(), "wall_s": time.perf_counter() - t0}
        write()
        log(f"convergence {key}: E={e:.6f} eV, {res[key]['wall_s']:.1f} s")

    def diff(r, ref):
        return {
            "dE_meV_per_atom": 1000 * (r["E"] - ref["E"]) / 8,
            "max_dF_meV_per_A": 1000 * float(np.abs(np.array(r["F"]) - np.array(ref["F"])).max()),
            "max_dS_GPa": float(np.abs(np.array(r["S"]) - np.array(ref["S"])).max() / GPa),
        }

    ref_e = res[f"ecut{CONVERGENCE_CUTOFFS[-1]:g}_k{CONVERGENCE_K_FOR_CUTOFFS}"]
    ref_k = res[f"ecut{CONVERGENCE_ECUT_FOR_KGRIDS:g}_k{CONVERGENCE_KGRIDS[-1]}"]
    summary = {
        "cutoff_series_vs_highest": {
            f"{e:g}": diff(res[f"ecut{e:g}_k{CONVERGENCE_K_FOR_CUTOFFS}"], ref_e) for e in CONVERGENCE_CUTOFFS
        },
        "kgrid_series_vs_densest": {
            str(k): diff(res[f"ecut{CONVERGENCE_ECUT_FOR_KGRIDS:g}_k{k}"], ref_k) for k in CONVERGENCE_KGRIDS
        },
    }
    write(summary)
    log(f"convergence summary: {json.dumps(summary)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    ap.add_argument(
        "--stages",
        default="eos,phonon,train,valid,test",
        help="comma-separated: convergence, eos, phonon, train, valid, test",
    )
    args = ap.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpaw_logs").mkdir(exist_ok=True)
    settings = settings_block()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    log(f"settings {settings_hash(settings)}: {calc_summary()}; versions {json.dumps(settings['versions'])}")
    log(f"threads: OMP={os.environ.get('OMP_NUM_THREADS')} OPENBLAS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - {"convergence", "eos", "phonon", "train", "valid", "test"}
    if unknown:
        ap.error(f"unknown stage(s) {sorted(unknown)}; choose from convergence, eos, phonon, train, valid, test")
    for stage in stages:
        if stage == "convergence":
            run_convergence(out, log)
        elif stage == "eos":
            frames = run_stage("eos", eos_configs(), out, settings, log)
            eos = fit_eos(frames)
            update_reference(out, settings, eos=eos)
            log(f"EOS: a0 = {eos['a0_angstrom']:.5f} A, B0 = {eos['B0_GPa']:.2f} GPa")
        elif stage == "phonon":
            a0 = load_a0(out, settings)
            frames = run_stage("phonon", phonon_configs(a0), out, settings, log)
            ph = gamma_phonons(a0, [fr.arrays["REF_forces"] for fr in frames])
            ph["a0_angstrom"] = a0
            update_reference(out, settings, phonon=ph)
            log(
                f"Gamma optical at a0={a0}: {ph['gamma_optical_thz']:.4f} THz; "
                f"8-atom-cell Gamma {np.round(ph['cubic8_gamma_thz'], 3)}"
            )
        else:
            a0 = load_a0(out, settings)
            frames = run_stage(stage, stage_configs(stage, a0), out, settings, log)
            counts = {}
            for fr in frames:
                counts[fr.info["config_type"]] = counts.get(fr.info["config_type"], 0) + 1
            update_reference(out, settings, **{f"{stage}_counts": counts})
            log(f"{stage}: {len(frames)} configurations {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
