"""MACE model file -> facet_calc potential (config dict + tensors), family ``facet-spline-mace``.

Everything but the radial MLPs is carried over exactly (embedding, linears, the element-dependent
skip tensor products, the symmetric contractions with their own ``U`` tensors, readouts, scale,
shift, E0s). Each interaction's radial function ``w(r) = MLP(bessel(r) * cutoff(r))`` is sampled
with its exact derivative (forward-mode autograd, float64) at uniform knots on ``[0, r_max]``
and replaced by the C2 cubic spline through those samples.

Reading a MACE ``.model`` file UNPICKLES it (``torch.load(weights_only=False)``): mace-torch
saves whole model objects, so their classes' code runs on loading. facet_calc does this only
for a file the user names on ``facet-calc convert`` (and only after checking that the pickle
names nothing beyond mace-torch, e3nn, torch, numpy and the standard library), never when a
potential is loaded: the converted potential is safetensors + JSON. Needs ``mace-torch``
(``pip install mace-torch``; it pins e3nn 0.4.4, which facet_calc supports).
"""

from __future__ import annotations

import copy
import math
import zipfile
from typing import Any

import numpy as np
import torch

from ..nn.blocks.radial import fit_clamped_cubic_spline

#: knot intervals at least (0.012 A spacing for a 6 A cutoff). 256 left 4.4e-4 GPa of spline error
#: in the stress of a dense one-atom fcc cell (random MPA-0-shaped model); 512 gives 1.4e-5 GPa,
#: and 1024 no less (round-off), so 512
DEFAULT_MIN_INTERVALS = 512

#: module prefixes a MACE model file may pickle (anything else is refused before unpickling)
ALLOWED_PREFIXES = ("mace.", "e3nn.", "torch.", "numpy.", "builtins.", "collections.", "opt_einsum_fx.",
                    "functools.", "copyreg.", "_codecs.", "typing.")  # fmt: skip

SUPPORTED_INTERACTIONS = ("RealAgnosticResidualInteractionBlock", "RealAgnosticInteractionBlock")


class UnsupportedMaceLayout(ValueError):
    """A MACE model with a piece the converter cannot represent exactly."""


def _require_mace():
    import facet_calc.nn  # noqa: F401  (imports e3nn with torch >= 2.6's loader allow-list)

    try:
        import mace.modules  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("converting a MACE model needs mace-torch: pip install mace-torch==0.3.16") from err
    return mace.modules


