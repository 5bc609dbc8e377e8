"""What ``pair_style facet`` (``pair_facet.cpp``) calls in the embedded interpreter.

The C++ side passes raw addresses of its arrays (LAMMPS' own ``f``, ``eatom``, ``vatom`` and
buffers it owns for the edges); :meth:`PairModel.compute` views them with numpy without copying
the LAMMPS arrays, runs :func:`~facet_calc.lammps.decomposed.evaluate_domain` and adds forces,
per-atom energies and per-atom virials in place. Ghost exchanges call back into the pair style
through ``facet_pair_exchange(pair, data, width, reverse)``.

LAMMPS conventions used here: ``f`` is ``(nall, 3)``, accumulated, ghost rows returned to their
owners by LAMMPS' reverse communication (``newton on``); the virial is ``W = sum_i r_i (x) f_i``
in eV, ordered ``xx yy zz xy xz yz``, so ``W = -dE/d(strain)`` (the negative of
``facet_calc.nn.forward.evaluate``'s ``virial``); ``vatom`` takes half of each edge's ``-v (x) g``
at each end (:func:`facet_calc.nn.forward.edge_forces_and_virial`).
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from ..nn.forward import edge_forces_and_virial
from ..potential import load_potential
from .decomposed import DistanceCheck, evaluate_domain

_EXCHANGE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int)
#: LAMMPS' virial order xx yy zz xy xz yz as (row, column) of a 3x3 tensor
VOIGT_LAMMPS = ([0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2])


def _view(address: int, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """A numpy array over memory the caller owns (no copy); empty without an address."""
    count = int(np.prod(shape))
    if count == 0 or address == 0:
        return np.zeros(shape, dtype=dtype)
    ctype = np.ctypeslib.as_ctypes_type(dtype)
    return np.ctypeslib.as_array((ctype * count).from_address(address)).reshape(shape)


class LammpsExchange:
    """Ghost exchanges through the pair style's forward/reverse communication.

    LAMMPS' buffers are float64. Float64 features travel as they are (``reverse`` adds into
    float64 CPU rows in place, without a copy); float32 features travel two to a double, bits
    unchanged, and the reverse sums are taken in float32 (the model's own precision), which
    halves the traffic and skips the conversions.
    """

    def __init__(self, function: int, pair: int, n_local: int, n_all: int) -> None:
        self._call = _EXCHANGE(function)
        self._pair = pair
        self.n_local = n_local
        self.n_all = n_all

    def forward(self, owned: torch.Tensor) -> torch.Tensor:
        if owned.shape[0] != self.n_local:
            raise ValueError(f"forward exchange needs {self.n_local} owned rows, got {owned.shape[0]}")
        buffer, width = self._buffer(owned.shape[1], owned.dtype, empty=True)  # every ghost row is written
        buffer[: self.n_local, : owned.shape[1]] = owned.detach().to("cpu", buffer.dtype)
        self._call(self._pair, buffer.data_ptr(), width, 0, int(buffer.dtype == torch.float32))
        return buffer[:, : owned.shape[1]].to(owned.device)

    def reverse(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.shape[0] != self.n_all:  # LAMMPS reads every ghost row: a short buffer would be overrun
            raise ValueError(f"reverse exchange needs {self.n_all} rows (owned + ghosts), got {rows.shape[0]}")
        d = rows.shape[1]
        if rows.dtype == torch.float64 and rows.device.type == "cpu" and rows.is_contiguous():
            buffer, width = rows.detach(), d
        else:
            buffer, width = self._buffer(d, rows.dtype, empty=False)
            buffer[:, :d] = rows.detach().to("cpu", buffer.dtype)
        self._call(self._pair, buffer.data_ptr(), width, 1, int(buffer.dtype == torch.float32))
        return buffer[: self.n_local, :d].to(rows.device, rows.dtype)

    def _buffer(self, d: int, dtype: torch.dtype, empty: bool) -> tuple[torch.Tensor, int]:
        """A CPU ``(n_all, columns)`` buffer for ``d`` features and its width in doubles."""
        make = torch.empty if empty else torch.zeros
        if dtype == torch.float32:
            width = (d + 1) // 2
            return make((self.n_all, 2 * width), dtype=torch.float32), width
        return make((self.n_all, d), dtype=torch.float64), d


class PairModel:
    """A loaded potential as ``pair_style facet`` uses it.

    Args:
        potential: shipped potential name or potential folder.
        dtype: ``"float32"`` or ``"float64"``.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda"`` uses the rank's current CUDA device: with one
            GPU per rank, set ``CUDA_VISIBLE_DEVICES`` per rank).
    """

    def __init__(self, potential: str, dtype: str = "float32", device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"pair_style facet: device must be cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("pair_style facet: device cuda was requested but torch sees no CUDA device; use cpu")
        self.potential = load_potential(potential, dtype=dtype, device=device)
        self.model = self.potential.model
        self.device = torch.device(device)
        self.dtype = self.potential.dtype
        self.cutoff = self.potential.cutoff
        widths = self.model.feature_widths
        #: the widest node-feature row exchanged between layers (doubles per atom)
        self.feature_width = int(max(widths))
        self.check_distances = DistanceCheck(self.potential.atomic_numbers)

    def species_indices(self, elements: list[str]) -> list[int]:
        """Model species index of each LAMMPS type's element; ``ValueError`` naming the unknown one."""
        try:
            return self.potential.species.indices_of_symbols(elements).tolist()
        except ValueError as err:
            raise ValueError(f"pair_coeff * * lists one element per type: {err}") from None

    def compute(
        self,
        n_local: int,
        n_all: int,
        n_edges: int,
        species_ptr: int,
        receivers_ptr: int,
        senders_ptr: int,
        edge_vec_ptr: int,
        f_ptr: int,
        eatom_ptr: int,
        vatom_ptr: int,
        out_ptr: int,
        pair_ptr: int,
        exchange_ptr: int,
        ids_ptr: int = 0,
    ) -> None:
        """Add forces (and per-atom energies/virials where asked) into LAMMPS' arrays; write
        ``[energy, Wxx, Wyy, Wzz, Wxy, Wxz, Wyz]`` of this domain to ``out``. Coincident atoms
        (the calculator's check) raise ``GeometryError`` naming their LAMMPS IDs (``ids``, int64
        per owned and ghost atom) before anything is computed."""
        device, dtype = self.device, self.dtype
        species = torch.from_numpy(_view(species_ptr, np.int64, (n_all,)).copy()).to(device)
        receivers = torch.from_numpy(_view(receivers_ptr, np.int64, (n_edges,)).copy()).to(device)
        senders = torch.from_numpy(_view(senders_ptr, np.int64, (n_edges,)).copy()).to(device)
        vec64 = torch.from_numpy(_view(edge_vec_ptr, np.float64, (n_edges, 3)).copy()).to(device)
        ids = _view(ids_ptr, np.int64, (n_all,)) if ids_ptr else None
        self.check_distances(vec64, senders, receivers, species, ids)
        exchange = LammpsExchange(exchange_ptr, pair_ptr, n_local, n_all)
        result = evaluate_domain(self.model, species, vec64.to(dtype), senders, receivers, n_local, exchange)
        grad = result["edge_grad"].to(torch.float64)
        scattered = edge_forces_and_virial(grad, vec64, senders, receivers, n_all, per_atom_virial=bool(vatom_ptr))
        f = _view(f_ptr, np.float64, (n_all, 3))
        f += scattered["forces"].cpu().numpy()
        # LAMMPS' virial W = sum_i r_i (x) f_i = -dE/d(strain)
        rows, cols = VOIGT_LAMMPS
        out = _view(out_ptr, np.float64, (7,))
        out[0] = float(result["energies"].double().sum())  # float64 sum: equals the sum of pe/atom
        out[1:] = -scattered["virial"][0][rows, cols].cpu().numpy()
        if eatom_ptr:
            eatom = _view(eatom_ptr, np.float64, (n_local,))
            eatom += result["energies"].double().cpu().numpy()
        if vatom_ptr:
            vatom = _view(vatom_ptr, np.float64, (n_all, 6))
            vatom -= scattered["atom_virial"][:, rows, cols].cpu().numpy()
