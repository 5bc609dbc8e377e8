"""What the structure commands read and write: the input structures (format from the suffix
when the name would mislead ASE), the ``--out`` folder, structures with their results (always
extxyz, named explicitly) and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, reported as one sentence."""


def input_format(path: str | Path) -> str | None:
    """The ASE format to read ``path`` as, where its name and suffix disagree; else None (ASE
    guesses). ASE matches name patterns before suffixes, so ``POSCAR_relaxed.extxyz`` would be
    read as VASP; the suffix names the format the file was written in."""
    from ase.io.formats import extension2format, get_compression, ioformats

    root, _ = get_compression(str(path))
    basename = Path(root).name
    suffix = Path(basename).suffix.lstrip(".").lower()
    # a suffix is a registered extension (.xyz -> extxyz) or a format's own name (.extxyz)
    by_suffix = extension2format[suffix].name if suffix in extension2format else None
    if by_suffix is None and suffix in ioformats:
        by_suffix = suffix
    by_name = next((f.name for f in ioformats.values() if f.match_name(basename)), None)
    return by_suffix if by_suffix is not None and by_name is not None and by_name != by_suffix else None


def why_not_a_file(path: Path) -> str:
    """Why ``path`` is not a readable file, as the end of a sentence: a folder, a symlink loop,
    a link to nothing, or missing."""
    import os

    from ..paths import broken_link

    if path.is_dir():
        return "is a folder, not a file; name a structure file inside it"
    if why := broken_link(path, "point it at a real file"):
        return why
    try:
        os.stat(path)
    except OSError:
        return "does not exist"
    return "is not a regular file (a device or a pipe); name a structure file"


def read_structures(path: str, frame: str | None = None) -> list:
    """Every structure in ``path`` (or the one ``frame`` picks), as a list of Atoms."""
    from ase.io import read

    if not Path(path).is_file():
        raise UserError(f"structure file {path!r} {why_not_a_file(Path(path))}")
    index = ":" if frame is None else frame
    try:
        frames = read(path, index=index, format=input_format(path))
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


def prepare_out(out: Path, outputs: list[str], overwrite: bool) -> Path:
    """Create the folder ``out``; refuse one that holds any of ``outputs`` unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder; name a folder (it is created if missing)")
    existing = [name for name in outputs if (out / name).exists()]
    if existing and not overwrite:
        raise UserError(
            f"{str(out)!r} already holds results ({', '.join(existing)}); choose another --out or pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {str(out)!r}: {err.strerror or err}") from err
    return out


def with_results(atoms, calculator):
    """A copy of ``atoms`` carrying ``calculator``'s energy (eV), forces (eV/A) and, for a cell of
    full rank, stress (eV/A^3, Voigt) as a SinglePointCalculator (what extxyz writes)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    probe = atoms.copy()
    probe.calc = calculator
    results = {"energy": probe.get_potential_energy(), "forces": probe.get_forces()}
    if probe.cell.rank == 3:
        results["stress"] = probe.get_stress()
    probe.calc = SinglePointCalculator(probe, **results)
    return probe


def write_structures(path: Path, images) -> None:
    """Write ``images`` (Atoms or a list) as extxyz, named explicitly: ASE would guess VASP from a
    name such as ``POSCAR_single.extxyz`` and drop the results attached to them."""
    from ase.io import write

    write(path, images, format="extxyz")


def format_summary(value, indent: int = 0) -> str:
    """JSON text of ``value`` laid out for reading: a list of numbers on one line, a matrix
    (a list of such lists) one aligned row per line, like ``json.dumps(value, indent=1)``
    otherwise."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(key)}: {format_summary(v, indent + 1)}" for key, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and not _flat(value):
        if all(isinstance(row, list) and row and _flat(row) for row in value):  # a matrix
            cells = [[json.dumps(v) for v in row] for row in value]
            width = max(len(c) for row in cells for c in row)
            lines = [inner + "[" + ", ".join(c.rjust(width) for c in row) + "]" for row in cells]
        else:
            lines = [inner + format_summary(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(lines) + f"\n{pad}]"
    return json.dumps(value)


def _flat(items: list) -> bool:
    return not any(isinstance(v, (list, dict)) for v in items)


def write_summary(out: Path, summary: dict) -> None:
    """``summary.json`` in ``out`` (units in the key names), also printed."""
    text = format_summary(summary)
    (out / "summary.json").write_text(text + "\n")
    print(text)
