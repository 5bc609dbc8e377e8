"""Helpers for the LAMMPS tests: a small random potential, and running ``lmp`` under mpirun.

The shipped 7net-0-spline takes about 0.4 s per step at 1000 atoms on this machine, too slow for
a 100-step, 1000-atom run on 1 and 2 ranks in CI; the small potential below has the same
architecture (3 layers, l <= 2 features, gates, spline radial tables) with 8 channels, so every
code path of the pair style runs, in milliseconds per step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import processes
import torch
from e3nn import o3

from facet_calc.potential import build_model, save_potential

SH = o3.Irreps("1x0e+1x1e+1x2e")


def _layer_spec(irreps_in: o3.Irreps, channels: int, last: bool, denominator: float) -> dict:
    n_vec, n_ten = channels // 2, channels // 4
    out, instructions = [], []
    for i_in, (mul, ir_in) in enumerate(irreps_in):
        for i_sh, (_, ir_sh) in enumerate(SH):
            for ir_out in ir_in * ir_sh:
                if ir_out.p == 1 and ir_out.l <= (0 if last else 2):
                    out.append((mul, ir_out))
                    instructions.append([i_in, i_sh, len(out) - 1, "uvu", True])
    if last:
        gate = {"scalars": f"{channels}x0e", "act_scalars": ["silu"], "gates": "", "act_gates": [], "gated": ""}
    else:
        gate = {
            "scalars": f"{channels}x0e",
            "act_scalars": ["silu"],
            "gates": f"{n_vec + n_ten}x0e",
            "act_gates": ["silu"],
            "gated": f"{n_vec}x1e+{n_ten}x2e",
        }
    return {
        "irreps_in": str(irreps_in),
        "irreps_tp_out": str(o3.Irreps(out)),
        "instructions": instructions,
        "weight_numel": int(sum(irreps_in[i][0] for i, *_ in instructions)),
        "denominator": denominator,
        "gate": gate,
    }


def write_small_potential(
    folder: Path,
    elements: tuple[str, ...] = ("Si", "O"),
    channels: int = 8,
    n_layers: int = 3,
    cutoff: float = 3.0,
    seed: int = 0,
) -> Path:
    """A random potential of the 7net architecture with few channels, saved (with an index) to
    ``folder``. Radial tables are smooth random functions times ``(1 - r/cutoff)^3`` so that
    energies and forces are continuous; weights are O(1) so that forces are moderate."""
    from ase.data import atomic_numbers

    rng = np.random.default_rng(seed)
    hidden = o3.Irreps(f"{channels}x0e+{channels // 2}x1e+{channels // 4}x2e")
    layers = []
    irreps = o3.Irreps(f"{channels}x0e")
    for t in range(n_layers):
        last = t == n_layers - 1
        layers.append(_layer_spec(irreps, channels, last, denominator=20.0))
        irreps = hidden
    n_intervals = 64
    config = {
        "format_version": 1,
        "architecture": "facet-spline-nequip",
        "cutoff": cutoff,
        "atomic_numbers": [atomic_numbers[e] for e in elements],
        "irreps_sh": str(SH),
        "sh_normalization": "component",
        "irreps_embedding": f"{channels}x0e",
        "readout_hidden": f"{channels // 2}x0e",
        "radial": {"kind": "cubic_hermite_c2", "n_intervals": n_intervals, "r_max": cutoff, "c1_only_at": []},
        "layers": layers,
        "name": folder.name,
        "description": "random small test potential (tests/lammps_support.py)",
    }
    model = build_model(config, torch.float64)
    r = np.linspace(0.0, cutoff, n_intervals + 1)
    tensors = {}
    for name, param in model.named_parameters():
        if name.endswith("radial.values") or name.endswith("radial.slopes"):
            continue
        tensors[name] = torch.as_tensor(rng.normal(size=tuple(param.shape)), dtype=torch.float64)
    tensors["scale"] = torch.full((len(elements),), 20.0, dtype=torch.float64)
    tensors["shift"] = torch.as_tensor(-3.0 - rng.random(len(elements)), dtype=torch.float64)
    for t, layer in enumerate(model.layers):
        n_out = layer.convolution.radial.n_out
        freq = rng.uniform(0.5, 2.0, n_out)
        phase = rng.uniform(0, np.pi, n_out)
        amp = rng.normal(size=n_out)
        x = r[:, None]
        env = (1 - x / cutoff) ** 3
        denv = -3 * (1 - x / cutoff) ** 2 / cutoff
        f = amp * np.cos(freq * x + phase)
        df = -amp * freq * np.sin(freq * x + phase)
        prefix = f"layers.{t}.convolution.radial"
        tensors[f"{prefix}.values"] = torch.as_tensor(f * env)
        tensors[f"{prefix}.slopes"] = torch.as_tensor(df * env + f * denv)
    save_potential(folder, config, tensors, card="Random test potential; not physical.\n")
    return folder


def lammps_env(plugin_dir: Path) -> dict[str, str]:
    """Environment for ``lmp`` subprocesses: the plugin folder, this checkout on PYTHONPATH for
    the embedded interpreter, one thread per rank."""
    env = dict(os.environ)
    env["LAMMPS_PLUGIN_PATH"] = str(plugin_dir)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def mpirun() -> str:
    """The mpich wheel's mpirun (beside this interpreter), or one on PATH."""
    beside = Path(sys.executable).with_name("mpirun")
    return str(beside) if beside.exists() else (shutil.which("mpirun") or "mpirun")


def run_lammps(
    workdir: Path, script: str, ranks: int, env: dict[str, str], timeout: float = 200, extra=()
) -> subprocess.CompletedProcess:
    """Run ``script`` (input text) with ``mpirun -np ranks lmp`` in ``workdir``; returns the process.
    A run past ``timeout`` seconds fails the test naming it: the default is about 10x the longest
    short run measured on 2 shared cores (a 20-step NPT on 2 ranks, 20.6 s; a failing input takes
    9-12 s, mostly the embedded interpreter's start); a longer run passes its own."""
    (workdir / "in.lmp").write_text(script)
    cmd = [mpirun(), "-np", str(ranks), *extra, "lmp", "-in", "in.lmp", "-log", "log.lammps", "-nocite"]
    what = f"LAMMPS on {ranks} rank(s) in {workdir}"
    return processes.run(cmd, what=what, timeout=timeout, cwd=workdir, env=env)


def thermo_blocks(log_text: str) -> list[np.ndarray]:
    """The numeric rows of each thermo block (one per ``run``) in a LAMMPS log."""
    blocks, rows = [], None
    for line in log_text.splitlines():
        fields = line.split()
        if fields[:1] == ["Step"]:
            rows = []
            continue
        if rows is not None:
            try:
                rows.append([float(v) for v in fields])
            except ValueError:
                blocks.append(np.array(rows))
                rows = None
    return blocks
