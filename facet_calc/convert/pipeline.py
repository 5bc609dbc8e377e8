"""Checkpoint file -> measured, written potential folder: what ``facet-calc convert`` does.

:func:`convert` detects the source format, converts (:mod:`.sevennet`), measures the fidelity
against the source model in float64 and float32 (:mod:`.fidelity`) and only then writes the
potential folder (config, safetensors weights, card) with its sha256 digests in the
``index.json`` beside it, so that ``FacetCalculator(folder)`` (or, with ``name=``,
``FacetCalculator(name)``) loads it. Reading the checkpoint unpickles it with
``torch.load(weights_only=True)`` (tensors, containers and numpy arrays only), and only for the
file the user names; loading the converted potential never unpickles anything.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..potential import sha256_of
from .fidelity import BOUNDS, KEYS, check_bounds, fidelity_structures_for, measure_fidelity
from .sevennet import DEFAULT_MIN_INTERVALS, load_checkpoint_dict

#: files a conversion writes into its folder
WRITTEN = ("config.json", "weights.safetensors", "card.md")


@dataclass
class Conversion:
    """What :func:`convert` wrote: the folder, the potential's name, its heads and the figures."""

    path: Path
    name: str
    heads: list[str]
    fidelity: dict[str, Any]


def detect_source(path: str | Path) -> str:
    """``"mace"`` for a mace-torch model file (``.model``/``.pt``: a pickled module, detected by
    the mace-torch classes its pickle names, without unpickling), ``"sevennet"`` for a SevenNet
    checkpoint; ``ValueError`` naming the problem for anything else (a truncated or foreign
    file, a pickle that needs code)."""
    from .mace import is_mace_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if is_mace_file(str(path)):
        return "mace"
    load_checkpoint_dict(str(path))  # raises for MACE, truncated, foreign and code-carrying files
    return "sevennet"


def _bundled_checkpoint_digests() -> dict[str, str]:
    """sha256 -> file name of the checkpoints inside the installed sevenn wheel."""
    import sevenn

    root = Path(sevenn.__file__).parent / "pretrained_potentials"
    return {sha256_of(p): str(p.relative_to(root.parent.parent)) for p in root.glob("*/*.pth")}


def _licence(digest: str, given: str | None) -> str:
    if given:
        return given
    bundled = _bundled_checkpoint_digests().get(digest)
    if bundled:
        return f"MIT (SevenNet, Seoul National University, MDIL): the checkpoint is `{bundled}` of the sevenn wheel"
    return ("not recorded in the checkpoint. SevenNet's published checkpoints (SevenNet-0, -l3i5, -MF-0, -MF-ompa, "
            "-omat, -omni) are released by MDIL (Seoul National University) with sevenn under the MIT licence; check "
            "the terms of the release you downloaded. A checkpoint you trained is yours. Record it with "
            "`facet-calc convert ... --licence TEXT`")  # fmt: skip


def _card(name: str, config: dict[str, Any], source: dict[str, Any], figures: dict[str, Any]) -> str:
    from ase.data import chemical_symbols

    radial = config["radial"]
    heads = config.get("heads")
    rows = []
    for dtype in ("float64", "float32"):
        fig, bound = figures[dtype], BOUNDS[dtype]
        rows.append(f"| {dtype} | {fig[KEYS[0]]:.2e} ({bound[0]:g}) | {fig[KEYS[1]]:.2e} ({bound[1]:g}) | "
                    f"{fig[KEYS[2]]:.2e} ({bound[2]:g}) |")  # fmt: skip
    elements = " ".join(chemical_symbols[z] for z in sorted(config["atomic_numbers"]))
    table = [
        ("Source checkpoint", f"`{source['file']}`, sha256 `{source['sha256']}`, written by sevenn "
                              f"{source['checkpoint_sevenn_version']}"),
        ("Licence of the source", source["license"]),
        ("Please cite", "SevenNet (Park et al., J. Chem. Theory Comput. 20, 4857 (2024)), the paper of the "
                        "checkpoint you converted, and the Facet paper (Miklaucic et al., arXiv:2509.08418, 2025)"),
        ("Elements", f"{len(config['atomic_numbers'])}: {elements}"),
        ("Cutoff", f"{config['cutoff']} A"),
        ("Architecture", f"NequIP-style (facet-spline-nequip), {len(config['layers'])} interaction layers, edge "
                         f"harmonics {config['irreps_sh']}"),
        ("Radial spline", f"{radial['n_intervals']} uniform intervals on [0, cutoff]; C1 only at "
                          f"{radial['c1_only_at'] or 'nowhere'}"),
        ("dtype advice", "float32 for MD and relaxations; float64 for phonons, elastic constants and finite "
                         "differences"),
    ]  # fmt: skip
    if heads:
        table.insert(5, ("Heads", f"{', '.join(heads)} (default `{config['default_head']}`; pick with `head=`)"))
    return f"""# {name}

SevenNet checkpoint `{source["file"]}` converted by `facet-calc convert` (facet_calc {source["facet_calc_version"]},
sevenn {source["sevenn_version"]}) on {source["converted"]}: every radial MLP replaced by an exact C2 cubic
spline table through float64 samples of it; everything else carried over unchanged.

| | |
|---|---|
{chr(10).join(f"| {key} | {value} |" for key, value in table)}

## Measured fidelity to the source model (before writing)

Largest deviation from sevenn's own model for this checkpoint (float64: sevenn's model in
float64; float32: sevenn's float32 model) over {figures["float64"]["n_structures"]} structures made of the model's
elements (`facet_calc.convert.fidelity.fidelity_structures_for`) and every head; the bound the
conversion had to meet in brackets:

| dtype | max abs dE (meV/atom) | max abs dF (meV/A) | max abs dstress (GPa) |
|---|---|---|---|
{chr(10).join(rows)}

Regenerate with `facet-calc convert {Path(source["file"]).name} --out <folder>`.
"""


