"""Fidelity of the MACE converter on random-weight models with published MACE hyperparameters.

    PYTHONPATH=$PWD /work/venvs/mace/bin/python benchmarks/mace_fidelity.py [--layouts mace-mp-0-small ...]
        [--elements 1 6 8 14] [--json out.json]

Needs mace-torch (a venv with ``mace-torch==0.3.16``). For each layout of
``facet_calc.convert.random_mace.LAYOUTS`` mace-torch builds a random-weight ``ScaleShiftMACE``
for the given elements, which is saved as a ``.model`` file, read back (unpickled: the file was
made here), converted, and compared with mace-torch's ``MACECalculator`` in float64 and float32
on ``fidelity_structures_for`` of its elements (8 structures), every head. Prints one Markdown
row per layout: max deviations (energy meV/atom, forces eV/A, stress GPa).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def measure(layout: str, elements: list[int], folder: Path) -> dict:
    from facet_calc.convert.fidelity import fidelity_structures_for, measure_fidelity
    from facet_calc.convert.mace import convert_mace, load_mace_model, mace_reference
    from facet_calc.convert.random_mace import random_mace_model

    start = time.perf_counter()
    path = folder / f"{layout}.model"
    random_mace_model(layout, elements, seed=0, path=str(path))
    source = load_mace_model(str(path))
    config, tensors = convert_mace(source)
    heads = config.get("heads", [])
    names = dict(zip(heads, config.get("source_heads", [])))
    figures = measure_fidelity(config, tensors, lambda dtype, h: mace_reference(source, dtype, names.get(h)),
                               fidelity_structures_for(config["atomic_numbers"]), heads or [None])  # fmt: skip
    return {"layout": layout, "figures": figures, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    from facet_calc.convert.random_mace import LAYOUTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    published = [k for k in LAYOUTS if not k.startswith("tiny")]
    parser.add_argument("--layouts", nargs="*", default=published)
    parser.add_argument("--elements", nargs="*", type=int, default=[1, 6, 8, 14])
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    rows = []
    print("| layout | f64 dE meV/atom | f64 dF eV/A | f64 dS GPa | f32 dE meV/atom | f32 dF eV/A | f32 dS GPa | s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts:
            row = measure(layout, args.elements, Path(tmp))
            rows.append(row)
            f = row["figures"]
            cells = []
            for dtype in ("float64", "float32"):
                d = f[dtype]
                cells += [f"{d['max_abs_energy_mev_per_atom']:.1e}", f"{d['max_abs_force_mev_per_A'] / 1e3:.1e}",
                          f"{d['max_abs_stress_gpa']:.1e}"]  # fmt: skip
            print(f"| {layout} | " + " | ".join(cells) + f" | {row['seconds']:.0f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
