"""ASE ``Atoms`` <-> LAMMPS files in the form the examples, tests and benchmarks use.

:func:`write_data` writes an ``atom_style atomic`` data file without rotating anything: the cell
must already be in LAMMPS' form (``a`` along x, ``b`` in the xy plane, rows
``[[lx,0,0],[xy,ly,0],[xz,yz,lz]]``), so positions, forces and stresses need no rotation to be
compared with ASE. :func:`read_dump` reads a ``dump custom`` text file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers


def write_data(path: str | Path, atoms: Atoms, elements: list[str]) -> None:
    """Write ``atoms`` as a LAMMPS data file; type ``k`` (1-based) is ``elements[k-1]``.

    Non-periodic directions keep the cell row as the box extent (pair them with ``boundary f``
    or ``s`` in the input). Raises ``ValueError`` for a cell not in LAMMPS' lower-triangular form
    or an element missing from ``elements``.
    """
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if abs(cell[0, 1]) > 1e-12 or abs(cell[0, 2]) > 1e-12 or abs(cell[1, 2]) > 1e-12:
        raise ValueError(
            f"the cell {cell.round(6).tolist()} is not in LAMMPS' form [[lx,0,0],[xy,ly,0],[xz,yz,lz]]; "
            "rotate it first (ase.geometry.cell_to_cellpar then Cell.fromcellpar gives that form)"
        )
    symbols = atoms.get_chemical_symbols()
    missing = sorted(set(symbols) - set(elements))
    if missing:
        raise ValueError(f"elements {missing} of the atoms are not among the LAMMPS types {elements}")
    types = np.array([elements.index(s) + 1 for s in symbols])
    lx, ly, lz = (float(v) for v in (cell[0, 0], cell[1, 1], cell[2, 2]))
    xy, xz, yz = (float(v) for v in (cell[1, 0], cell[2, 0], cell[2, 1]))
    lines = [
        f"{Path(path).name} written by facet_calc.lammps.inputs",
        "",
        f"{len(atoms)} atoms",
        f"{len(elements)} atom types",
    ]
    lines += [f"0.0 {lx!r} xlo xhi", f"0.0 {ly!r} ylo yhi", f"0.0 {lz!r} zlo zhi"]
    if xy or xz or yz:
        lines.append(f"{xy!r} {xz!r} {yz!r} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{k + 1} {float(atomic_masses[atomic_numbers[e]])!r}" for k, e in enumerate(elements)]
    lines += ["", "Atoms # atomic", ""]
    for i, (t, p) in enumerate(zip(types, atoms.positions)):
        lines.append(f"{i + 1} {t} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r}")
    Path(path).write_text("\n".join(lines) + "\n")


def read_dump(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Frames of a ``dump custom`` text file: per frame a dict of columns (sorted by ``id`` when
    present) plus ``timestep``."""
    frames = []
    lines = Path(path).read_text().splitlines()
    k = 0
    while k < len(lines):
        if lines[k].startswith("ITEM: TIMESTEP"):
            timestep = int(lines[k + 1])
            n = int(lines[k + 3])
            header_at = next(i for i in range(k, len(lines)) if lines[i].startswith("ITEM: ATOMS"))
            names = lines[header_at].split()[2:]
            data = np.array([line.split() for line in lines[header_at + 1 : header_at + 1 + n]], dtype=np.float64)
            data = data.reshape(n, len(names))
            frame = {name: data[:, c] for c, name in enumerate(names)}
            if "id" in frame:
                order = np.argsort(frame["id"])
                frame = {name: col[order] for name, col in frame.items()}
            frame["timestep"] = timestep
            frames.append(frame)
            k = header_at + 1 + n
        else:
            k += 1
    return frames