def is_mace_file(path: str) -> bool:
    """Whether ``path`` is a PyTorch archive that pickles mace-torch classes (read without
    unpickling)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return False
    return any(g.startswith("mace.") for g in names)


def load_mace_model(path: str) -> torch.nn.Module:
    """Unpickle the MACE model in ``path`` (see the module docstring: only for files the user
    names), after refusing a pickle that names code outside mace-torch/e3nn/torch/numpy."""
    _require_mace()
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a PyTorch model file (no zip archive: truncated, or another kind of file)")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:
        raise ValueError(f"{path} cannot be read as a PyTorch archive ({err}); is it truncated?") from err
    foreign = sorted(g for g in names if not g.startswith(ALLOWED_PREFIXES))
    if foreign:
        raise ValueError(
            f"{path} pickles code beyond mace-torch, e3nn, torch and numpy ({', '.join(foreign)[:300]}); "
            "facet_calc unpickles a MACE file only when it needs nothing else. Re-save the model with mace-torch"
        )
    if not any(g.startswith("mace.") for g in names):
        raise ValueError(f"{path} is not a MACE model file (it pickles no mace-torch class)")
    try:
        # weights_only=False: a MACE .model file is a pickled module (see the module docstring)
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path} cannot be loaded as a MACE model: {err}") from err
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a MACE model (a torch.nn.Module)")
    return model


def unsupported_pieces(model: torch.nn.Module) -> list[str]:
    """The pieces of a MACE model the converter cannot represent exactly ([] if none)."""
    problems = []
    kind = type(model).__name__
    if kind not in ("MACE", "ScaleShiftMACE"):
        return [f"model class {kind} (supported: MACE, ScaleShiftMACE)"]
    for t, inter in enumerate(model.interactions):
        name = type(inter).__name__
        if name not in SUPPORTED_INTERACTIONS:
            problems.append(f"interaction block {name} in layer {t} (supported: {', '.join(SUPPORTED_INTERACTIONS)})")
        elif inter.linear_up.irreps_out != inter.node_feats_irreps:
            problems.append(f"edge_irreps {inter.linear_up.irreps_out} differ from the node irreps in layer {t}")
        elif any(ins.connection_mode != "uvu" or not ins.has_weight for ins in inter.conv_tp.instructions):
            problems.append(f"a convolution that is not weighted 'uvu' in layer {t}")
        if getattr(inter, "cueq_config", None) is not None and getattr(inter.cueq_config, "enabled", False):
            problems.append("cuEquivariance layouts (convert the model back with mace's cueq_to_e3nn first)")
        if getattr(inter, "oeq_config", None) is not None:
            problems.append("OpenEquivariance layouts")
    radial = model.radial_embedding
    if type(radial.bessel_fn).__name__ != "BesselBasis":
        problems.append(f"radial basis {type(radial.bessel_fn).__name__} (supported: BesselBasis)")
    if hasattr(radial, "distance_transform"):
        problems.append(f"distance transform {type(radial.distance_transform).__name__} (species-dependent radial)")
    if hasattr(model, "pair_repulsion"):
        problems.append("pair_repulsion (the ZBL term)")
    if hasattr(model, "joint_embedding"):
        problems.append("embedding_specs (a joint embedding of extra inputs)")
    if len(model.readouts) != len(model.interactions):
        problems.append("use_last_readout_only=True")
    for t, readout in enumerate(model.readouts):
        name = type(readout).__name__
        last = t == len(model.readouts) - 1
        wanted = "NonLinearReadoutBlock" if last else "LinearReadoutBlock"
        if name != wanted:
            problems.append(f"readout {name} after layer {t} (supported: {wanted} there; an equivariant or "
                            "biased readout is not)")  # fmt: skip
        elif last:
            acts = getattr(readout.non_linearity, "acts", [])
            f = getattr(acts[0], "f", None) if len(acts) == 1 else None
            if f is not torch.nn.functional.silu:
                problems.append("a readout activation other than SiLU")
            if any(ir.l > 0 for _, ir in readout.linear_1.irreps_out):
                problems.append("a gated (non-scalar) readout MLP")
    for t, product in enumerate(model.products):
        if getattr(product, "use_agnostic_product", False):
            problems.append(f"use_agnostic_product in layer {t}")
        sc = product.symmetric_contractions
        if type(sc).__name__ != "SymmetricContraction":
            problems.append(f"symmetric contraction {type(sc).__name__} in layer {t}")
    return problems


def _radial_samples(model, inter, r: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Values and d/dr of one interaction's radial weights at ``r`` (float64, exact autograd)."""
    emb = model.radial_embedding
    w = emb.bessel_fn.bessel_weights.detach().to(torch.float64)
    prefactor = emb.bessel_fn.prefactor.detach().to(torch.float64)
    apply_cutoff = getattr(emb, "apply_cutoff", True)

    def radial(x: torch.Tensor) -> torch.Tensor:
        # prefactor sin(w r) / r, written with sinc so that r = 0 gives its limit prefactor * w
        basis = prefactor * w * torch.sinc(w * x.unsqueeze(-1) / math.pi)
        cut = emb.cutoff_fn(x.unsqueeze(-1))
        if apply_cutoff:
            return inter.conv_tp_weights(basis * cut)
        return inter.conv_tp_weights(basis) * cut

    with torch.no_grad():
        values, slopes = torch.func.jvp(radial, (r,), (torch.ones_like(r),))
    return values.numpy(), slopes.numpy()


def _wigner_convention() -> str:
    import e3nn

    major, minor = (int(x) for x in e3nn.__version__.split(".")[:2])
    return "e3nn-0.4" if (major, minor) < (0, 5) else "e3nn-0.5"


