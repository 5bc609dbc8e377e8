"""SevenNet checkpoint -> facet_calc potential (config dict + tensors).

Everything but the radial MLPs is carried over exactly (embedding, linears, gates, scales,
shifts, convolution denominators, cutoff). Each radial MLP ``w(r) = MLP(bessel(r) * cutoff(r))``
is sampled with its exact derivative (forward-mode autograd, float64) at uniform knots on
``[0, r_cut]`` and replaced by the C2 interpolating cubic spline through those samples
(clamped with the exact end slopes). Where the source cutoff has a jump in its second
derivative (XPLOR's ``r_on``) a knot is placed exactly there and the spline is only C1 there,
as the source is.

Needs the optional ``sevenn`` package (``pip install 'facet_calc[convert]'``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..nn.blocks.radial import fit_clamped_cubic_spline

#: Knot count the shipped potentials use at least (about 0.02 A spacing for a 5 A cutoff).
DEFAULT_MIN_INTERVALS = 256


def _require_sevenn():
    try:
        import sevenn.util  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "converting a SevenNet checkpoint needs the 'sevenn' package: pip install 'facet_calc[convert]'"
        ) from err
    import sevenn.util

    return sevenn.util


#: globals a SevenNet checkpoint may pickle besides tensors and plain containers: its config
#: holds numpy arrays (shift/scale statistics). Nothing else is unpickled.
NUMPY_GLOBALS = ("numpy.ndarray", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                 "numpy.dtype")  # fmt: skip


def _allowed_globals() -> list:
    import numpy

    allowed: list = [numpy.ndarray, numpy.dtype]
    # numpy 2 moved numpy.core to numpy._core; checkpoints written with numpy 1 name the old
    # path, so the function is allow-listed under both names
    reconstruct = numpy.ndarray.__reduce__(numpy.zeros(1))[0]
    allowed += [(reconstruct, f"numpy.{core}.multiarray._reconstruct") for core in ("core", "_core")]
    # numpy >= 1.25 pickles dtypes as instances of numpy.dtypes.Float64DType etc.
    allowed += [getattr(numpy.dtypes, n) for n in dir(getattr(numpy, "dtypes", object())) if n.endswith("DType")]
    return allowed


def load_checkpoint_dict(path: str) -> dict[str, Any]:
    """The dict inside a SevenNet checkpoint, read with ``torch.load(weights_only=True)``.

    ``weights_only`` unpickles tensors, plain containers and the numpy arrays allow-listed
    here, never code: a file that pickles anything else (a whole model object, a custom class)
    is refused with the names of those globals. This is done only for files the user names;
    loading a converted potential never unpickles anything."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a PyTorch checkpoint (no zip archive: truncated, or another kind of file); "
            "SevenNet checkpoints are the .pth files that sevenn writes (checkpoint_best.pth, ...)"
        )
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # a damaged archive: zipfile, pickle or torch errors
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint ({err}); is it truncated?") from err
    if any(g.startswith("mace.") for g in unsafe):
        raise ValueError(
            f"{path} is a MACE model (it pickles {', '.join(g for g in unsafe if g.startswith('mace.'))[:200]}); "
            "converting MACE is not supported yet (facet_calc issue 20, item 3): only SevenNet .pth checkpoints are"
        )
    code = sorted(set(unsafe) - set(NUMPY_GLOBALS) - {g for g in unsafe if g.startswith("numpy.dtypes.")})
    if code:
        raise ValueError(
            f"{path} pickles code beyond tensors and numpy arrays ({', '.join(code)[:300]}); facet_calc reads "
            "checkpoints with torch.load(weights_only=True) and does not execute pickled code. A SevenNet "
            "checkpoint holds only its config and state dicts; re-save yours that way"
        )
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} cannot be loaded as a weights-only checkpoint: {err}") from err
    if not isinstance(data, dict) or "config" not in data or "model_state_dict" not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} is not a SevenNet checkpoint: it has no 'config' and 'model_state_dict' (found {keys}); "
            "pass a .pth file that sevenn wrote"
        )
    return data


