"""Deterministic distillation data for the native student ``facet-s-7net0`` from ``7net-0-spline``.

Run from the repository root, one core::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python models/facet-s-7net0/generate_data.py            # all stages
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python models/facet-s-7net0/generate_data.py --stages base

Stages (in this order; ``all`` runs them in turn; a stage whose output exists is skipped, so an
interrupted run resumes; ``manifest`` is always rewritten):

- ``lattice``: per element and structure (fcc, bcc, hcp, sc, diamond) the nearest-neighbour
  distance that minimises the teacher's energy on a grid of isotropic scales (float32), and the
  teacher's isolated-atom energies (``data/lattice.json``).
- ``elemental``: the five crystals of every element, supercells of 8-32 atoms, strained and rattled.
- ``compounds``: rocksalt, CsCl, zincblende, wurtzite, fluorite, L1_2, perovskite ABX3 and rutile
  AX2 with random elements (one element per configuration cycles through all 89), volume from a
  teacher scan, supercells up to 40 atoms, strained and rattled.
- ``substitution``: elemental supercells with 2-3 species on random sites.
- ``defects``: single vacancies in elemental supercells and small slabs (8 A vacuum, full cell).
- ``clusters``: random compact clusters of 4-13 atoms and the rattled g2 molecules (no cell).
- ``base``: stages 1-3 joined and split (95/5, by a hash of config_id) into ``train_base.extxyz``
  and ``valid_base.extxyz``: a first training set before the MD exists.
- ``md``: Langevin snapshots (float32 dynamics, float64 labels) of elemental and binary cells at
  300, 800, 1500 and 2500 K.
- ``test``: held out: A15, beta-Sn and simple-hexagonal elements; C15 Laves, Heusler L2_1, NiAs and
  A15 A3B compounds; fcc110/bcc100/diamond100/hcp10-10 slabs; larger clusters; MD at 600 and 2000 K.
- ``split``: all training material into ``train.extxyz`` and ``valid.extxyz`` (same hash split, so
  valid_base is a subset of valid).
- ``pool``: an active-learning candidate pool: the training generators with new seeds
  (``pool.extxyz``; see ``active_learning.py``).
- ``manifest``: ``manifest.json``: counts per config_type and element, dropped configurations,
  timings, versions and sha256 of every file.

Every configuration carries ``REF_energy`` (eV), ``REF_forces`` (eV/A), ``REF_stress`` (eV/A^3,
Voigt xx yy zz yz xz xy, ASE sign; only for cells of full rank with 3D periodicity), ``config_type``,
``config_id`` and ``seed``: the seed of the numpy Generator that built it, derived from the sha256
of ``"<stage>:<index>"`` (no global state: a configuration does not depend on what ran before).
Labels are single points of the teacher in float64. Configurations with max |F| > 50 eV/A, or a
non-finite energy, or an energy per atom relative to the teacher's isolated atoms outside
[-20, +5] eV/atom are dropped and counted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bcc100, bcc110, bulk, diamond100, diamond111, fcc100, fcc110, fcc111, hcp0001, hcp10m10
from ase.data import atomic_masses, atomic_numbers, chemical_symbols, covalent_radii
from ase.io import read, write
from ase.neighborlist import neighbor_list

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PARTS = DATA / "parts"
TEACHER = "7net-0-spline"

STRUCTS = ("fcc", "bcc", "hcp", "sc", "diamond")
ANIONS = ("O", "F", "S", "Se", "Cl", "Br", "I", "N", "Te", "H")
VALID_FRACTION = 0.05
F_MAX = 50.0
E_REL_RANGE = (-20.0, 5.0)
#: isotropic scales of the volume scans, relative to "shortest contact = sum of covalent radii"
SCAN_SCALES = np.array([0.80, 0.86, 0.92, 0.98, 1.05, 1.12, 1.20, 1.30, 1.42])
#: elemental crystals: also wider (noble gases, H, halogens have no bonded minimum in a monatomic lattice)
LATTICE_SCALES = np.concatenate([SCAN_SCALES, [1.6, 1.8, 2.0]])

TRAIN_PARTS = ("elemental", "compounds", "substitution", "defects", "clusters")
ORDER = (
    "lattice",
    "elemental",
    "compounds",
    "substitution",
    "defects",
    "clusters",
    "base",
    "md",
    "test",
    "split",
    "pool",
    "manifest",
)


# ----------------------------------------------------------------------------- seeds, teacher


def seed_of(stage: str, index: int | str) -> int:
    """The seed of configuration ``index`` of ``stage``: 63 bits of sha256, never Python's hash()."""
    # 63 bits: extxyz stores info["seed"] as a signed 64-bit integer (a larger one becomes a float)
    return int.from_bytes(hashlib.sha256(f"{stage}:{index}".encode()).digest()[:8], "little") & (2**63 - 1)


def rng_of(stage: str, index: int | str) -> tuple[np.random.Generator, int]:
    seed = seed_of(stage, index)
    return np.random.default_rng(seed), seed


def elements() -> list[int]:
    from facet_calc import load_potential

    return sorted(load_potential(TEACHER).config["atomic_numbers"])


_CALCS: dict[str, object] = {}


def teacher(dtype: str):
    if dtype not in _CALCS:
        from facet_calc import FacetCalculator

        _CALCS[dtype] = FacetCalculator(TEACHER, dtype=dtype)
    return _CALCS[dtype]