def convert_mace(model: torch.nn.Module | str, min_intervals: int = DEFAULT_MIN_INTERVALS
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:  # fmt: skip
    """Convert a MACE model (a loaded module, or a path read with :func:`load_mace_model`).

    Returns ``(config, tensors)`` for :class:`facet_calc.nn.families.mace_spline.MaceSplineModel`.
    A layout the converter cannot represent exactly raises :class:`UnsupportedMaceLayout`."""
    _require_mace()
    if not isinstance(model, torch.nn.Module):
        model = load_mace_model(str(model))
    problems = unsupported_pieces(model)
    if problems:
        raise UnsupportedMaceLayout("this MACE model uses pieces the converter does not support (it never converts "
                                    "approximately): " + "; ".join(problems))  # fmt: skip
    model = copy.deepcopy(model).to(torch.float64).eval()
    cutoff = float(model.r_max)
    atomic_numbers = [int(z) for z in model.atomic_numbers]
    heads = list(getattr(model, "heads", None) or ["Default"])
    n_heads, n_species = len(heads), len(atomic_numbers)
    h = cutoff / min_intervals
    r = torch.arange(min_intervals + 1, dtype=torch.float64) * h
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    n_layers = len(model.interactions)
    for t, (inter, product, readout) in enumerate(zip(model.interactions, model.products, model.readouts)):
        y, dy = _radial_samples(model, inter, r)
        if np.abs(y[-1]).max() > 1e-12 or np.abs(dy[-1]).max() > 1e-10:
            raise ValueError(f"layer {t}: radial weights are not zero at the cutoff")
        y[-1] = 0.0
        dy[-1] = 0.0
        slopes = fit_clamped_cubic_spline(y, dy, h)
        contraction = product.symmetric_contractions
        irreps_out = product.linear.irreps_out
        n_params, correlation = [], None
        p = f"layers.{t}."
        for j, (c, (_, ir)) in enumerate(zip(contraction.contractions, irreps_out)):
            correlation = c.correlation
            n_params.append([])
            # weights_max is nu = correlation, weights[i] is nu = correlation - 1 - i
            by_nu = {c.correlation: c.weights_max, **{c.correlation - 1 - i: w for i, w in enumerate(c.weights)}}
            for nu in range(1, c.correlation + 1):
                u = c.U_tensors(nu).detach().to(torch.float64)
                u = u.reshape((ir.dim,) + (u.shape[-2],) * nu + (u.shape[-1],))  # MACE squeezes d = 1
                n_params[-1].append(int(u.shape[-1]))
                tensors[p + f"product.U_{j}_{nu}"] = u
                tensors[p + f"product.W_{j}_{nu}"] = by_nu[nu].detach().to(torch.float64)
        last = t == n_layers - 1
        if last:
            act = readout.non_linearity.acts[0]
            spec_readout = {"kind": "nonlinear", "hidden": str(readout.linear_1.irreps_out),
                            "activation_scale": float(act.cst)}  # fmt: skip
            tensors[p + "readout_1.weight"] = readout.linear_1.weight
            tensors[p + "readout_2.weight"] = readout.linear_2.weight
        else:
            spec_readout = {"kind": "linear"}
            tensors[p + "readout_1.weight"] = readout.linear.weight
        layers.append({
            "residual": type(inter).__name__ == "RealAgnosticResidualInteractionBlock",
            "irreps_in": str(inter.node_feats_irreps),
            "irreps_mid": str(inter.conv_tp.irreps_out),
            "irreps_target": str(inter.target_irreps),
            "irreps_out": str(irreps_out),
            "instructions": [[i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight]
                             for i in inter.conv_tp.instructions],
            "weight_numel": int(y.shape[1]),
            "avg_num_neighbors": float(inter.avg_num_neighbors),
            "correlation": int(correlation),
            "n_params": n_params,
            "readout": spec_readout,
        })  # fmt: skip
        tensors[p + "linear_up.weight"] = inter.linear_up.weight
        tensors[p + "linear.weight"] = inter.linear.weight
        tensors[p + "skip_tp.weight"] = inter.skip_tp.weight
        tensors[p + "product_linear.weight"] = product.linear.weight
        tensors[p + "convolution.radial.values"] = torch.from_numpy(y)
        tensors[p + "convolution.radial.slopes"] = torch.from_numpy(slopes)
    tensors["embedding.weight"] = model.node_embedding.linear.weight
    e0 = torch.atleast_2d(model.atomic_energies_fn.atomic_energies.detach().to(torch.float64))
    tensors["atomic_energies"] = e0.expand(n_heads, n_species).clone()
    if hasattr(model, "scale_shift"):
        scale = torch.atleast_1d(model.scale_shift.scale.detach().to(torch.float64))
        shift = torch.atleast_1d(model.scale_shift.shift.detach().to(torch.float64))
    else:
        scale, shift = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    tensors["scale"] = scale.reshape(-1, 1).expand(n_heads, n_species).clone()
    tensors["shift"] = shift.reshape(-1, 1).expand(n_heads, n_species).clone()
    config = {
        "format_version": 1,
        "architecture": "facet-spline-mace",
        "cutoff": cutoff,
        "atomic_numbers": atomic_numbers,
        "irreps_sh": str(model.spherical_harmonics.irreps_out),
        "irreps_embedding": str(model.node_embedding.linear.irreps_out),
        "avg_num_neighbors": float(model.interactions[0].avg_num_neighbors),
        "wigner_convention": _wigner_convention(),
        "radial": {"kind": "cubic_hermite_c2", "n_intervals": int(min_intervals), "r_max": cutoff, "c1_only_at": []},
        "layers": layers,
    }
    if n_heads > 1:  # named in lower case, as facet_calc's heads are (mace's names: source_heads)
        config["heads"] = [h.lower() for h in heads]
        config["source_heads"] = heads
        config["default_head"] = "default" if "Default" in heads else heads[-1].lower()
    tensors = {k: v.detach().to(torch.float64).contiguous() for k, v in tensors.items()}
    return config, tensors


def mace_reference(model: torch.nn.Module, dtype: str, head: str | None = None):
    """mace-torch's own ``MACECalculator`` for ``model`` in ``dtype`` (a copy; ``head``: the
    head to evaluate, default mace's)."""
    from mace.calculators import MACECalculator

    kwargs = {"head": head} if head is not None else {}
    return MACECalculator(models=[copy.deepcopy(model)], device="cpu", default_dtype=dtype, **kwargs)