def load_sevenn_checkpoint(checkpoint: str):
    """A ``sevenn.checkpoint.SevenNetCheckpoint`` for a path (read weights-only, see
    :func:`load_checkpoint_dict`) or a sevenn keyword such as ``"7net-0"``."""
    import os

    util = _require_sevenn()
    from sevenn.checkpoint import SevenNetCheckpoint, _config_cp_routine

    path = str(checkpoint) if os.path.exists(str(checkpoint)) else util.pretrained_name_to_path(str(checkpoint))
    data = load_checkpoint_dict(path)
    cp = SevenNetCheckpoint(path)
    # what SevenNetCheckpoint._load does, minus its torch.load(weights_only=False)
    cp._config_original = data["config"]
    cp._model_state_dict = data["model_state_dict"]
    cp._optimizer_state_dict = data.get("optimizer_state_dict", {})
    cp._scheduler_state_dict = data.get("scheduler_state_dict", {})
    cp._epoch = data.get("epoch")
    cp._time = data.get("time", "Not found")
    cp._hash = data.get("hash", "Not found")
    try:
        cp._config = _config_cp_routine(data["config"])
    except Exception as err:
        raise ValueError(f"sevenn cannot read the config of {path}: {err}") from err
    cp._loaded = True
    return cp


def built_model(cp):
    """A fresh copy of sevenn's float32 model for checkpoint ``cp`` (built once per checkpoint:
    building compiles e3nn's tensor products, seconds each)."""
    import copy

    model = getattr(cp, "_facet_built_model", None)
    if model is None:
        model = cp.build_model()
        cp._facet_built_model = model
    return copy.deepcopy(model)


def unsupported_pieces(cfg: dict[str, Any]) -> list[str]:
    """The pieces of a SevenNet config that the converter cannot represent exactly ([] if none)."""
    problems = []
    if cfg.get("interaction_type", "nequip") != "nequip":
        problems.append(f"interaction_type={cfg.get('interaction_type')!r}")
    sc = cfg.get("self_connection_type", "nequip")
    kinds = [sc] * int(cfg["num_convolution_layer"]) if isinstance(sc, str) else list(sc)
    for kind in sorted(set(kinds) - {"linear", "nequip"}):
        layers = ", ".join(str(t) for t, k in enumerate(kinds) if k == kind)
        problems.append(f"self_connection_type={kind!r} in layers {layers}")
    if cfg.get("readout_as_fcn"):
        problems.append("readout_as_fcn=True (a fully connected readout network)")
    if cfg.get("use_bias_in_linear"):
        problems.append("use_bias_in_linear=True (biases in the linear layers)")
    if not cfg.get("_normalize_sph", True):
        problems.append("_normalize_sph=False (spherical harmonics of unnormalised edge vectors)")
    if cfg.get("use_modality"):
        if cfg.get("use_modal_node_embedding"):
            problems.append("a fidelity-dependent node embedding (use_modal_node_embedding=True)")
        if cfg.get("use_modal_wise_scale"):
            problems.append("fidelity-dependent energy scales (use_modal_wise_scale=True)")
    basis = cfg["radial_basis"]["radial_basis_name"]
    if basis != "bessel":
        problems.append(f"radial basis {basis!r}")
    if cfg["cutoff_function"]["cutoff_function_name"] not in ("poly_cut", "XPLOR"):
        problems.append(f"cutoff function {cfg['cutoff_function']['cutoff_function_name']!r}")
    return problems


class UnsupportedLayout(ValueError):
    """A SevenNet checkpoint of a layout the converter cannot represent exactly."""


def _check_supported(cfg: dict[str, Any]) -> None:
    problems = unsupported_pieces(cfg)
    if problems:
        raise UnsupportedLayout(
            "this SevenNet checkpoint uses features the converter does not support (it never converts "
            "approximately): " + "; ".join(problems)
        )


def _choose_intervals(cutoff: float, breaks_at: list, min_intervals: int) -> int:
    """Smallest n >= min_intervals that puts every break point exactly on a knot."""
    for n in range(min_intervals, 100 * min_intervals):
        if all(abs(b * n / cutoff - round(b * n / cutoff)) < 1e-9 for b in breaks_at):
            return n
    raise ValueError(f"no uniform knot grid on [0, {cutoff}] hits the break points {breaks_at}")


