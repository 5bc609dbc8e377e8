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


def read_structures(path: str, frame: str | None = None) -> list:
    """Every structure in ``path`` (or the one ``frame`` picks), as a list of Atoms."""
    from ase.io import read

    if not Path(path).is_file():
        raise UserError(f"structure file {path!r} does not exist")
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


def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
