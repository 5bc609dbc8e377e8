"""The commands about potentials themselves: ``list``, ``info``, ``export-lammps-mliap`` and
``convert``."""

from __future__ import annotations

import json


def list_names(args) -> int:
    # reads index.json only: no torch, so `list` is fast
    from ..index import list_potentials, list_user_potentials, user_potentials_dir

    print("\n".join(list_potentials()))
    mine = list_user_potentials()
    if mine:  # apart from the shipped ones, under a header line
        print(f"\n# yours, in {user_potentials_dir()}:")
        print("\n".join(mine))
    return 0


def convert(args) -> int:
    from ..convert import convert as run_convert
    from .files import UserError

    try:
        done = run_convert(args.checkpoint, args.out, name=args.name, head=args.head, overwrite=args.overwrite,
                           licence=args.licence)  # fmt: skip
    except ImportError as err:  # sevenn is an optional dependency
        raise UserError(str(err)) from err
    f64, f32 = done.fidelity["float64"], done.fidelity["float32"]
    for dtype, fig in (("float64", f64), ("float32", f32)):
        print(f"{dtype}: max |dE| {fig['max_abs_energy_mev_per_atom']:.2e} meV/atom, max |dF| "
              f"{fig['max_abs_force_mev_per_A']:.2e} meV/A, max |dstress| {fig['max_abs_stress_gpa']:.2e} GPa "
              f"over {fig['n_structures']} structures")  # fmt: skip
    how = f'FacetCalculator("{done.name}")' if args.name else f'FacetCalculator("{done.path}")'
    heads = f"; heads {', '.join(done.heads)}" if done.heads else ""
    print(f"wrote {done.path}{heads}; load it with {how}")
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
