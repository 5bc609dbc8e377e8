"""The commands about potentials themselves: ``list``, ``info`` and ``export-lammps-mliap``."""

from __future__ import annotations

import json


def list_names(args) -> int:
    from ..index import list_potentials  # reads index.json only: no torch, so `list` is fast

    print("\n".join(list_potentials()))
    return 0


def info(args) -> int:
    from ..potential import load_potential

    potential = load_potential(args.name, backend="e3nn")
    meta = {k: potential.config[k] for k in ("name", "description", "cutoff", "source") if k in potential.config}
    meta["n_elements"] = len(potential.atomic_numbers)
    print(json.dumps(meta, indent=1))
    card = potential.path / "card.md"
    if card.is_file():
        print(card.read_text())
    return 0


def export_lammps_mliap(args) -> int:
    from ..lammps.mliap import export

    path = export(args.potential, args.out, dtype=args.dtype, device=args.device)
    print(f"wrote {path}; in LAMMPS: pair_style mliap unified {path} 0, then pair_coeff * * <elements>")
    return 0