def energy32(atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = teacher("float32")
    e = a.get_potential_energy()
    return float(e) if np.isfinite(e) else np.inf


def energies32(frames: list[Atoms]) -> np.ndarray:
    """Teacher (float32) energies in one batch; inf where the teacher refuses or returns NaN
    (absurdly dense cells, e.g. hydrogen crystals at the low end of a scan)."""
    try:
        res = [r["energy"] for r in teacher("float32").calculate_many(frames, properties=["energy"])]
    except Exception:  # noqa: BLE001 (one refused structure: evaluate one by one)
        res = []
        for fr in frames:
            try:
                res.append(teacher("float32").calculate_many([fr], properties=["energy"])[0]["energy"])
            except Exception:  # noqa: BLE001
                res.append(np.inf)
    return np.array([float(r) if np.isfinite(r) else np.inf for r in res])


def radius(z: int) -> float:
    return max(float(covalent_radii[z]), 0.45)  # H, He: 0.31, 0.28 pack absurdly densely


def min_contact_ratio(atoms: Atoms) -> float:
    """min over pairs of distance / (r_cov,i + r_cov,j), periodic images included."""
    if atoms.pbc.all():
        cut = max(
            4.0 * max(radius(z) for z in set(atoms.numbers)) + 0.5, 2.5 * (atoms.get_volume() / len(atoms)) ** (1 / 3)
        )
        i, j, d = neighbor_list("ijd", atoms, cut)
    else:
        dm = atoms.get_all_distances()
        i, j = np.triu_indices(len(atoms), 1)
        d = dm[i, j]
    if len(d) == 0:
        return np.inf
    r = np.maximum(covalent_radii[atoms.numbers], 0.45)
    return float(np.min(d / (r[i] + r[j])))


CONTACT_MAX = 4.6  # A, shortest contact kept below this (the teacher's cutoff is 5 A)


def _shortest(atoms: Atoms) -> float:
    """The shortest interatomic distance (periodic images included)."""
    if atoms.pbc.all():
        cut = 2.5 * (atoms.get_volume() / len(atoms)) ** (1 / 3) + 0.5
        d = neighbor_list("d", atoms, cut)
    else:
        dm = atoms.get_all_distances()
        d = dm[np.triu_indices(len(atoms), 1)]
    return float(np.min(d))


def scaled(atoms: Atoms, s: float) -> Atoms:
    a = atoms.copy()
    a.set_cell(a.cell * s, scale_atoms=True)
    return a


def scan_volume(atoms: Atoms, scales=SCAN_SCALES) -> tuple[Atoms, float]:
    """Scale ``atoms`` isotropically to the teacher's (float32) energy minimum on a grid of
    scales of the shortest contact relative to the sum of covalent radii (parabola through the
    three lowest-energy neighbours; kept inside the grid, so contacts stay >= 0.80 of the
    covalent sum). Returns the scaled copy and the chosen contact ratio."""
    base = scaled(atoms, 1.0 / min_contact_ratio(atoms))
    # keep the shortest contact inside the teacher's 5 A cutoff (K, Rb, Cs, Ba...: beyond it the
    # teacher sees isolated atoms and the energy is flat)
    d_min = 1.0 / min_contact_ratio(atoms) * _shortest(atoms)
    inside = scales[scales * d_min <= CONTACT_MAX]
    scales = inside if len(inside) >= 3 else scales[:3]
    e = energies32([scaled(base, s) for s in scales])
    k = int(np.argmin(e))
    s = float(scales[k])
    if 0 < k < len(scales) - 1 and np.all(np.isfinite(e[k - 1 : k + 2])):
        x, y = scales[k - 1 : k + 2], e[k - 1 : k + 2]
        c2, c1, _ = np.polyfit(x, y, 2)
        if c2 > 0:
            s = float(np.clip(-c1 / (2 * c2), x[0], x[2]))
    return scaled(base, s), s


# ----------------------------------------------------------------------------- structures


def elemental_cell(sym: str, struct: str, nn: float) -> Atoms:
    """Conventional cell of ``struct`` with nearest-neighbour distance ``nn``."""
    if struct == "fcc":
        return bulk(sym, "fcc", a=nn * np.sqrt(2), cubic=True)
    if struct == "bcc":
        return bulk(sym, "bcc", a=nn * 2 / np.sqrt(3), cubic=True)
    if struct == "hcp":
        return bulk(sym, "hcp", a=nn, c=nn * np.sqrt(8 / 3))
    if struct == "sc":
        return bulk(sym, "sc", a=nn)
    if struct == "diamond":
        return bulk(sym, "diamond", a=nn * 4 / np.sqrt(3), cubic=True)
    raise ValueError(struct)


#: supercell repeats per conventional-cell size, all giving 8-32 atoms
REPEATS = {
    1: [(2, 2, 2), (3, 3, 2), (3, 3, 3), (3, 2, 2)],
    2: [(2, 2, 2), (2, 2, 3), (3, 2, 2), (2, 2, 1)],
    4: [(2, 1, 1), (2, 2, 1), (2, 2, 2), (1, 2, 2)],
    5: [(2, 1, 1), (2, 2, 1), (2, 2, 2)],
    6: [(1, 1, 2), (2, 1, 1), (2, 2, 1), (1, 1, 3)],
    8: [(1, 1, 1), (2, 1, 1), (2, 2, 1)],
    12: [(1, 1, 1), (2, 1, 1), (3, 1, 1)],
    16: [(1, 1, 1), (2, 1, 1)],
    24: [(1, 1, 1)],
}


def supercell(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    options = REPEATS.get(len(atoms), [(1, 1, 1)])
    return atoms.repeat(options[rng.integers(len(options))])


def strain_rattle(
    atoms: Atoms,
    rng: np.random.Generator,
    strain=(0.05, 0.08),
    sigma=(0.02, 0.15),
) -> tuple[Atoms, dict]:
    """Random symmetric strain (components uniform in +-smax, smax drawn from ``strain``) and a
    Gaussian rattle (sigma drawn from ``sigma``, A); the rattle is halved until no contact is
    shorter than 0.7 of the covalent sum (at most 4 times)."""
    a = atoms.copy()
    smax = rng.uniform(*strain) if strain else 0.0
    if strain and a.pbc.all():
        eps = rng.uniform(-smax, smax, (3, 3))
        eps = 0.5 * (eps + eps.T)
        a.set_cell(a.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    sig = rng.uniform(*sigma)
    noise = rng.standard_normal((len(a), 3))
    pos = a.positions.copy()
    for _ in range(5):
        a.positions = pos + sig * noise
        if len(a) < 2 and not a.pbc.any():
            break
        if min_contact_ratio(a) >= 0.7:
            break
        sig *= 0.5
    return a, {"strain_max": round(float(smax), 4), "rattle_sigma": round(float(sig), 4)}


def cycled(stage: str, els: list[int]) -> list[int]:
    """A fixed permutation of the elements (seeded by the stage): entry i % 89 of it is the
    'guaranteed' element of configuration i, so every element appears in every generator."""
    rng = np.random.default_rng(seed_of(stage, "order"))
    return [els[k] for k in rng.permutation(len(els))]


def pick_others(rng, els, first: int, n: int, pool=None) -> list[int]:
    cands = [z for z in (pool or els) if z != first]
    return [int(z) for z in rng.choice(cands, size=n, replace=False)]


def manual(symbols, frac, cell) -> Atoms:
    cell = np.asarray(cell, dtype=float)
    return Atoms(symbols, scaled_positions=frac, cell=cell, pbc=True)


def proto_cell(name: str, s: list[str]) -> Atoms:
    """Unit cell of a prototype (any length scale: scan_volume rescales it)."""
    if name == "rocksalt":
        return bulk(s[0] + s[1], "rocksalt", a=5.0, cubic=True)
    if name == "cscl":
        return bulk(s[0] + s[1], "cesiumchloride", a=3.0)
    if name == "zincblende":
        return bulk(s[0] + s[1], "zincblende", a=5.0, cubic=True)
    if name == "wurtzite":
        return bulk(s[0] + s[1], "wurtzite", a=3.2, c=3.2 * np.sqrt(8 / 3), u=3 / 8)
    if name == "fluorite":
        return bulk(s[0] + s[1] + "2", "fluorite", a=5.0, cubic=True)
    if name == "l12":  # Cu3Au: s[0] on the corner (Au), s[1] on the faces (Cu)
        return manual([s[0], s[1], s[1], s[1]], [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)], np.eye(3) * 4)
    if name == "perovskite":  # ABX3
        frac = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
        return manual([s[0], s[1], s[2], s[2], s[2]], frac, np.eye(3) * 4)
    if name == "rutile":  # AX2, u = 0.305, c/a = 0.644
        u = 0.305
        frac = [
            (0, 0, 0),
            (0.5, 0.5, 0.5),
            (u, u, 0),
            (1 - u, 1 - u, 0),
            (0.5 + u, 0.5 - u, 0.5),
            (0.5 - u, 0.5 + u, 0.5),
        ]
        return manual([s[0], s[0], s[1], s[1], s[1], s[1]], frac, np.diag([4.6, 4.6, 2.96]))
    # held-out prototypes (test only)
    if name == "a15":  # Cr3Si: s[1] (B) on the bcc sites, s[0] (A) in chains
        frac = [(0, 0, 0), (0.5, 0.5, 0.5)]
        frac += [(0.25, 0, 0.5), (0.75, 0, 0.5), (0.5, 0.25, 0), (0.5, 0.75, 0), (0, 0.5, 0.25), (0, 0.5, 0.75)]
        return manual([s[1], s[1]] + [s[0]] * 6, frac, np.eye(3) * 4.7)
    if name == "c15":  # MgCu2, Fd-3m origin choice 1: A 8a, B 16d
        from ase.spacegroup import crystal

        return crystal(
            [s[0], s[1]], [(0, 0, 0), (5 / 8, 5 / 8, 5 / 8)], spacegroup=227, cellpar=7.0, primitive_cell=True
        )
    if name == "heusler":  # X2YZ L2_1: X 8c, Y 4a, Z 4b; primitive cell (4 atoms)
        from ase.spacegroup import crystal

        return crystal(
            [s[0], s[1], s[2]],
            [(0.25, 0.25, 0.25), (0, 0, 0), (0.5, 0.5, 0.5)],
            spacegroup=225,
            cellpar=6.0,
            primitive_cell=True,
        )
    if name == "nias":  # P6_3/mmc: A 2a, B 2c
        cell = Atoms(cell=[3.6, 3.6, 5.0, 90, 90, 120]).cell
        frac = [(0, 0, 0), (0, 0, 0.5), (1 / 3, 2 / 3, 0.25), (2 / 3, 1 / 3, 0.75)]
        return manual([s[0], s[0], s[1], s[1]], frac, cell)
    if name == "betasn":  # I4_1/amd, c/a = 0.546, 4-atom conventional cell
        from ase.spacegroup import crystal

        return crystal([s[0]], [(0, 0, 0)], spacegroup=141, cellpar=[5.83, 5.83, 3.18, 90, 90, 90])
    if name == "sh":  # simple hexagonal, c/a = 0.94
        return manual([s[0]], [(0, 0, 0)], Atoms(cell=[3.0, 3.0, 2.82, 90, 90, 120]).cell)
    raise ValueError(name)


def random_cluster(rng, species: list[int], n: int) -> Atoms:
    """Compact random cluster: each new atom sits at 0.95-1.15 covalent sums from a random
    placed atom and at least 0.85 covalent sums from every other one."""
    numbers = [int(species[0])] + [int(rng.choice(species)) for _ in range(n - 1)]
    pos = [np.zeros(3)]
    for z in numbers[1:]:
        for _ in range(500):
            k = rng.integers(len(pos))
            v = rng.standard_normal(3)
            v /= np.linalg.norm(v)
            d = (radius(z) + radius(numbers[k])) * rng.uniform(0.95, 1.15)
            p = pos[k] + d * v
            ok = all(
                np.linalg.norm(p - q) >= 0.85 * (radius(z) + radius(numbers[m])) for m, q in enumerate(pos) if m != k
            )
            if ok:
                break
        pos.append(p)
    a = Atoms(numbers=numbers, positions=np.array(pos), pbc=False)
    a.positions -= a.get_center_of_mass()
    return a


# ----------------------------------------------------------------------------- labelling


class Labeller:
    def __init__(self, e_iso: dict[int, float]):
        self.e_iso = e_iso
        self.dropped: dict[str, int] = {}
        self.dropped_detail: list[str] = []

    def __call__(self, atoms: Atoms, config_type: str, config_id: str, seed: int, extra: dict | None = None):
        """A clean labelled copy of ``atoms`` (float64 teacher), or None if the guard drops it."""
        if atoms.pbc.any():
            clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        else:
            clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, pbc=False)
        periodic = bool(clean.pbc.all()) and clean.cell.rank == 3
        work = clean.copy()
        work.calc = teacher("float64")
        reason = None
        try:
            e = float(work.get_potential_energy())
            f = np.array(work.get_forces())
            s = np.array(work.get_stress(voigt=True)) if periodic else None
        except Exception as err:  # noqa: BLE001 (a teacher failure is counted, never fatal)
            e, f, s, reason = np.nan, None, None, f"error: {type(err).__name__}"
        if reason is None:
            e_rel = (e - sum(self.e_iso[int(z)] for z in clean.numbers)) / len(clean)
            if not np.isfinite(e) or not np.all(np.isfinite(f)) or (s is not None and not np.all(np.isfinite(s))):
                reason = "non-finite"
            elif np.max(np.linalg.norm(f, axis=1)) > F_MAX:
                reason = f"max|F|>{F_MAX:g}"
            elif not E_REL_RANGE[0] <= e_rel <= E_REL_RANGE[1]:
                reason = "E/atom out of range"
        if reason is not None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            self.dropped_detail.append(f"{config_id} {clean.get_chemical_formula()} {reason}")
            return None
        clean.info["REF_energy"] = e
        clean.arrays["REF_forces"] = f
        if s is not None:
            clean.info["REF_stress"] = s
        clean.info["config_type"] = config_type
        clean.info["config_id"] = config_id
        clean.info["seed"] = int(seed)
        for k, v in (extra or {}).items():
            clean.info[k] = v
        return clean


def write_atomic(path: Path, frames: list[Atoms]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def load_lattice() -> dict:
    return json.loads((DATA / "lattice.json").read_text())


def nn_of(lat: dict, z: int, struct: str) -> float:
    return lat["nn"][str(z)][struct]


def ground_struct(lat: dict, z: int) -> str:
    """The lowest-energy of the five structures, among those the teacher does not collapse."""
    e = lat["energy_per_atom"][str(z)]
    ok = {st: v for st, v in e.items() if f"{chemical_symbols[z]}-{st}" not in lat["collapsed"]} or e
    return min(ok, key=ok.get)


# ----------------------------------------------------------------------------- stages


def stage_lattice(els, args) -> dict:
    nn, epa, e_iso, collapsed = {}, {}, {}, []
    for z in els:
        sym = chemical_symbols[z]
        nn[str(z)], epa[str(z)] = {}, {}
        for st in STRUCTS:
            cell, ratio = scan_volume(elemental_cell(sym, st, 2 * radius(z)), LATTICE_SCALES)
            if ratio <= LATTICE_SCALES[0] + 1e-9:
                # the energy still falls at the floor of 0.8 covalent sums: metals in open
                # structures, monatomic O/N/C, and Ce, Pa, U, Np (ASE's covalent radii are large
                # for them); keep the floor, but never call such a structure the ground state
                collapsed.append(f"{sym}-{st}")
            nn[str(z)][st] = round(2 * radius(z) * ratio, 5)
            epa[str(z)][st] = round(float(energies32([cell])[0]) / len(cell), 6)
    for z in elements():  # all of the teacher's, also when --only-elements restricts the rest
        a = Atoms([chemical_symbols[z]], positions=[[0, 0, 0]], pbc=False)
        a.calc = teacher("float64")
        e_iso[str(z)] = float(a.get_potential_energy())
    out = {"nn": nn, "energy_per_atom": epa, "e_isolated": e_iso, "collapsed": collapsed}
    (DATA / "lattice.json").write_text(json.dumps(out, indent=1))
    return {"n": len(els) * len(STRUCTS)}


def gen_elemental(stage: str, els, lat, variants: int):
    for z in els:
        for st in STRUCTS:
            for v in range(variants):
                idx = f"{chemical_symbols[z]}-{st}-{v}"
                rng, seed = rng_of(stage, idx)
                a = supercell(elemental_cell(chemical_symbols[z], st, nn_of(lat, z, st)), rng)
                a, meta = strain_rattle(a, rng)
                yield a, f"elemental_{st}", f"{stage}:{idx}", seed, meta


TRAIN_PROTOS = {  # name: (species count, configurations)
    "rocksalt": 2,
    "cscl": 2,
    "zincblende": 2,
    "wurtzite": 2,
    "fluorite": 2,
    "l12": 2,
    "perovskite": 3,
    "rutile": 2,
}


def proto_species(rng, name, first, els):
    """Species of a prototype with ``first`` on a random site (anion sites prefer anions)."""
    if name == "perovskite":
        x = int(rng.choice([atomic_numbers[s] for s in ANIONS if atomic_numbers[s] in els]))
        if first == x or rng.random() < 0.3:  # the cycled element on the anion site
            x = first
            a, b = pick_others(rng, els, first, 2)
        else:
            a, b = pick_others(rng, [z for z in els if z != x], first, 1)[0], first
            if rng.random() < 0.5:
                a, b = b, a
        return [a, b, x]
    if name == "rutile" and rng.random() < 0.7:
        anions = [atomic_numbers[s] for s in ANIONS if atomic_numbers[s] != first and atomic_numbers[s] in els]
        return [first, int(rng.choice(anions))]
    n = 3 if name in ("heusler",) else 2
    sp = [first] + pick_others(rng, els, first, n - 1)
    return [int(sp[k]) for k in rng.permutation(n)]


def gen_compounds(stage: str, els, protos: dict[str, int], strain=(0.05, 0.08), sigma=(0.02, 0.15)):
    for name, count in protos.items():
        order = cycled(f"{stage}/{name}", els)
        for i in range(count):
            rng, seed = rng_of(f"{stage}/{name}", i)
            sp = proto_species(rng, name, order[i % len(order)], els)
            cell, ratio = scan_volume(proto_cell(name, [chemical_symbols[z] for z in sp]))
            a = supercell(cell, rng)
            a, meta = strain_rattle(a, rng, strain, sigma)
            meta["contact_ratio"] = round(ratio, 4)
            yield a, f"compound_{name}", f"{stage}/{name}:{i}", seed, meta


def gen_substitution(stage: str, els, lat, count: int, structs=STRUCTS, nspecies=(2, 3)):
    order = cycled(stage, els)
    for i in range(count):
        rng, seed = rng_of(stage, i)
        host = order[i % len(order)]
        st = structs[rng.integers(len(structs))]
        a = supercell(elemental_cell(chemical_symbols[host], st, nn_of(lat, host, st)), rng)
        k = int(rng.choice(nspecies))
        others = pick_others(rng, els, host, k - 1)
        frac = rng.uniform(0.15, 0.6)
        n_sub = max(1, int(round(frac * len(a))))
        sites = rng.choice(len(a), size=n_sub, replace=False)
        a.numbers[sites] = rng.choice(others, size=n_sub)
        a, ratio = scan_volume(a, SCAN_SCALES[:6])
        a, meta = strain_rattle(a, rng)
        meta["contact_ratio"] = round(ratio, 4)
        yield a, f"substitution_{st}", f"{stage}:{i}", seed, meta


SURFACES_TRAIN = {"fcc111": ("fcc", fcc111), "fcc100": ("fcc", fcc100), "bcc110": ("bcc", bcc110)}
SURFACES_TRAIN |= {"hcp0001": ("hcp", hcp0001), "diamond111": ("diamond", diamond111)}
SURFACES_TEST = {"fcc110": ("fcc", fcc110), "bcc100": ("bcc", bcc100), "hcp10m10": ("hcp", hcp10m10)}
SURFACES_TEST |= {"diamond100": ("diamond", diamond100)}


def make_slab(sym, facet, fn, st, nn, rng) -> Atoms:
    if st == "fcc":
        kw = {"a": nn * np.sqrt(2)}
    elif st == "bcc":
        kw = {"a": nn * 2 / np.sqrt(3)}
    elif st == "hcp":
        kw = {"a": nn, "c": nn * np.sqrt(8 / 3)}
    else:
        kw = {"a": nn * 4 / np.sqrt(3)}
    layers = {"diamond111": 4, "diamond100": 4, "hcp10m10": 4}.get(facet, int(rng.integers(3, 6)))
    size = (2, 2, layers)
    slab = fn(sym, size=size, vacuum=4.0, **kw)  # 4 A each side: 8 A between periodic images
    slab.pbc = True
    return slab


def gen_defects(stage: str, els, lat, vac_per_el: int, surf_per_el: int, surfaces=SURFACES_TRAIN):
    for z in els:
        sym = chemical_symbols[z]
        for v in range(vac_per_el):
            idx = f"vac-{sym}-{v}"
            rng, seed = rng_of(stage, idx)
            st = ground_struct(lat, z) if v == 0 else STRUCTS[rng.integers(len(STRUCTS))]
            a = supercell(elemental_cell(sym, st, nn_of(lat, z, st)), rng)
            if len(a) < 12:
                a = a.repeat((2, 1, 1))
            del a[int(rng.integers(len(a)))]
            a, meta = strain_rattle(a, rng, strain=(0.02, 0.04), sigma=(0.02, 0.1))
            yield a, "vacancy", f"{stage}:{idx}", seed, meta
        names = list(surfaces)
        for v in range(surf_per_el):
            idx = f"surf-{sym}-{v}"
            rng, seed = rng_of(stage, idx)
            facet = names[rng.integers(len(names))]
            st, fn = surfaces[facet]
            slab = make_slab(sym, facet, fn, st, nn_of(lat, z, st), rng)
            slab, meta = strain_rattle(slab, rng, strain=None, sigma=(0.02, 0.08))
            meta["facet"] = facet
            yield slab, f"surface_{facet}", f"{stage}:{idx}", seed, meta


def gen_clusters(stage: str, els, per_el: int, sizes=(4, 13), molecules: int = 3):
    order = cycled(stage, els)
    for i in range(per_el * len(els)):
        rng, seed = rng_of(stage, f"cluster-{i}")
        first = order[i % len(order)]
        k = int(rng.choice([1, 1, 2, 3]))
        sp = [first] + pick_others(rng, els, first, k - 1)
        n = int(rng.integers(sizes[0], sizes[1] + 1))
        a = random_cluster(rng, sp, n)
        a, meta = strain_rattle(a, rng, strain=None, sigma=(0.0, 0.05))
        yield a, "cluster", f"{stage}:cluster-{i}", seed, meta
    if molecules:
        from ase.collections import g2

        for name in sorted(g2.names):
            for v in range(molecules):
                rng, seed = rng_of(stage, f"mol-{name}-{v}")
                m = g2[name]
                m.pbc = False
                m, meta = strain_rattle(m, rng, strain=None, sigma=(0.01, 0.1))
                meta["molecule"] = name
                yield m, "molecule", f"{stage}:mol-{name}-{v}", seed, meta


#: MD runs stopped early (the snapshots before the stop are kept and labelled)
MD_ABORTED: list[str] = []


def run_md(a: Atoms, temp: float, steps: int, every: int, rng) -> list[Atoms]:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    a = a.copy()
    a.calc = teacher("float32")
    MaxwellBoltzmannDistribution(a, temperature_K=temp, rng=rng)
    Stationary(a)
    dt = 1.0 if min(atomic_masses[a.numbers]) < 12 else 2.0
    # fixcm=False: ASE 3.28 deprecates fixcm=True (not exactly NVT); the centre-of-mass drift
    # from the thermostat is harmless for labels
    dyn = Langevin(a, dt * units.fs, temperature_K=temp, friction=0.02 / units.fs, fixcm=False, rng=rng)
    snaps = []
    for k in range(steps // every):
        try:
            dyn.run(every)
        except Exception as err:  # noqa: BLE001 (the teacher refuses collapsed geometries: stop the run)
            MD_ABORTED.append(f"{a.get_chemical_formula()} {temp:g} K step <= {(k + 1) * every}: {type(err).__name__}")
            break
        if not np.all(np.isfinite(a.positions)):
            MD_ABORTED.append(f"{a.get_chemical_formula()} {temp:g} K step <= {(k + 1) * every}: non-finite")
            break
        snaps.append(Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc))
        snaps[-1].info["md_step"] = (k + 1) * every
    return snaps


def md_elemental_cell(z: int, st: str, lat) -> Atoms:
    """Element ``z`` in structure ``st`` at the teacher's spacing, repeated to 16-24 atoms."""
    a = elemental_cell(chemical_symbols[z], st, nn_of(lat, z, st))
    return a.repeat({1: (3, 3, 2), 2: (2, 2, 3), 4: (2, 2, 1), 8: (2, 1, 1)}[len(a)])


def md_frames(a: Atoms, temp: float, steps: int, every: int, rng, kind: str, run_id: str, seed: int):
    """The snapshots of one teacher MD run as recipe tuples: config_type ``<kind>_<T>K``,
    config_id ``<run_id>:<md step>``."""
    for s in run_md(a, temp, steps, every, rng):
        yield s, f"{kind}_{int(temp)}K", f"{run_id}:{s.info['md_step']}", seed, {"temperature_K": temp}


def md_binary_cell(rng, first, els, lat) -> Atoms:
    """A 16-32 atom binary cell: rocksalt, CsCl, L1_2 or an fcc/bcc substitution."""
    kind = ["rocksalt", "cscl", "l12", "sub"][rng.integers(4)]
    other = pick_others(rng, els, first, 1)[0]
    sp = [first, other] if rng.random() < 0.5 else [other, first]
    if kind == "sub":
        st = ["fcc", "bcc"][rng.integers(2)]
        a = elemental_cell(chemical_symbols[sp[0]], st, nn_of(lat, sp[0], st)).repeat((2, 2, 2))
        sites = rng.choice(len(a), size=len(a) // 2, replace=False)
        a.numbers[sites] = sp[1]
        a, _ = scan_volume(a, SCAN_SCALES[:6])
        return a
    cell, _ = scan_volume(proto_cell(kind, [chemical_symbols[z] for z in sp]))
    return cell.repeat({"rocksalt": (2, 1, 1), "cscl": (2, 2, 2), "l12": (2, 2, 1)}[kind])


def gen_md(stage: str, els, lat, temps, binary_runs: int, steps=40, every=10):
    for temp in temps:
        for z in els:
            idx = f"el-{chemical_symbols[z]}-{temp}"
            rng, seed = rng_of(stage, idx)
            st = ground_struct(lat, z) if rng.random() < 0.6 else STRUCTS[rng.integers(len(STRUCTS))]
            a = md_elemental_cell(z, st, lat)
            yield from md_frames(a, temp, steps, every, rng, "md_elemental", f"{stage}:{idx}", seed)
    order = cycled(stage, els)
    for i in range(binary_runs):
        temp = temps[i % len(temps)]
        idx = f"bin-{i}"
        rng, seed = rng_of(stage, idx)
        a = md_binary_cell(rng, order[i % len(order)], els, lat)
        yield from md_frames(a, temp, steps, every, rng, "md_binary", f"{stage}:{idx}", seed)


def gen_test(els, lat):
    stage = "test"
    # elemental held-out prototypes
    for name in ("a15", "betasn", "sh"):
        for z in els:
            idx = f"{name}-{chemical_symbols[z]}"
            rng, seed = rng_of(stage, idx)
            sym = chemical_symbols[z]
            cell, ratio = scan_volume(proto_cell(name, [sym, sym]))
            a = cell.repeat({"a15": (1, 1, 1), "betasn": (2, 2, 2), "sh": (2, 2, 3)}[name])
            a, meta = strain_rattle(a, rng, strain=(0.03, 0.06), sigma=(0.02, 0.12))
            yield a, f"test_elemental_{name}", f"{stage}:{idx}", seed, meta
    # compound held-out prototypes
    protos = {"c15": 80, "heusler": 80, "nias": 80, "a15": 80}
    for a, ct, cid, seed, meta in gen_compounds(stage, els, protos, strain=(0.03, 0.06), sigma=(0.02, 0.12)):
        yield a, ct.replace("compound_", "test_compound_"), cid, seed, meta
    # 4-species substitutions (train has 2-3)
    for a, ct, cid, seed, meta in gen_substitution(f"{stage}/sub", els, lat, 60, ("fcc", "bcc", "hcp"), (4,)):
        yield a, "test_" + ct, cid, seed, meta
    # held-out surfaces and larger clusters
    for a, ct, cid, seed, meta in gen_defects(f"{stage}/defects", els, lat, 0, 1, SURFACES_TEST):
        yield a, "test_" + ct, cid, seed, meta
    for a, ct, cid, seed, meta in gen_clusters(f"{stage}/clusters", els, 1, sizes=(10, 18), molecules=0):
        yield a, "test_" + ct, cid, seed, meta
    # MD at other temperatures: one run per element at 600 K or 2000 K, 40 binary runs
    for a, ct, cid, seed, meta in gen_md_test(els, lat):
        yield a, ct, cid, seed, meta


def gen_md_test(els, lat):
    stage = "test/md"
    for i, z in enumerate(els):
        temp = (600.0, 2000.0)[i % 2]
        idx = f"el-{chemical_symbols[z]}"
        rng, seed = rng_of(stage, idx)
        st = STRUCTS[rng.integers(len(STRUCTS))]
        a = md_elemental_cell(z, st, lat)
        yield from md_frames(a, temp, 40, 20, rng, "test_md_elemental", f"{stage}:{idx}", seed)
    order = cycled(stage, els)
    for i in range(40):
        temp = (600.0, 2000.0)[i % 2]
        rng, seed = rng_of(stage, f"bin-{i}")
        a = md_binary_cell(rng, order[(i * 2 + 1) % len(order)], els, lat)
        yield from md_frames(a, temp, 40, 20, rng, "test_md_binary", f"{stage}:bin-{i}", seed)


def gen_pool(els, lat):
    stage = "pool"
    yield from gen_elemental(f"{stage}/elemental", els, lat, 1)
    protos = {k: 60 for k in TRAIN_PROTOS}
    yield from gen_compounds(f"{stage}/compounds", els, protos)
    yield from gen_substitution(f"{stage}/substitution", els, lat, 300)
    yield from gen_defects(f"{stage}/defects", els, lat, 1, 1)
    yield from gen_clusters(f"{stage}/clusters", els, 1, molecules=0)


# ----------------------------------------------------------------------------- driver


def is_valid(config_id: str) -> bool:
    h = int.from_bytes(hashlib.sha256(f"split:{config_id}".encode()).digest()[:8], "little")
    return h / 2.0**64 < VALID_FRACTION


def label_all(gen, labeller: Labeller, log_every: int = 500) -> list[Atoms]:
    frames = []
    t0 = time.time()
    for k, (a, ct, cid, seed, meta) in enumerate(gen):
        fr = labeller(a, ct, cid, seed, meta)
        if fr is not None:
            frames.append(fr)
        if (k + 1) % log_every == 0:
            print(f"  {k + 1} configurations, {time.time() - t0:.0f} s", flush=True)
    return frames


def update_stats(stage: str, info: dict) -> None:
    path = DATA / "stats.json"
    stats = json.loads(path.read_text()) if path.exists() else {}
    stats[stage] = info
    path.write_text(json.dumps(stats, indent=1))


def outputs(stage: str) -> list[Path]:
    if stage == "lattice":
        return [DATA / "lattice.json"]
    if stage in TRAIN_PARTS or stage == "md":
        return [PARTS / f"{stage}.extxyz"]
    if stage == "base":
        return [DATA / "train_base.extxyz", DATA / "valid_base.extxyz"]
    if stage == "split":
        return [DATA / "train.extxyz", DATA / "valid.extxyz"]
    if stage in ("test", "pool"):
        return [DATA / f"{stage}.extxyz"]
    return [DATA / "manifest.json"]


def run_stage(stage: str, els, args) -> None:
    outs = outputs(stage)
    if stage != "manifest" and all(p.exists() for p in outs):
        print(f"[{stage}] exists, skipped", flush=True)
        return
    print(f"[{stage}] running", flush=True)
    t0 = time.time()
    if stage == "lattice":
        update = stage_lattice(els, args)
        update_stats(stage, {"time_s": round(time.time() - t0, 1), **update})
        print(f"[{stage}] done in {time.time() - t0:.0f} s", flush=True)
        return
    if stage == "manifest":
        write_manifest(els)
        return
    if stage in ("base", "split"):
        names = TRAIN_PARTS + (("md",) if stage == "split" else ())
        frames = [fr for n in names for fr in read(PARTS / f"{n}.extxyz", ":")]
        train = [fr for fr in frames if not is_valid(fr.info["config_id"])]
        valid = [fr for fr in frames if is_valid(fr.info["config_id"])]
        write_atomic(outs[0], train)
        write_atomic(outs[1], valid)
        update_stats(stage, {"time_s": round(time.time() - t0, 1), "train": len(train), "valid": len(valid)})
        print(f"[{stage}] train {len(train)}, valid {len(valid)}", flush=True)
        return
    lat = load_lattice()
    labeller = Labeller({int(k): v for k, v in lat["e_isolated"].items()})
    gen = {
        "elemental": lambda: gen_elemental("elemental", els, lat, args.elemental_variants),
        "compounds": lambda: gen_compounds("compounds", els, {k: args.per_prototype for k in TRAIN_PROTOS}),
        "substitution": lambda: gen_substitution("substitution", els, lat, args.substitutions),
        "defects": lambda: gen_defects("defects", els, lat, 3, 3),
        "clusters": lambda: gen_clusters("clusters", els, 4),
        "md": lambda: gen_md("md", els, lat, (300.0, 800.0, 1500.0, 2500.0), args.md_binary_runs),
        "test": lambda: gen_test(els, lat),
        "pool": lambda: gen_pool(els, lat),
    }[stage]()
    frames = label_all(gen, labeller)
    write_atomic(outs[0], frames)
    info = {
        "time_s": round(time.time() - t0, 1),
        "configs": len(frames),
        "atoms": int(sum(len(f) for f in frames)),
        "dropped": labeller.dropped,
        "dropped_detail": labeller.dropped_detail[:200],
    }
    if MD_ABORTED:
        info["md_runs_stopped"] = len(MD_ABORTED)
        info["md_runs_stopped_detail"] = MD_ABORTED[:200]
        MD_ABORTED.clear()
    update_stats(stage, info)
    print(
        f"[{stage}] {len(frames)} configurations, {info['atoms']} atoms, dropped {labeller.dropped}, "
        f"{info['time_s']} s",
        flush=True,
    )


def write_manifest(els) -> None:
    import ase
    import torch

    import facet_calc
    from facet_calc.potential import sha256_of

    stats = json.loads((DATA / "stats.json").read_text()) if (DATA / "stats.json").exists() else {}
    files = {}
    for name in ("train_base", "valid_base", "train", "valid", "test", "pool"):
        path = DATA / f"{name}.extxyz"
        if not path.exists():
            continue
        frames = read(path, ":")
        per_type: dict[str, int] = {}
        per_el: dict[str, int] = {}
        for fr in frames:
            per_type[fr.info["config_type"]] = per_type.get(fr.info["config_type"], 0) + 1
            for z in set(fr.numbers):
                per_el[chemical_symbols[z]] = per_el.get(chemical_symbols[z], 0) + 1
        missing = [chemical_symbols[z] for z in els if chemical_symbols[z] not in per_el]
        files[name] = {
            "file": path.name,
            "sha256": sha256_of(path),
            "configs": len(frames),
            "atoms": int(sum(len(f) for f in frames)),
            "with_stress": int(sum("REF_stress" in f.info for f in frames)),
            "per_config_type": dict(sorted(per_type.items())),
            "configs_per_element": {chemical_symbols[z]: per_el.get(chemical_symbols[z], 0) for z in els},
            "elements_missing": missing,
        }
    other_files = {
        str(p.relative_to(DATA)): sha256_of(p)
        for p in [DATA / "lattice.json", *sorted(PARTS.glob("*.extxyz"))]
        if p.exists()
    }
    manifest = {
        "teacher": TEACHER,
        "labels": "teacher single points, float64",
        "elements": len(els),
        "guard": {"max_force_eV_A": F_MAX, "energy_per_atom_rel_isolated_eV": E_REL_RANGE},
        "files": files,
        "other_files_sha256": other_files,
        "stages": {k: {kk: vv for kk, vv in v.items() if not kk.endswith("_detail")} for k, v in stats.items()},
        "dropped_total": {
            k: sum(v.get("dropped", {}).values()) for k, v in stats.items() if isinstance(v.get("dropped"), dict)
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "ase": ase.__version__,
            "torch": torch.__version__,
            "facet_calc": getattr(facet_calc, "__version__", "?"),
        },
    }
    (DATA / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"[manifest] {DATA / 'manifest.json'}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="all", help=f"comma-separated, from: all, {', '.join(ORDER)}")
    parser.add_argument("--elemental-variants", type=int, default=4, help="per element and structure")
    parser.add_argument("--per-prototype", type=int, default=240, help="compound configurations per prototype")
    parser.add_argument("--substitutions", type=int, default=1200)
    parser.add_argument("--md-binary-runs", type=int, default=100)
    parser.add_argument("--data-dir", default=None, help="output folder (default: data/ beside this script)")
    parser.add_argument("--only-elements", default=None, help="comma-separated symbols (for quick trials)")
    args = parser.parse_args(argv)
    stages = ORDER if args.stages == "all" else tuple(s.strip() for s in args.stages.split(","))
    unknown = set(stages) - set(ORDER)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}")
    if args.data_dir:
        global DATA, PARTS
        DATA = Path(args.data_dir).resolve()
        PARTS = DATA / "parts"
    PARTS.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # MaxwellBoltzmannDistribution
    warnings.filterwarnings("ignore", message=".*closer than.*")  # the guard counts what matters
    els = elements()
    if args.only_elements:
        els = [atomic_numbers[s] for s in args.only_elements.split(",")]
    for stage in ORDER:
        if stage in stages:
            run_stage(stage, els, args)


if __name__ == "__main__":
    sys.exit(main())
