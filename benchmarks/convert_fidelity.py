"""Fidelity of the SevenNet converter on random-weight models of every sevenn layout.

    python benchmarks/convert_fidelity.py [--layouts base-linear-sc mf_ompa ...] [--shrink 16] [--json out.json]

For each layout of ``facet_calc.convert.random_sevennet.LAYOUTS`` (sevenn's presets and
single-piece variants) sevenn builds a random-weight model, which is saved as a sevenn
checkpoint, read back weights-only, converted, and compared with sevenn's own model (float64
and float32) on ``fidelity_structures_for`` of its elements, every head. Prints one Markdown
row per layout: max deviations (energy meV/atom, forces meV/A, stress GPa) or the refusal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def measure(layout: str, shrink: int, folder: Path) -> dict:
    from facet_calc.convert.fidelity import fidelity_structures_for, measure_fidelity
    from facet_calc.convert.random_sevennet import random_sevennet_checkpoint
    from facet_calc.convert.reference import SevenNetReference
    from facet_calc.convert.sevennet import UnsupportedLayout, convert_sevennet, load_sevenn_checkpoint

    start = time.perf_counter()
    try:
        path = random_sevennet_checkpoint(layout, folder / f"{layout}.pth", shrink=shrink)
    except Exception as err:  # sevenn itself cannot build it
        return {"layout": layout, "sevenn_error": f"{type(err).__name__}: {err}"}
    checkpoint = load_sevenn_checkpoint(str(path))
    try:
        config, tensors = convert_sevennet(checkpoint)
    except UnsupportedLayout as err:
        return {"layout": layout, "refused": str(err)}
    modal = {m.lower(): m for m in (checkpoint.config.get("_modal_map") or {})}

    def reference(dtype, head):
        return SevenNetReference(checkpoint, dtype, modal=modal.get(head) if head else None)

    figures = measure_fidelity(config, tensors, reference, fidelity_structures_for(config["atomic_numbers"]),
                               config.get("heads") or [None])  # fmt: skip
    figures["layout"] = layout
    figures["heads"] = config.get("heads", [])
    figures["seconds"] = round(time.perf_counter() - start, 1)
    return figures


def row(fig: dict) -> str:
    if "refused" in fig:  # the pieces the message names, without their explanations
        text, depth, kept = fig["refused"].split("approximately): ", 1)[-1], 0, []
        for char in text:  # drop the explanations in brackets
            depth += (char == "(") - (char == ")")
            if depth == 0 and char != ")":
                kept.append(char)
        text = "".join(kept).replace(" ;", ";").strip()
        return f"| {fig['layout']} | refused: {text} | |"
    if "sevenn_error" in fig:
        return f"| {fig['layout']} | sevenn 0.13 cannot build it ({fig['sevenn_error'][:80]}) | |"
    cells = []
    for dtype in ("float64", "float32"):
        f = fig[dtype]
        cells.append(f"{f['max_abs_energy_mev_per_atom']:.1e} / {f['max_abs_force_mev_per_A'] / 1e3:.1e} / "
                     f"{f['max_abs_stress_gpa']:.1e}")  # fmt: skip
    heads = f" (heads {', '.join(fig['heads'])})" if fig["heads"] else ""
    return f"| {fig['layout']}{heads} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    from facet_calc.convert.random_sevennet import LAYOUTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS))
    parser.add_argument("--shrink", type=int, default=16, help="divide every channel count by this")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    print("| layout | float64: dE meV/atom / dF eV/A / dstress GPa | float32: same |")
    print("|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts:
            fig = measure(layout, args.shrink, Path(tmp))
            results.append(fig)
            print(row(fig), flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
