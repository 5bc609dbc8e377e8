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
from facet_calc.nn import build_model
from facet_calc.potential import Potential, load_parameters, save_potential
from facet_calc.testing import compare_calculators, fidelity_structures

REPO = Path(__file__).resolve().parent.parent
CARD_TEMPLATE = (REPO / "models" / "card_template.md").read_text()


def _calculator(config, tensors, dtype: str, head: str | None) -> FacetCalculator:
    model = build_model(config, getattr(torch, dtype))
    load_parameters(model, tensors)
    model = model.to(getattr(torch, dtype)).eval().requires_grad_(False).set_backend("auto")
    if head is not None:
        model.set_head(config["heads"].index(head))
    return FacetCalculator(Potential(config["name"], config, model, Path("."), head=head))


def measure_fidelity(config, tensors, source: str, head: str | None = None) -> dict:
    """Max deviations from the source model over the fidelity structures, per dtype."""
    figures = {}
    modal = None if head is None else {m.lower(): m for m in ("PBE", "R2SCAN")}.get(head, head)
    for dtype in ("float64", "float32"):
        calc = _calculator(config, tensors, dtype, head)
        if dtype == "float64":
            reference = SevenNetReference(source, "float64", modal=modal)
        else:
            from sevenn.calculator import SevenNetCalculator

            reference = SevenNetCalculator(source, device="cpu", modal=modal)  # sevenn's stock float32 path
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
        print(head or "", dtype, json.dumps(figures[dtype]), flush=True)
    return figures


def eos_against_wien2k(config, tensors, head: str | None) -> dict:
    """V0 and B0 of Al, Cu, Si (relaxed, then ase.eos) against WIEN2k all-electron PBE."""
    from ase.collections import dcdft

    from facet_calc.workflows import eos, relax

    calc = _calculator(config, tensors, "float64", head)
    rows = {}
    for element in ("Al", "Cu", "Si"):
        relaxed = relax(dcdft[element], calc, fmax=1e-3, progress=False).atoms
        result = eos(relaxed, calc, progress=False)
        ref = dcdft.data[element]
        rows[element] = {
            "v0_per_atom_A3": result.v0_per_atom_a3,
            "wien2k_v0_per_atom_A3": ref["wien2k_volume"],
            "b0_GPa": result.b0_gpa,
            "wien2k_b0_GPa": ref["wien2k_B"],
        }
    return rows