def convert(
    path: str | Path,
    out: str | Path | None = None,
    *,
    name: str | None = None,
    head: str | None = None,
    overwrite: bool = False,
    licence: str | None = None,
    min_intervals: int = DEFAULT_MIN_INTERVALS,
    bounds: dict[str, tuple[float, float, float]] | None = None,
) -> Conversion:
    """Convert the checkpoint at ``path`` into a potential folder, after measuring it.

    Args:
        path: a SevenNet ``.pth`` checkpoint (any layout the converter supports; see
            :func:`facet_calc.convert.sevennet.unsupported_pieces`). MACE files are refused.
        out: folder to write (its ``index.json`` goes beside it, in its parent); load it with
            ``FacetCalculator(out)``.
        name: install into the user potential directory (:func:`facet_calc.index.user_potentials_dir`)
            under this name instead of ``out``, so that ``FacetCalculator(name)`` finds it; a
            shipped potential's name is refused.
        head: the default head of a multi-fidelity checkpoint (all heads are kept).
        overwrite: replace a potential folder that exists (otherwise refused).
        licence: the licence of the checkpoint, for the card (default: what is known).
        min_intervals: knot intervals of the spline tables at least.
        bounds: fidelity bounds per dtype (default :data:`.fidelity.BOUNDS`).

    Raises ``ValueError`` (unsupported layout, fidelity above the bound, bad name, folder
    exists) with nothing written. Returns a :class:`Conversion`.
    """
    from .. import __version__
    from ..index import check_user_name, user_potentials_dir
    from ..potential import save_potential
    from .reference import SevenNetReference
    from .sevennet import convert_sevennet, load_sevenn_checkpoint

    if (out is None) == (name is None):
        raise ValueError("say where to write the potential: either out=FOLDER (--out) or name=NAME (--name, installs "
                         "it in your potential directory), not both")  # fmt: skip
    if name is not None:
        check_user_name(name)
        folder = Path(user_potentials_dir()) / name
    else:
        folder = Path(out)
    folder = folder.expanduser()
    potential_name = name or folder.resolve().name
    if folder.exists() and not overwrite:
        raise ValueError(f"{folder} exists; pass overwrite=True (--overwrite) to replace the potential there")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    if folder.exists() and any(p.name not in WRITTEN for p in folder.iterdir()):
        extra = sorted(p.name for p in folder.iterdir() if p.name not in WRITTEN)
        raise ValueError(f"{folder} holds files a conversion does not write ({', '.join(extra[:5])}); not replacing it")

    if detect_source(path) == "mace":
        return _convert_mace(path, folder, potential_name, head, licence, min_intervals, bounds)
    checkpoint = load_sevenn_checkpoint(str(path))
    config, tensors = convert_sevennet(checkpoint, min_intervals=min_intervals)
    heads = list(config.get("heads", []))
    if head is not None:
        if not heads:
            raise ValueError(f"{path} has a single fidelity, so --head {head} does not apply")
        if head.lower() not in heads:
            raise ValueError(f"{path} has no head {head!r}; its heads are {', '.join(heads)}")
        config["default_head"] = head.lower()
    config["name"] = potential_name
    config["version"] = "1.0.0"
    config["description"] = f"converted from the SevenNet checkpoint {Path(path).name}"

    modal_by_head = {m.lower(): m for m in (checkpoint.config.get("_modal_map") or {})}
    structures = fidelity_structures_for(config["atomic_numbers"])

    def reference(dtype: str, head_name: str | None):
        return SevenNetReference(checkpoint, dtype, modal=modal_by_head.get(head_name) if head_name else None)

    figures = measure_fidelity(config, tensors, reference, structures, heads or [None])
    check_bounds(figures, bounds or BOUNDS)

    import sevenn

    digest = sha256_of(Path(path))
    config["source"] = {
        "model": "SevenNet checkpoint",
        "file": Path(path).name,
        "sha256": digest,
        "sevenn_version": sevenn.__version__,
        "checkpoint_sevenn_version": str(checkpoint.config.get("version", "unknown")),
        "license": _licence(digest, licence),
        "facet_calc_version": __version__,
        "converted": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    config["fidelity"] = {k: figures[k] for k in ("float64", "float32")}
    card = _card(potential_name, config, config["source"], figures)
    if folder.exists():
        shutil.rmtree(folder)  # only our own three files are in it (checked above)
    folder.parent.mkdir(parents=True, exist_ok=True)
    save_potential(folder, config, tensors, card)
    return Conversion(path=folder, name=potential_name, heads=heads, fidelity=json.loads(json.dumps(figures)))


def _mace_card(name: str, config: dict[str, Any], source: dict[str, Any], figures: dict[str, Any]) -> str:
    rows = []
    for dtype in ("float64", "float32"):
        fig, bound = figures[dtype], BOUNDS[dtype]
        rows.append(f"| {dtype} | {fig[KEYS[0]]:.2e} ({bound[0]:g}) | {fig[KEYS[1]]:.2e} ({bound[1]:g}) | "
                    f"{fig[KEYS[2]]:.2e} ({bound[2]:g}) |")  # fmt: skip
    heads = config.get("heads")
    return f"""# {name}

MACE model `{source["file"]}` (sha256 `{source["sha256"]}`) converted by `facet-calc convert` (facet_calc
{source["facet_calc_version"]}, mace-torch {source["mace_version"]}) on {source["converted"]}: every radial MLP
replaced by an exact C2 cubic spline table through float64 samples of it; everything else carried over unchanged
(facet-spline-mace, {len(config["layers"])} interactions, edge harmonics {config["irreps_sh"]}, cutoff
{config["cutoff"]} A, {len(config["atomic_numbers"])} elements{f", heads {', '.join(heads)}" if heads else ""}).

Licence of the source: {source["license"]}. Please cite MACE (Batatia et al., NeurIPS 2022), the paper of the
model you converted, and the Facet paper (Miklaucic et al., arXiv:2509.08418, 2025).

## Measured fidelity to mace-torch (before writing)

| dtype | max abs dE (meV/atom) | max abs dF (meV/A) | max abs dstress (GPa) |
|---|---|---|---|
{chr(10).join(rows)}

(bounds in brackets; {figures["float64"]["n_structures"]} structures of the model's elements, every head.)
"""


def _convert_mace(path, folder: Path, potential_name: str, head, licence, min_intervals, bounds) -> Conversion:
    """:func:`convert` for a mace-torch model file (unpickled: the user named it)."""
    from .. import __version__
    from ..potential import save_potential
    from .mace import DEFAULT_MIN_INTERVALS as MACE_MIN_INTERVALS
    from .mace import convert_mace, load_mace_model, mace_reference

    source_model = load_mace_model(str(path))
    config, tensors = convert_mace(source_model, min_intervals=max(min_intervals, MACE_MIN_INTERVALS))
    heads = list(config.get("heads", []))
    if head is not None:
        if head.lower() not in heads:
            raise ValueError(f"{path} has no head {head!r}; its heads are {', '.join(heads) or '(one only)'}")
        config["default_head"] = head.lower()
    mace_heads = dict(zip(heads, config.get("source_heads", [])))
    config["name"] = potential_name
    config["version"] = "1.0.0"
    config["description"] = f"converted from the MACE model {Path(path).name}"
    structures = fidelity_structures_for(config["atomic_numbers"])

    def reference(dtype, head):
        return mace_reference(source_model, dtype, mace_heads.get(head))

    figures = measure_fidelity(config, tensors, reference, structures, heads or [None])
    check_bounds(figures, bounds or BOUNDS)
    import mace

    config["source"] = {
        "model": "MACE model (mace-torch)",
        "file": Path(path).name,
        "sha256": sha256_of(Path(path)),
        "mace_version": mace.__version__,
        "license": licence or "not recorded in the model file; the MACE-MP/MPA/OMAT/OFF releases state their "
                              "licences (MIT for MACE-MP-0, ASL for MACE-OFF23, check yours); record it with --licence",
        "facet_calc_version": __version__,
        "converted": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    config["fidelity"] = {k: figures[k] for k in ("float64", "float32")}
    card = _mace_card(potential_name, config, config["source"], figures)
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    save_potential(folder, config, tensors, card)
    return Conversion(path=folder, name=potential_name, heads=heads, fidelity=json.loads(json.dumps(figures)))
