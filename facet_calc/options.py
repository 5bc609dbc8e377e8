"""Device, dtype and each job's defaults, resolved in one place for every engine.

The ASE calculator, the torch-sim model, the LAMMPS pair style, the workflows and the CLI all
call these, so ``"auto"`` and a job's default precision mean the same thing everywhere::

    >>> resolve_dtype("float64")
    torch.float64
    >>> job_dtype("phonons")
    'float64'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on first use: the CLI's parser reads JOB_DTYPES without it
    import torch

#: the device a calculator, torch-sim model or workflow uses when none is given
DEFAULT_DEVICE = "auto"
#: the dtype for jobs that follow one trajectory (MD, relaxations, single points)
DEFAULT_DTYPE = "float32"

#: each job's default dtype: float64 where finite differences or small energy differences
#: decide the result (phonons, equations of state, elastic constants)
JOB_DTYPES = {"single": "float32", "relax": "float32", "md": "float32", "phonons": "float64", "eos": "float64",
              "elastic": "float64"}  # fmt: skip

def resolve_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``torch.float32`` or ``torch.float64`` from a name or dtype (``None``: the default)."""
    import torch

    dtypes = {"float32": torch.float32, "float64": torch.float64}
    dtype = DEFAULT_DTYPE if dtype is None else dtype
    if isinstance(dtype, torch.dtype) and dtype in dtypes.values():
        return dtype
    if isinstance(dtype, str) and dtype in dtypes:
        return dtypes[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def job_dtype(job: str) -> str:
    """The default dtype name of a workflow job (``"single"``, ``"relax"``, ``"md"``,
    ``"phonons"``, ``"eos"``, ``"elastic"``)."""
    try:
        return JOB_DTYPES[job]
    except KeyError:
        raise ValueError(f"unknown job {job!r}; jobs: {', '.join(JOB_DTYPES)}") from None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A torch device from ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when torch
    sees one, else the CPU; ``None`` means ``"auto"``). ``ValueError`` for anything else, or
    for CUDA where there is none."""
    import torch

    device = DEFAULT_DEVICE if device is None else device
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use 'cpu' or 'auto'")
    return device


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when the current one is 0."""
    import torch

    if a.type != b.type:
        return False
    index = torch.cuda.current_device() if a.type == "cuda" else None
    return (a.index if a.index is not None else index) == (b.index if b.index is not None else index)
