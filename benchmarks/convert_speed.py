"""Speed of a converted SevenNet checkpoint against sevenn running the same checkpoint.

    python benchmarks/convert_speed.py                      # the SevenNet-omat layout, 216 SiO2-like atoms
    python benchmarks/convert_speed.py --layout mf_ompa --sizes 64 216 --dtype float32

sevenn builds a random-weight model of the layout at full size (the published hyperparameters,
``facet_calc.convert.random_sevennet.LAYOUTS``) for Si and O; it is saved as a checkpoint,
converted with ``facet_calc.convert.convert`` (which measures its fidelity first), and both
calculators evaluate energy + forces + stress of the same rattled Si cells with every fifth atom
O. Prints ms/step and the ratio (sevenn / facet_calc; > 1: facet_calc faster), same process,
one thread unless ``--threads``. Needs the test extra (sevenn).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import silicon, time_steps  # noqa: E402

from facet_calc import FacetCalculator  # noqa: E402
from facet_calc.convert import convert  # noqa: E402
from facet_calc.convert.random_sevennet import random_sevennet_checkpoint  # noqa: E402
from facet_calc.convert.reference import SevenNetReference  # noqa: E402
from facet_calc.convert.sevennet import load_sevenn_checkpoint  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", default="omat", help="a layout of random_sevennet.LAYOUTS (default: omat)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[216])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from sevenn.calculator import SevenNetCalculator

    with tempfile.TemporaryDirectory() as tmp:
        path = random_sevennet_checkpoint(args.layout, Path(tmp) / "model.pth", elements=("Si", "O"), shrink=1)
        done = convert(path, Path(tmp) / "spline")
        head = done.heads[0] if done.heads else None
        facet = FacetCalculator(str(done.path), dtype=args.dtype, head=head)
        modal = {}
        if head:  # the source's own spelling of the head's fidelity
            modal_map = load_sevenn_checkpoint(path).config["_modal_map"]
            modal = {"modal": next(name for name in modal_map if name.lower() == head)}
        if args.dtype == "float64":
            theirs = SevenNetReference(str(path), "float64", device="cpu", **modal)
        else:
            theirs = SevenNetCalculator(str(path), device="cpu", **modal)
        print(f"# layout {args.layout} (full size, Si+O, random weights); dtype={args.dtype}; threads={args.threads}")
        print(f"# fidelity float64 {done.fidelity['float64']}")
        print(f"{'atoms':>7} {'facet ms/step':>14} {'sevenn ms/step':>15} {'speed-up':>9}")
        for n in args.sizes:
            atoms = silicon(n)
            atoms.symbols[::5] = "O"
            t_facet = time_steps(atoms, facet, args.repeats)
            t_sevenn = time_steps(atoms, theirs, args.repeats)
            print(f"{len(atoms):>7} {t_facet:>14.1f} {t_sevenn:>15.1f} {t_sevenn / t_facet:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