def _radial_samples(model, t: int, r: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Values and d/dr of layer t's radial weights at distances r (float64, exact autograd)."""
    emb = model._modules["edge_embedding"]
    coeffs = emb.basis_function.coeffs.detach().to(torch.float64)
    prefactor = float(emb.basis_function.prefactor)
    cutoff_fn = emb.cutoff_function
    weight_nn = model._modules[f"{t}_convolution"].weight_nn

    def radial(x: torch.Tensor) -> torch.Tensor:
        # prefactor * sin(k r) / r, written with sinc so that r = 0 gives its limit k
        basis = prefactor * coeffs * torch.sinc(coeffs * x.unsqueeze(-1) / math.pi)
        return weight_nn(basis * cutoff_fn(x).unsqueeze(-1))

    with torch.no_grad():
        values, slopes = torch.func.jvp(radial, (r,), (torch.ones_like(r),))
    return values.numpy(), slopes.numpy()


def _species_self_connection(intro, n_species: int) -> torch.Tensor:
    """``(n_species, numel)`` weights of a :class:`~facet_calc.nn.blocks.species_linear.SpeciesLinear`
    equal to SevenNet's ``nequip`` self-connection ``FullyConnectedTensorProduct(x, onehot(species))``.

    With a one-hot second input each ``'uvw'`` path is ``c_l * path_weight * sum_u W[u, s, w] x_u``,
    an ``o3.Linear`` of ``x`` whose weight block is ``W[:, s, :]`` rescaled; ``c_l`` is the
    ``(l, 0e, l)`` coupling, which depends on the product's irrep normalisation (1 for e3nn's
    ``"component"``, ``1/sqrt(2l+1)`` for ``"norm"``), so it is read off the source module with
    one probe per path. The result is checked against the source on random features of every species.
    """
    from ..nn.blocks.species_linear import SpeciesLinear

    tp = intro.fc_tensor_product
    if tp is None or str(tp.irreps_in2) != f"{n_species}x0e":
        operand = getattr(tp, "irreps_in2", None)
        raise ValueError(f"a 'nequip' self-connection with operand {operand}, not one-hot species")
    tp = tp.to(torch.float64)
    ours = SpeciesLinear(tp.irreps_in1, tp.irreps_out, n_species).to(torch.float64)
    if len(tp.instructions) != len(ours.linear.instructions):
        raise ValueError("a 'nequip' self-connection whose paths are not those of a linear map")
    weight = tp.weight.detach().to(torch.float64)
    in_slices, out_slices = tp.irreps_in1.slices(), tp.irreps_out.slices()
    blocks, start = [], 0
    for ins, mine in zip(tp.instructions, ours.linear.instructions):
        mul_in, mul_species, mul_out = ins.path_shape
        same_path = (ins.i_in1, ins.i_out) == (mine.i_in, mine.i_out)
        if ins.connection_mode != "uvw" or not same_path or mul_species != n_species:
            raise ValueError(f"unexpected path {ins} in a 'nequip' self-connection")
        block = weight[start : start + mul_in * mul_species * mul_out].view(mul_in, mul_species, mul_out)
        start += mul_in * mul_species * mul_out
        # probe: input channel 0 (component m = 0) of this path's irrep, the species whose
        # weight row from that channel is largest; the output is c_l * path_weight * W[0, s, :]
        s = int(block[0].abs().amax(dim=1).argmax())
        x = torch.zeros(1, tp.irreps_in1.dim, dtype=torch.float64)
        x[0, in_slices[ins.i_in1].start] = 1.0
        onehot = torch.nn.functional.one_hot(torch.tensor([s]), n_species).to(torch.float64)
        with torch.no_grad():
            out = tp(x, onehot)[0, out_slices[ins.i_out]].view(mul_out, -1)[:, 0]
        w = int(block[0, s].abs().argmax())
        coupling = float(out[w]) / (ins.path_weight * float(block[0, s, w]))
        blocks.append((block * (coupling * ins.path_weight / mine.path_weight)).permute(1, 0, 2).reshape(n_species, -1))
    result = torch.cat(blocks, dim=1)
    with torch.no_grad():
        ours.weight.copy_(result)
        species = torch.arange(n_species).repeat_interleave(2)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(species.shape[0], tp.irreps_in1.dim, dtype=torch.float64, generator=gen)
        source = tp(x, torch.nn.functional.one_hot(species, n_species).to(torch.float64))
        error = float((ours(x, species) - source).abs().max())
    if error > 1e-10 * max(1.0, float(source.abs().max())):
        raise ValueError(f"the 'nequip' self-connection is not reproduced exactly (max deviation {error:.2e})")
    return result


def _split_modal_linear(module, n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-fidelity IrrepsLinear of sevenn, ``L(concat(x, onehot(head)))``, as the weight of
    an ``o3.Linear`` on ``x`` alone plus one bias row per head.

    The head's one-hot enters as extra ``0e`` inputs, so ``L`` is affine in ``x``: the bias is
    ``L(concat(0, onehot))``. The instructions on ``x`` come first in the flat weight, in the
    same order as in a linear without the extra inputs; only their path normalisation differs
    (the extra inputs raise the fan-in of the scalar outputs), so each block is rescaled.
    """
    from e3nn import o3

    linear = module.linear
    irreps_x = o3.Irreps(module._irreps_in_wo_modal)
    plain = o3.Linear(irreps_x, linear.irreps_out, biases=False)
    weight = linear.weight.detach().to(torch.float64)
    blocks, start = [], 0
    plain_instructions = iter(plain.instructions)
    for ins in linear.instructions:
        size = int(np.prod(ins.path_shape))
        if ins.i_in < len(irreps_x):
            mine = next(plain_instructions)
            if (mine.i_in, mine.i_out) != (ins.i_in, ins.i_out):
                raise ValueError("unexpected instruction order in a multi-fidelity linear")
            blocks.append(weight[start : start + size] * (ins.path_weight / mine.path_weight))
        start += size
    with torch.no_grad():
        inputs = torch.cat([torch.zeros(n_heads, irreps_x.dim), torch.eye(n_heads)], dim=1)
        bias = linear.to(torch.float64)(inputs.to(torch.float64))
    scalar = torch.zeros(linear.irreps_out.dim, dtype=torch.bool)
    for (_, ir), sl in zip(linear.irreps_out, linear.irreps_out.slices()):
        scalar[sl] = ir == o3.Irrep("0e")
    if bias[:, ~scalar].abs().sum() > 0:
        raise ValueError("a multi-fidelity linear has a bias on non-scalar outputs")
    return torch.cat(blocks), bias


def convert_sevennet(
    checkpoint, min_intervals: int = DEFAULT_MIN_INTERVALS
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Convert a SevenNet checkpoint: a path, a sevenn keyword like ``"7net-0"``, or a
    ``SevenNetCheckpoint`` (see :func:`load_sevenn_checkpoint`).

    Returns ``(config, tensors)``: the model config (JSON-able dict) and the named tensors that
    :class:`facet_calc.nn.families.nequip_spline.NequipSplineModel` loads. A layout the
    converter cannot represent exactly raises :class:`UnsupportedLayout` naming the pieces.
    """
    _require_sevenn()
    cp = checkpoint if hasattr(checkpoint, "build_model") else load_sevenn_checkpoint(checkpoint)
    cfg = cp.config
    _check_supported(cfg)
    model = built_model(cp).to(torch.float64).eval()
    # multi-fidelity: heads in the source's modal order, named in lower case
    modal_map = cfg.get("_modal_map") or {}
    heads = sorted(modal_map, key=modal_map.get) if cfg.get("use_modality") else []
    heads = [name.lower() for name in heads]
    n_heads = len(heads)
    sd = {k: v.detach() for k, v in model.state_dict().items()}

    cutoff = float(cfg["cutoff"])
    type_map = cfg["_type_map"]
    atomic_numbers = [z for z, _ in sorted(type_map.items(), key=lambda kv: kv[1])]
    n_layers = int(cfg["num_convolution_layer"])

    cut_cfg = cfg["cutoff_function"]
    breaks_at = [float(cut_cfg["cutoff_on"])] if cut_cfg["cutoff_function_name"] == "XPLOR" else []
    n_intervals = _choose_intervals(cutoff, breaks_at, min_intervals)
    h = cutoff / n_intervals
    break_idx = [int(round(b / h)) for b in breaks_at]
    r = torch.arange(n_intervals + 1, dtype=torch.float64) * h

    parity = {1: "e", -1: "o"}
    act_scalar, act_gate = cfg["act_scalar"], cfg["act_gate"]
    layers = []
    tensors: dict[str, torch.Tensor] = {}
    for t in range(n_layers):
        conv = model._modules[f"{t}_convolution"]
        kw = conv.convolution_kwargs
        gate = model._modules[f"{t}_equivariant_gate"].gate
        y, dy = _radial_samples(model, t, r)
        if np.abs(y[-1]).max() > 1e-12 or np.abs(dy[-1]).max() > 1e-12:
            raise ValueError(f"layer {t}: radial weights are not zero at the cutoff")
        y[-1] = 0.0  # exactly zero value and slope at the cutoff
        dy[-1] = 0.0
        slopes = fit_clamped_cubic_spline(y, dy, h, breaks=break_idx)
        layers.append(
            {
                "irreps_in": str(kw["irreps_in1"]),
                "irreps_tp_out": str(kw["irreps_out"]),
                "instructions": [list(ins) for ins in kw["instructions"]],
                "weight_numel": int(y.shape[1]),
                "denominator": float(conv.denominator.item()),
                "gate": {
                    "scalars": str(gate.irreps_scalars),
                    "act_scalars": [act_scalar[parity[ir.p]] for _, ir in gate.irreps_scalars],
                    "gates": str(gate.irreps_gates),
                    "act_gates": [act_gate[parity[ir.p]] for _, ir in gate.irreps_gates],
                    "gated": str(gate.irreps_gated),
                },
            }
        )
        prefix = f"layers.{t}."
        intro = model._modules[f"{t}_self_connection_intro"]
        if hasattr(intro, "fc_tensor_product"):  # 'nequip': FullyConnectedTensorProduct(x, onehot(species))
            tensors[prefix + "self_connection.weight"] = _species_self_connection(intro, len(atomic_numbers))
            layers[-1]["self_connection"] = "species"
        else:
            tensors[prefix + "self_connection.weight"] = sd[f"{t}_self_connection_intro.linear.weight"]
        for ours, theirs in (("linear_in", "self_interaction_1"), ("linear_out", "self_interaction_2")):
            module = model._modules[f"{t}_{theirs}"]
            if n_heads:
                weight, bias = _split_modal_linear(module, n_heads) if module.num_modalities > 1 else (None, None)
                dim = module.linear.irreps_out.dim
                tensors[prefix + ours + ".weight"] = sd[f"{t}_{theirs}.linear.weight"] if weight is None else weight
                bias = torch.zeros(n_heads, dim) if bias is None else bias
                tensors[prefix + f"head_bias_{ours.split('_')[1]}"] = bias
                layers[-1]["n_heads"] = n_heads
            else:
                tensors[prefix + ours + ".weight"] = sd[f"{t}_{theirs}.linear.weight"]
        tensors[prefix + "convolution.radial.values"] = torch.from_numpy(y)
        tensors[prefix + "convolution.radial.slopes"] = torch.from_numpy(slopes)

    hidden = model._modules["reduce_input_to_hidden"].linear.irreps_out
    tensors["embedding.weight"] = sd["onehot_to_feature_x.linear.weight"]
    tensors["readout_hidden.weight"] = sd["reduce_input_to_hidden.linear.weight"]
    tensors["readout_out.weight"] = sd["reduce_hidden_to_energy.linear.weight"]
    n_species = len(atomic_numbers)
    tensors["scale"] = sd["rescale_atomic_energy.scale"].reshape(-1).expand(n_species).clone()
    if n_heads:
        readout = model._modules["reduce_input_to_hidden"]
        if readout.num_modalities > 1:
            tensors["readout_hidden.weight"], tensors["head_bias_hidden"] = _split_modal_linear(readout, n_heads)
        else:
            tensors["head_bias_hidden"] = torch.zeros(n_heads, readout.linear.irreps_out.dim)
        shift = sd["rescale_atomic_energy.shift"]
        shift = shift.reshape(n_heads, n_species) if cfg.get("use_modal_wise_shift") else shift.reshape(1, -1)
        tensors["head_shift"] = shift.expand(n_heads, n_species).clone()
        tensors["shift"] = torch.zeros(n_species)
    else:
        tensors["shift"] = sd["rescale_atomic_energy.shift"].reshape(-1).expand(n_species).clone()

    config = {
        "format_version": 1,
        "architecture": "facet-spline-nequip",
        "cutoff": cutoff,
        "atomic_numbers": atomic_numbers,
        "irreps_sh": str(model._modules["edge_embedding"].spherical.irreps_out),
        "sh_normalization": "component",
        "irreps_embedding": str(model._modules["onehot_to_feature_x"].linear.irreps_out),
        "readout_hidden": str(hidden),
        "radial": {
            "kind": "cubic_hermite_c2",
            "n_intervals": n_intervals,
            "r_max": cutoff,
            "c1_only_at": breaks_at,
        },
        "layers": layers,
    }
    if n_heads:
        config["heads"] = heads
        config["default_head"] = str(cfg.get("default_modal", modal_map and min(modal_map, key=modal_map.get))).lower()
    # The checkpoint holds float32 weights; keep them as stored. Spline tables stay float64.
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        if "radial" not in k:
            tensors[k] = v.to(torch.float32)
    return config, tensors
