"""DFT-D3 dispersion as a term added to the potential's energy (Grimme et al., J. Chem. Phys.
132, 154104 (2010); Becke-Johnson damping: J. Comput. Chem. 32, 1456 (2011)).

The pair energies come from torch-dftd's ``edisp`` (pip install "facet_calc[d3]"), evaluated
on the calculator's device; the neighbour list is the same vesin list the model uses, with the
D3 cutoffs. torch-dftd was chosen over tad-dftd3 on measurement (``benchmarks/d3.py``): both
agree with the reference implementation (simple-dftd3, the ``dftd3`` wheel), but tad-dftd3 has
no periodic boundary conditions, and torch-dftd's own neighbour search (pymatgen) costs seconds
for a 4-atom graphite cell, which the vesin list here avoids.

Only the two-body term is evaluated (as in SevenNet's and MACE's D3 calculators): the
three-body Axilrod-Teller-Muto term (``s9``) is not included. Defaults match simple-dftd3's
real-space cutoffs (60 bohr for pairs, 40 bohr for coordination numbers), so results agree with
``dftd3.interface.RationalDampingParam(method=xc, atm=False)`` to about 1e-9 eV/atom.

Example::

    >>> from ase.build import molecule
    >>> d3 = D3Dispersion(damping="bj", xc="pbe")
    >>> out = d3(molecule("C6H6"))  # doctest: +SKIP
    >>> out["energy"], out["forces"].shape  # doctest: +SKIP
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import Bohr, Hartree

from .graph import build_graph

#: damping functions torch-dftd implements: rational (Becke-Johnson), zero, and their
#: modified forms (Sherrill et al.)
DAMPINGS = ("bj", "zero", "bjm", "zerom")
#: simple-dftd3's default real-space cutoffs, in bohr
DEFAULT_CUTOFF_BOHR = 60.0
DEFAULT_CN_CUTOFF_BOHR = 40.0
#: the options ``FacetCalculator(dispersion={...})`` accepts, with their defaults
DEFAULT_OPTIONS = {
    "method": "d3",
    "damping": "bj",
    "xc": "pbe",
    "cutoff": DEFAULT_CUTOFF_BOHR * Bohr,  # Angstrom
    "cn_cutoff": DEFAULT_CN_CUTOFF_BOHR * Bohr,  # Angstrom
}


def _import_edisp():
    try:
        from torch_dftd.dftd3_xc_params import get_dftd3_default_params
        from torch_dftd.functions.dftd3 import edisp
    except ImportError as err:
        raise ImportError(
            "D3 dispersion needs the torch-dftd package: pip install 'facet_calc[d3]' "
            "(or pip install torch-dftd together with your torch version pinned)"
        ) from err
    return edisp, get_dftd3_default_params


@cache
def _reference_tables(dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    """The D3 reference tables (C6 by coordination number, radii) that ship with torch-dftd,
    read once per dtype and device (reading them takes about a second)."""
    from torch_dftd.nn.dftd3_module import DFTD3Module

    tables = DFTD3Module({}, dtype=dtype).to(device)
    return {name: getattr(tables, name) for name in ("c6ab", "r0ab", "rcov", "r2r4")}


def dispersion_options(spec: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Normalise ``dispersion=`` ("d3", a dict of options, or None) to a full options dict;
    ``ValueError`` naming the problem for anything else."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, str):
        spec = {"method": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"dispersion must be None, 'd3' or a dict of D3 options, got {spec!r}")
    unknown = sorted(set(spec) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown dispersion option(s) {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    options = {**DEFAULT_OPTIONS, **spec}
    if str(options["method"]).lower() != "d3":
        raise ValueError(f"dispersion method {options['method']!r} is not available; the only one is 'd3'")
    options["method"] = "d3"
    options["damping"] = str(options["damping"]).lower()
    if options["damping"] not in DAMPINGS:
        raise ValueError(f"D3 damping {options['damping']!r} is unknown; choose one of {', '.join(DAMPINGS)}")
    options["xc"] = str(options["xc"]).lower()
    for key in ("cutoff", "cn_cutoff"):
        value = float(options[key])
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"D3 {key} must be a positive distance in Angstrom, got {options[key]!r}")
        options[key] = value
    if options["cn_cutoff"] > options["cutoff"]:
        raise ValueError(
            f"D3 cn_cutoff ({options['cn_cutoff']} A) must not exceed cutoff ({options['cutoff']} A): "
            "coordination numbers are counted over the pair list"
        )
    return options


class D3Dispersion:
    """DFT-D3 two-body dispersion energy, forces and stress of an ``Atoms``.

    Args:
        damping: ``"bj"`` (rational, Becke-Johnson; the default), ``"zero"``, ``"bjm"``,
            ``"zerom"``.
        xc: the functional whose D3 parameters are used (``"pbe"``: SevenNet's training data).
        cutoff: pair cutoff in Angstrom (default 60 bohr = 31.75 A, as simple-dftd3).
        cn_cutoff: coordination-number cutoff in Angstrom (default 40 bohr = 21.17 A).
        device, dtype: where and in which precision to evaluate (default CPU, float64; the
            cost is in the pair list, not in the arithmetic).

    ``__call__(atoms)`` returns ``energy`` (eV), ``energies (n_atoms,)`` (eV; each pair's
    energy split evenly between its two atoms), ``forces (n_atoms, 3)`` (eV/A) and, for a cell
    of full rank, ``stress (6,)`` (eV/A^3, Voigt, ASE sign).
    """

    def __init__(
        self,
        damping: str = "bj",
        xc: str = "pbe",
        cutoff: float = DEFAULT_OPTIONS["cutoff"],
        cn_cutoff: float = DEFAULT_OPTIONS["cn_cutoff"],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        options = dispersion_options({"damping": damping, "xc": xc, "cutoff": cutoff, "cn_cutoff": cn_cutoff})
        edisp, get_params = _import_edisp()
        try:
            self.params = get_params(options["damping"], options["xc"], old=False)
        except Exception as err:  # torch-dftd raises a bare error for a missing functional
            raise ValueError(
                f"torch-dftd has no D3({options['damping']}) parameters for the functional {xc!r}: {err}"
            ) from err
        self._edisp = edisp
        self.damping = options["damping"]
        self.cutoff = options["cutoff"]
        self.cn_cutoff = options["cn_cutoff"]
        self.device = torch.device(device)
        self.dtype = dtype
        self._tables = _reference_tables(dtype, str(self.device))

    def __call__(self, atoms: Atoms) -> dict[str, Any]:
        n_atoms = len(atoms)
        if n_atoms == 0:
            out = {"energy": 0.0, "energies": np.zeros(0), "forces": np.zeros((0, 3))}
            return {**out, "stress": np.zeros(6)} if atoms.cell.rank == 3 else out
        graph = build_graph(atoms, self.cutoff)
        device, dtype = self.device, self.dtype
        receivers = torch.as_tensor(graph.receivers, device=device)
        senders = torch.as_tensor(graph.senders, device=device)
        edge_vec = torch.as_tensor(graph.edge_vectors, dtype=dtype, device=device).requires_grad_(True)
        numbers = torch.as_tensor(atoms.numbers, device=device)
        r_bohr = torch.linalg.norm(edge_vec, dim=-1) / Bohr
        # Each atom is passed as its own "graph" (batch_edge = receiver), so edisp returns the
        # per-atom sums of the half pair energies: per-atom energies in one pass. The cell
        # argument only sets that count (it is used by the three-body term, which is off).
        energies = Hartree * self._edisp(
            numbers,
            r_bohr,
            torch.stack([receivers, senders]),
            **self._tables,
            params=self.params,
            cutoff=self.cutoff / Bohr,
            cnthr=self.cn_cutoff / Bohr,
            batch=torch.arange(n_atoms, device=device),
            batch_edge=receivers,
            cell=edge_vec.new_zeros((n_atoms, 1)),
            damping=self.damping,
            bidirectional=True,
            abc=False,
        )
        energy = energies.sum()
        if graph.receivers.size == 0:
            grad = torch.zeros_like(edge_vec)
        else:
            (grad,) = torch.autograd.grad(energy, [edge_vec])
        # r_ij = pos[j] - pos[i] + ...: dE/dpos_j += g, dE/dpos_i -= g (as nn.model.evaluate)
        forces = torch.zeros((n_atoms, 3), dtype=dtype, device=device)
        forces.index_add_(0, receivers, grad)
        forces.index_add_(0, senders, -grad)
        out = {
            "energy": float(energy.detach().double()),
            "energies": energies.detach().double().cpu().numpy(),
            "forces": forces.double().cpu().numpy(),
        }
        if atoms.cell.rank == 3:
            w = (grad.transpose(0, 1) @ edge_vec.detach()).double().cpu().numpy()
            out["stress"] = full_3x3_to_voigt_6_stress(0.5 * (w + w.T) / atoms.get_volume())
        return out
