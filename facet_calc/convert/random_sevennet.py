"""Random-weight SevenNet checkpoints built by sevenn itself, for fidelity tests and benchmarks.

:func:`random_sevennet_checkpoint` reads one of sevenn's hyperparameter presets (the YAML files
in ``sevenn/presets``, or a layout of :data:`LAYOUTS`), shrinks its channels, builds the model
with sevenn's own builder (``build_E3_equivariant_model``), keeps sevenn's random initial
weights, draws random energy scales/shifts, and saves a checkpoint in sevenn's format (the
dict ``SevenNetCheckpoint`` reads). Example::

    >>> path = random_sevennet_checkpoint("mf_ompa", "/tmp/ompa.pth", shrink=16)  # doctest: +SKIP
    >>> convert(path, "/tmp/ompa-spline")  # doctest: +SKIP

Needs the optional ``sevenn`` package.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

#: layouts: sevenn preset file (in ``sevenn/presets``) plus overrides of its ``model:`` section.
#: ``omat`` is the MF-ompa layout without fidelities (SevenNet-omat shares its hyperparameters;
#: the wheel ships no separate omat/omni preset).
LAYOUTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sevennet-0": ("sevennet-0.yaml", {}),
    "sevennet-l3i5": ("sevennet-l3i5.yaml", {}),
    "base": ("base.yaml", {}),
    "fine_tune_le": ("fine_tune_le.yaml", {}),
    "MF_0": ("MF_0.yaml", {}),
    "multi_modal": ("multi_modal.yaml", {}),
    "mf_ompa": ("mf_ompa_fine_tune.yaml", {}),
    "omat": ("mf_ompa_fine_tune.yaml", {"_no_modality": True}),
    # variants of single pieces, on the small base layout
    "base-linear-sc": ("base.yaml", {"self_connection_type": "linear"}),
    "base-parity-linear-sc": ("base.yaml", {"self_connection_type": "linear", "is_parity": True}),
    "base-no-sc": ("base.yaml", {"_self_connection_type": "none"}),
    "base-mixed-sc": ("base.yaml", {"self_connection_type": ["linear", "nequip", "linear"]}),
    "base-xplor-lmax3-l4": ("base.yaml", {"self_connection_type": "linear", "lmax": 3, "num_convolution_layer": 4,
                                          "cutoff_function": {"cutoff_function_name": "XPLOR", "cutoff_on": 4.0},
                                          "cutoff": 4.7}),  # fmt: skip
    "base-lmax_edge": ("base.yaml", {"self_connection_type": "linear", "lmax": 1, "lmax_edge": 3}),
    "base-act-radial-tanh": ("base.yaml", {"self_connection_type": "linear", "act_radial": "tanh",
                                           "weight_nn_hidden_neurons": [16, 16, 16]}),  # fmt: skip
    "base-train-denominator": ("base.yaml", {"self_connection_type": "linear", "train_denominator": True}),
    "base-bias": ("base.yaml", {"self_connection_type": "linear", "use_bias_in_linear": True}),
    "base-fcn-readout": ("base.yaml", {"self_connection_type": "linear", "readout_as_fcn": True,
                                       "readout_fcn_activation": "relu",
                                       "readout_fcn_hidden_neurons": [8, 8]}),  # fmt: skip
    "base-unnormalised-sh": ("base.yaml", {"self_connection_type": "linear", "_normalize_sph": False}),
    "MF_0-modal-embedding": ("MF_0.yaml", {"use_modal_node_embedding": True}),
    "MF_0-modal-scale": ("MF_0.yaml", {"_modal_wise_scale": True}),
}


def _shrink_irreps(text: str, factor: int) -> str:
    from e3nn import o3

    return str(o3.Irreps([(max(1, mul // factor), ir) for mul, ir in o3.Irreps(text)]))


def random_sevennet_checkpoint(
    layout: str,
    path: str | Path,
    *,
    elements: tuple[str, ...] = ("H", "C", "O", "Si", "Cu"),
    shrink: int = 16,
    seed: int = 0,
    modalities: tuple[str, ...] = ("pbe", "r2scan"),
) -> Path:
    """Save a random-weight checkpoint of ``layout`` (a key of :data:`LAYOUTS`) at ``path``.

    ``shrink`` divides every channel count (128 -> 8 with the default 16); layer count, lmax,
    parity, cutoff, radial basis, cutoff function, self-connection and heads stay the preset's.
    Returns the path."""
    import sevenn
    import sevenn._keys as KEY
    from sevenn.model_build import build_E3_equivariant_model
    from sevenn.parse_input import read_config_yaml

    preset, overrides = LAYOUTS[layout]
    overrides = dict(overrides)
    no_modality = overrides.pop("_no_modality", False)
    modal_scale = overrides.pop("_modal_wise_scale", False)
    # values sevenn's builder accepts but its YAML reader does not (set after reading)
    after_reading = {k[1:]: overrides.pop(k) for k in list(overrides) if k == "_self_connection_type"}
    preset_path = os.path.join(os.path.dirname(sevenn.__file__), "presets", preset)
    import yaml

    raw = yaml.safe_load(Path(preset_path).read_text())
    raw["model"]["chemical_species"] = list(elements)
    raw["model"].update(copy.deepcopy(overrides))
    raw.pop("data", None)
    raw.pop("train", None)
    tmp = Path(path).with_suffix(".preset.yaml")
    tmp.write_text(yaml.safe_dump(raw))
    try:
        model_cfg, _, _ = read_config_yaml(str(tmp))
    finally:
        tmp.unlink()
    config = dict(model_cfg)
    config.update(after_reading)
    config[KEY.NODE_FEATURE_MULTIPLICITY] = max(1, config[KEY.NODE_FEATURE_MULTIPLICITY] // shrink)
    if config[KEY.IRREPS_MANUAL]:
        config[KEY.IRREPS_MANUAL] = [_shrink_irreps(t, shrink) for t in config[KEY.IRREPS_MANUAL]]
    gen = torch.Generator().manual_seed(seed)
    n_species = config[KEY.NUM_SPECIES]
    n_layers = config[KEY.NUM_CONVOLUTION]
    config[KEY.CONV_DENOMINATOR] = [float(5 + 10 * torch.rand((), generator=gen)) for _ in range(n_layers)]
    use_modality = "mf" in preset.lower() or "multi_modal" in preset
    use_modality = use_modality and not no_modality
    shift = (-3.0 + torch.randn(n_species, generator=gen)).tolist()
    scale = (1.0 + 0.5 * torch.rand(n_species, generator=gen)).tolist()
    if use_modality:
        config[KEY.USE_MODALITY] = True
        config[KEY.MODAL_MAP] = {m: i for i, m in enumerate(modalities)}
        config[KEY.NUM_MODALITIES] = len(modalities)
        config[KEY.MODAL_LIST] = list(modalities)
        config[KEY.USE_MODAL_WISE_SHIFT] = True
        config[KEY.USE_MODAL_WISE_SCALE] = modal_scale
        config["default_modal"] = modalities[0]
        shift = (-3.0 + torch.randn(len(modalities), n_species, generator=gen)).tolist()
        if modal_scale:
            scale = (1.0 + 0.5 * torch.rand(len(modalities), n_species, generator=gen)).tolist()
    else:
        for key in (KEY.USE_MODAL_NODE_EMBEDDING, KEY.USE_MODAL_SELF_INTER_INTRO,
                    KEY.USE_MODAL_SELF_INTER_OUTRO, KEY.USE_MODAL_OUTPUT_BLOCK):  # fmt: skip
            config[key] = False
    config[KEY.SHIFT] = shift
    config[KEY.SCALE] = scale
    config["version"] = sevenn.__version__
    torch.manual_seed(seed)  # sevenn's initialisers draw from the global generator
    model = build_E3_equivariant_model(copy.deepcopy(config))
    with torch.no_grad():  # sevenn initialises the denominators and biases to constants: vary them
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    torch.save(
        {"config": config, "model_state_dict": model.state_dict(), "epoch": 0, "time": "random",
         "hash": f"random-{layout}-{seed}"},  # fmt: skip
        str(path),
    )
    return Path(path)