def heads_section(recipe: dict, figures: dict) -> str:
    """Card section for a multi-fidelity potential: fidelity and EOS per head."""
    if "heads" not in figures:
        return ""
    lines = ["## Heads (fidelities)\n",
             "Pick one with `FacetCalculator(..., head=\"r2scan\")` (case-insensitive; default",
             f"`{figures['default_head']}`) or `facet-calc ... --head r2scan`. Float64 fidelity to sevenn's",
             "model with the same modal, and the equation of state of Al, Cu and Si (relaxed, then",
             "`facet_calc.workflows.eos`) against WIEN2k all-electron PBE (ASE's `dcdft` collection):\n",
             "| head | max dE (meV/atom) | max dF (meV/A) | max dstress (GPa) | Al V0 / B0 | Cu V0 / B0 | Si V0 / B0 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for head, fig in figures["heads"].items():
        f64 = fig["float64"]
        cells = [f"{r['v0_per_atom_A3']:.2f} A^3 / {r['b0_GPa']:.0f} GPa" for r in fig["eos"].values()]
        lines.append(f"| `{head}` | {f64['max_abs_energy_mev_per_atom']:.2e} | {f64['max_abs_force_mev_per_A']:.2e} | "
                     f"{f64['max_abs_stress_gpa']:.2e} | " + " | ".join(cells) + " |")  # fmt: skip
    wien = next(iter(figures["heads"].values()))["eos"]
    cells = [f"{r['wien2k_v0_per_atom_A3']:.2f} A^3 / {r['wien2k_b0_GPa']:.0f} GPa" for r in wien.values()]
    lines.append("| WIEN2k (PBE) | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def accuracy_section(name: str, recipe_dir: Path) -> str:
    """Card section from ``<recipe folder>/accuracy.json`` (benchmarks/accuracy.py --write)."""
    path = recipe_dir / "accuracy.json"
    lines = ["## Accuracy (measured here)\n",
             "The accuracy is that of the source model (see the SevenNet papers and Matbench Discovery);",
             "the conversion changes predictions by the amounts above.\n"]  # fmt: skip
    if not path.exists():
        return "\n".join(lines) + "\n\n"
    heads = json.loads(path.read_text())["heads"]
    sys.path.insert(0, str(REPO / "benchmarks"))
    from accuracy import markdown_tables

    labelled = {name if head == "default" else f"{name}:{head}": r for head, r in heads.items()}
    lines += [f"Measured by `python benchmarks/accuracy.py --potentials {name} --write` (float64, 0 K, no",
              "zero-point motion; the references and their sources are in that script):\n",
              markdown_tables(labelled)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, help="recipe folder, e.g. models/7net-0-spline")
    parser.add_argument("--out", type=Path, default=REPO / "potentials", help="potentials folder")
    parser.add_argument(
        "--card-only", action="store_true", help="rewrite the card from the recipe and fidelity.json (no measurement)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    recipe = json.loads((args.recipe / "recipe.json").read_text())

    config, tensors = convert_sevennet(recipe["source"], min_intervals=recipe["min_intervals"])
    config["name"] = recipe["name"]
    config["version"] = recipe["version"]
    config["description"] = recipe["description"]
    config["source"] = {
        "model": recipe["source_title"],
        "file": recipe["source_file"],
        "sevenn_version": sevenn.__version__,
        "license": "MIT (SevenNet, Seoul National University)",
        "training_data": recipe["training_data"],
    }
    if args.card_only:
        figures = json.loads((args.recipe / "fidelity.json").read_text())
    elif "heads" in config:
        per_head = {}
        for head in config["heads"]:
            per_head[head] = measure_fidelity(config, tensors, recipe["source"], head)
            per_head[head]["eos"] = eos_against_wien2k(config, tensors, head)
            print(head, json.dumps(per_head[head]["eos"]), flush=True)
        default = per_head[config["default_head"]]
        # the headline figures: the worst over the heads
        figures = {
            dtype: {key: max(fig[dtype][key] for fig in per_head.values()) for key in default[dtype]}
            for dtype in ("float64", "float32")
        }
        figures["heads"] = per_head
        figures["default_head"] = config["default_head"]
    else:
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
        smoothness=(f"C1 only at {', '.join(f'{b} A' for b in radial['c1_only_at'])}, where the source cutoff "
                    "function itself has a jump in its second derivative" if radial["c1_only_at"]
                    else "C2 everywhere (the source cutoff function is smooth)"),  # fmt: skip
        n_structures=f64["n_structures"],
        e64=f64["max_abs_energy_mev_per_atom"],
        f64=f64["max_abs_force_mev_per_A"],
        s64=f64["max_abs_stress_gpa"],
        e32=f32["max_abs_energy_mev_per_atom"],
        f32=f32["max_abs_force_mev_per_A"],
        s32=f32["max_abs_stress_gpa"],
        recipe=args.recipe.as_posix().split("models/")[-1],
        version=recipe["version"],
        citation=recipe["citation"],
        training_data=recipe["training_data"],
        heads_section=heads_section(recipe, figures),
        accuracy_section=accuracy_section(recipe["name"], args.recipe),
        weaknesses=recipe["weaknesses"],
    )
    shipped = args.out / recipe["name"] / "weights.safetensors"
    if args.card_only and shipped.exists():
        # the card (and version) only: the weights stay the bytes fidelity.json was measured on
        # (a re-conversion agrees to ~1e-12 in the spline slopes, not bit for bit)
        from safetensors.torch import load_file

        tensors = load_file(shipped)
    save_potential(args.out / recipe["name"], config, tensors, card)
    print(f"wrote {args.out / recipe['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
