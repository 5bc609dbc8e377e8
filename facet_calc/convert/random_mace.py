"""Random-weight MACE models built by mace-torch itself, with published hyperparameters.

:func:`random_mace_model` builds mace-torch's ``ScaleShiftMACE`` with the hyperparameters of
one of :data:`LAYOUTS` for a few elements, keeps mace-torch's random initial weights, draws
random E0s, scale and shift, and (optionally) saves it as a ``.model`` file the way mace-torch
does (``torch.save(model)``). Needs ``mace-torch``.

Where the hyperparameters come from (channels x max_L, r_max, radial basis, correlation,
interaction blocks):

* MACE-MP-0 small / medium / large: the checkpoint names in ``mace/calculators/
  foundations_models.py`` (``mace-128-L0``, ``mace-128-L1``; large: 128 channels, L = 2) and the
  MACE-MP-0 paper (Batatia et al., arXiv:2401.00096: r_max 6 A, 8 Bessel functions, polynomial
  cutoff p = 5, correlation 3, 2 interactions, max_ell 3, residual interaction blocks, a
  16-unit SiLU readout MLP).
* MACE-MPA-0 / MACE-OMAT-0 (medium): the same model shape as MP-0 medium (128x0e+128x1o, r_max
  6 A) with 10 Bessel functions (mace-mp release notes). The released checkpoints also carry
  the ZBL pair repulsion and the Agnesi distance transform (the "0b" line), which the
  converter refuses by name: these random models test the core layout only.
* MACE-OFF23 small: 96x0e, r_max 5 A, correlation 3, 2 interactions, plain
  ``RealAgnosticInteractionBlock`` first (mace's default ``interaction_first``; Kovacs et al.,
  arXiv:2312.15211).

These are recalled from the cited sources, not read from the released files (no download is
possible here); a real checkpoint's own hyperparameters are what ``convert`` reads anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MP0 = {"r_max": 6.0, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 3, "num_interactions": 2,
       "correlation": 3, "radial_MLP": [64, 64, 64], "MLP_irreps": "16x0e", "first": "residual"}  # fmt: skip

#: name -> hyperparameters (see the module docstring for the sources)
LAYOUTS: dict[str, dict[str, Any]] = {
    "mace-mp-0-small": {**MP0, "hidden_irreps": "128x0e"},
    "mace-mp-0-medium": {**MP0, "hidden_irreps": "128x0e+128x1o"},
    "mace-mp-0-large": {**MP0, "hidden_irreps": "128x0e+128x1o+128x2e"},
    "mace-mpa-0-medium": {**MP0, "hidden_irreps": "128x0e+128x1o", "num_bessel": 10},
    "mace-omat-0-medium": {**MP0, "hidden_irreps": "128x0e+128x1o", "num_bessel": 10},
    "mace-off-small": {**MP0, "hidden_irreps": "96x0e", "r_max": 5.0, "first": "plain"},
    # small variants of single pieces, fast enough for every test run
    "tiny-residual": {**MP0, "hidden_irreps": "8x0e+8x1o", "r_max": 4.0, "max_ell": 2},
    "tiny-plain-L2-3layers": {**MP0, "hidden_irreps": "8x0e+8x1o+8x2e", "r_max": 4.0, "max_ell": 2,
                              "num_interactions": 3, "first": "plain"},  # fmt: skip
    "tiny-correlation-2": {**MP0, "hidden_irreps": "8x0e+8x1o", "r_max": 4.0, "correlation": 2},
    "tiny-two-heads": {**MP0, "hidden_irreps": "8x0e+8x1o", "r_max": 4.0, "max_ell": 2,
                       "heads": ["pt_head", "Default"]},  # fmt: skip
}


def random_mace_model(layout: str | dict[str, Any], atomic_numbers=(1, 6, 8, 14), seed: int = 0,
                      path: str | None = None, **overrides) -> torch.nn.Module:  # fmt: skip
    """mace-torch's ``ScaleShiftMACE`` with the hyperparameters of ``layout`` (a key of
    :data:`LAYOUTS` or a dict like its values), random weights from ``seed``, float64. Saved
    with ``torch.save`` to ``path`` when given."""
    from e3nn import o3
    from mace import modules

    import facet_calc.nn  # noqa: F401  (e3nn import under torch >= 2.6)

    hp = {**(LAYOUTS[layout] if isinstance(layout, str) else layout), **overrides}
    zs = [int(z) for z in atomic_numbers]
    heads = hp.get("heads", ["Default"])
    generator = np.random.default_rng(seed)
    blocks = {"residual": modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
              "plain": modules.interaction_classes["RealAgnosticInteractionBlock"]}  # fmt: skip
    # mace-torch draws its initial weights from torch's global generator: seeded inside a fork of
    # it, so the caller's random state is left as it was. Built in the default dtype and cast
    # (setting the default dtype would change it for the whole process).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = modules.ScaleShiftMACE(
            r_max=hp["r_max"], num_bessel=hp["num_bessel"],
            num_polynomial_cutoff=hp["num_polynomial_cutoff"],
            max_ell=hp["max_ell"],
            interaction_cls=modules.interaction_classes[hp.get("interaction", blocks["residual"].__name__)],
            interaction_cls_first=blocks[hp["first"]], pair_repulsion=bool(hp.get("pair_repulsion", False)),
            distance_transform=hp.get("distance_transform", "None"),
            num_interactions=hp["num_interactions"], num_elements=len(zs), hidden_irreps=o3.Irreps(hp["hidden_irreps"]),
            MLP_irreps=o3.Irreps(hp["MLP_irreps"]), gate=torch.nn.functional.silu,
            atomic_energies=generator.normal(-3.0, 1.0, (len(heads), len(zs))) if len(heads) > 1
            else generator.normal(-3.0, 1.0, len(zs)),
            avg_num_neighbors=float(hp.get("avg_num_neighbors", 20.0)), atomic_numbers=zs,
            correlation=hp["correlation"], radial_MLP=hp["radial_MLP"], heads=heads,
            atomic_inter_scale=list(generator.uniform(0.5, 1.5, len(heads))) if len(heads) > 1
            else float(generator.uniform(0.5, 1.5)),
            atomic_inter_shift=list(generator.normal(0.0, 0.3, len(heads))) if len(heads) > 1
            else float(generator.normal(0.0, 0.3)),
        )  # fmt: skip
    model = model.to(torch.float64).eval()
    if path is not None:
        torch.save(model, path)
    return model
