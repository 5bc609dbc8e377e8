"""Regenerate a shipped potential from the SevenNet checkpoint inside the installed `sevenn`.

    pip install -e '.[convert]'
    python models/convert_sevennet.py models/7net-0-spline

Reads ``<recipe folder>/recipe.json``, converts the checkpoint (facet_calc.convert), measures
its fidelity against the source model on ``facet_calc.testing.fidelity_structures()`` in
float64 (and float32), writes ``potentials/<name>/`` (config, weights, model card), records the
sha256 digests in ``potentials/index.json`` and the measured figures in
``<recipe folder>/fidelity.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import sevenn
import torch
from ase.data import chemical_symbols

from facet_calc.calculator import FacetCalculator
from facet_calc.convert.reference import SevenNetReference
from facet_calc.convert.sevennet import convert_sevennet
from facet_calc.nn.registry import build_model
from facet_calc.potential import Potential, load_parameters, save_potential
from facet_calc.testing import compare_calculators, fidelity_structures

REPO = Path(__file__).resolve().parent.parent
CARD_TEMPLATE = (REPO / "models" / "card_template.md").read_text()


def measure_fidelity(config, tensors, source: str) -> dict:
    """Max deviations from the source model over the fidelity structures, per dtype."""
    figures = {}
    for dtype in ("float64", "float32"):
        model = build_model(config, getattr(torch, dtype))
        load_parameters(model, tensors)
        model = model.to(getattr(torch, dtype)).eval().requires_grad_(False).set_backend("auto")
        calc = FacetCalculator(Potential(config["name"], config, model, Path(".")))
        if dtype == "float64":
            reference = SevenNetReference(source, "float64")
        else:
            from sevenn.calculator import SevenNetCalculator

            reference = SevenNetCalculator(source, device="cpu")  # sevenn's stock float32 path
        worst = {"energy_per_atom": 0.0, "force": 0.0, "stress_gpa": 0.0}
        structures = fidelity_structures()
        for _name, atoms in structures:
            err = compare_calculators(atoms, calc, reference)
            for key in worst:
                worst[key] = max(worst[key], err[key])
        figures[dtype] = {
            "n_structures": len(structures),
            "max_abs_energy_mev_per_atom": worst["energy_per_atom"] * 1e3,
            "max_abs_force_mev_per_A": worst["force"] * 1e3,
            "max_abs_stress_gpa": worst["stress_gpa"],
        }
        print(dtype, json.dumps(figures[dtype]), flush=True)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, help="recipe folder, e.g. models/7net-0-spline")
    parser.add_argument("--out", type=Path, default=REPO / "potentials", help="potentials folder")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    recipe = json.loads((args.recipe / "recipe.json").read_text())

    config, tensors = convert_sevennet(recipe["source"], min_intervals=recipe["min_intervals"])
    config["name"] = recipe["name"]
    config["description"] = recipe["description"]
    config["source"] = {
        "model": recipe["source_title"],
        "file": recipe["source_file"],
        "sevenn_version": sevenn.__version__,
        "license": "MIT (SevenNet, Seoul National University)",
        "training_data": "MPtrj (Materials Project relaxation trajectories), PBE/PBE+U",
    }
    figures = measure_fidelity(config, tensors, recipe["source"])
    (args.recipe / "fidelity.json").write_text(json.dumps(figures, indent=1) + "\n")

    f64, f32 = figures["float64"], figures["float32"]
    radial = config["radial"]
    card = CARD_TEMPLATE.format(
        name=recipe["name"],
        description=recipe["description"],
        source=recipe["source_title"],
        source_file=recipe["source_file"],
        sevenn_version=sevenn.__version__,
        n_elements=len(config["atomic_numbers"]),
        elements=" ".join(chemical_symbols[z] for z in sorted(config["atomic_numbers"])),
        cutoff=config["cutoff"],
        n_layers=len(config["layers"]),
        irreps=config["layers"][1]["irreps_in"] if len(config["layers"]) > 1 else config["irreps_embedding"],
        n_intervals=radial["n_intervals"],
        h=config["cutoff"] / radial["n_intervals"],
        c1_only_at=", ".join(f"{b} A" for b in radial["c1_only_at"]) or "nowhere",
        n_structures=f64["n_structures"],
        e64=f64["max_abs_energy_mev_per_atom"],
        f64=f64["max_abs_force_mev_per_A"],
        s64=f64["max_abs_stress_gpa"],
        e32=f32["max_abs_energy_mev_per_atom"],
        f32=f32["max_abs_force_mev_per_A"],
        s32=f32["max_abs_stress_gpa"],
        recipe=args.recipe.as_posix().split("models/")[-1],
    )
    save_potential(args.out / recipe["name"], config, tensors, card)
    print(f"wrote {args.out / recipe['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
