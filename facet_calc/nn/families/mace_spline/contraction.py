"""MACE's symmetric contraction (the product basis), a plain reference path and a fast one.

For each output irrep ``L`` (dimension ``d``) and each channel ``c`` of an atom of species ``z``::

    B[c, M] = sum_{nu=1..correlation} sum_{i1..inu, k} U_nu[M, i1, .., inu, k] W_nu[z, k, c] A[c, i1] .. A[c, inu]

``A (n_atoms, channels, dim_A)`` holds each channel's irreps side by side (MACE's
``reshape_irreps``), ``U_nu`` are the generalised Clebsch-Gordan tensors (``(d, dim_A, ..,
dim_A, k_nu)``) and ``W_nu`` the per-species weights ``(n_species, k_nu, channels)``. Both are
parameters: a converted model carries the source's ``U`` (so its basis is MACE's exactly), a
fresh one gets :func:`coupling_basis` (any basis of the same space serves).

* :meth:`SymmetricContraction.reference`: MACE's nested (Horner) contraction with the weights
  gathered per atom; plain einsums, the path the fast one is tested against.
* :meth:`SymmetricContraction.forward` (fast): ``A^{x nu}`` is symmetric, so only the monomials
  ``A_i1 .. A_inu`` with ``i1 <= .. <= inu`` are formed (816 instead of 4096 for 16 components
  and ``nu = 3``), only those with a non-zero coefficient for some output, and the weights are
  folded into the coefficients once per species present (``T_z (channels, monomials, d)``):
  per atom one batched matmul over channels. Atoms are processed by species in chunks (each
  recomputed in the backward pass when there are several, so memory stays bounded).
"""

from __future__ import annotations

import itertools
import math

import torch
from e3nn import o3
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...blocks.derived import DerivedCache
from ...blocks.wigner import wigner_3j


def coupling_basis(irreps_a: o3.Irreps, ir_out: o3.Irrep, nu: int) -> torch.Tensor:
    """A basis of the equivariant maps ``Sym^nu(irreps_a) -> ir_out``, float64
    ``(ir_out.dim, dim_A, .., dim_A, k)`` (``nu`` middle axes; ``k`` may be 0): iterated
    Clebsch-Gordan couplings, symmetrised over the ``nu`` factors, orthonormalised."""
    irs = [ir for mul, ir in irreps_a for _ in range(mul)]
    slices = [sl for (mul, ir), sl in zip(irreps_a, irreps_a.slices()) for _ in range(mul)] if all(
        m == 1 for m, _ in irreps_a) else None  # fmt: skip
    if slices is None:
        raise ValueError(f"the product basis needs one copy of each irrep per channel, got {irreps_a}")
    dim = irreps_a.dim
    columns = []
    for seq in itertools.product(range(len(irs)), repeat=nu):
        # every intermediate coupling path ir_1 x ir_2 -> l12 x ir_3 -> ...
        partial = [(irs[seq[0]], torch.eye(irs[seq[0]].dim, dtype=torch.float64))]  # (ir, (d1.., m))
        for pos, s in enumerate(seq[1:], start=2):
            reach = ir_out.l + sum(irs[q].l for q in seq[pos:])  # larger orders cannot come back
            nxt = []
            for ir_mid, t in partial:
                for ir_new in ir_mid * irs[s]:
                    if ir_new.l > reach:
                        continue
                    c = wigner_3j(ir_mid.l, irs[s].l, ir_new.l)  # (m_mid, m_s, m_new)
                    nxt.append((ir_new, torch.einsum("...a,abc->...bc", t, c)))
            partial = nxt
        for ir_fin, t in partial:
            if ir_fin != ir_out:
                continue
            full = torch.zeros((dim,) * nu + (ir_out.dim,), dtype=torch.float64)
            full[tuple(slices[s] for s in seq)] = t
            columns.append(full)
    if not columns:
        return torch.zeros((ir_out.dim,) + (dim,) * nu + (0,), dtype=torch.float64)
    sym = []
    for full in columns:  # symmetrise over the nu factors (A x .. x A is symmetric)
        perms = list(itertools.permutations(range(nu)))
        sym.append(sum(full.permute(*p, nu) for p in perms) / len(perms))
    flat = torch.stack([s.reshape(-1) for s in sym], dim=1)
    u, sv, _ = torch.linalg.svd(flat, full_matrices=False)
    rank = int((sv > 1e-10 * sv.max()).sum()) if sv.numel() and sv.max() > 0 else 0
    basis = u[:, :rank].reshape((dim,) * nu + (ir_out.dim, rank))
    return basis.movedim(nu, 0).contiguous()


def _monomials(dim: int, nu: int) -> list[tuple[int, ...]]:
    return list(itertools.combinations_with_replacement(range(dim), nu))


class SymmetricContraction(nn.Module):
    """``A (n, channels, dim_A)``, ``species (n,)`` -> ``(n, irreps_out.dim)`` in e3nn layout.

    Args:
        irreps_a: one channel's irreps (``1x0e+1x1o+..``, each once).
        irreps_out: the output irreps, every block with multiplicity ``channels``.
        correlation: largest ``nu``.
        n_params: ``n_params[j][nu - 1]``: columns ``k_nu`` of ``U`` for output block ``j``.
        n_species: number of species (rows of the weights).
    """

    def __init__(self, irreps_a: o3.Irreps, irreps_out: o3.Irreps, correlation: int,
                 n_params: list[list[int]], n_species: int) -> None:  # fmt: skip
        super().__init__()
        self.irreps_a = o3.Irreps(irreps_a)
        self.irreps_out = o3.Irreps(irreps_out)
        self.correlation = int(correlation)
        muls = {mul for mul, _ in self.irreps_out}
        if len(muls) != 1:
            raise ValueError(f"the product basis needs one multiplicity for every output irrep, got {irreps_out}")
        self.channels = muls.pop()
        self.dim_a = self.irreps_a.dim
        self.n_params = [[int(k) for k in ks] for ks in n_params]
        for j, (_, ir) in enumerate(self.irreps_out):
            for nu in range(1, self.correlation + 1):
                k = self.n_params[j][nu - 1]
                u = torch.zeros((ir.dim,) + (self.dim_a,) * nu + (k,))
                self.register_parameter(f"U_{j}_{nu}", nn.Parameter(u, requires_grad=False))
                self.register_parameter(f"W_{j}_{nu}", nn.Parameter(torch.zeros(n_species, k, self.channels)))
        #: fast path: largest (atoms x channels x monomials) block formed at once
        self.max_chunk_elements = 2**23
        self._derived = DerivedCache()

    def set_basis(self) -> None:
        """Fill every ``U`` with :func:`coupling_basis` (fresh models)."""
        with torch.no_grad():
            for j, (_, ir) in enumerate(self.irreps_out):
                for nu in range(1, self.correlation + 1):
                    u = getattr(self, f"U_{j}_{nu}")
                    u.copy_(coupling_basis(self.irreps_a, ir, nu).to(u.dtype))

    # -- the plain path -------------------------------------------------------------------
    def reference(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """MACE's nested contraction, weights gathered per atom (memory ``n c d dim_A^nu``)."""
        outs = []
        for j in range(len(self.irreps_out)):
            out = None
            for nu in range(self.correlation, 0, -1):
                u = getattr(self, f"U_{j}_{nu}")
                w = getattr(self, f"W_{j}_{nu}")[species]  # (n, k, c)
                t = torch.einsum("...k,nkc->nc...", u, w)  # (n, c, d, i.., i)
                if out is not None:
                    t = t + out
                out = (t * a.reshape(a.shape[0], a.shape[1], *([1] * nu), self.dim_a)).sum(-1)
            outs.append(out.reshape(a.shape[0], -1))  # (n, c * d): channel-major, as e3nn
        return torch.cat(outs, dim=1)

    # -- the fast path --------------------------------------------------------------------
    def _tables(self):
        """Monomials (index tuples per degree) and, per output block, the symmetrised
        coefficients ``(n_mono, d, k_total)`` over the used monomials and the weights
        ``(n_species, k_total, c)``; cached while ``U`` is unchanged."""
        us = tuple(getattr(self, f"U_{j}_{nu}") for j in range(len(self.irreps_out))
                   for nu in range(1, self.correlation + 1))  # fmt: skip

        def make():
            blocks = []
            for j, (_, ir) in enumerate(self.irreps_out):
                per_nu = []
                for nu in range(1, self.correlation + 1):
                    u = getattr(self, f"U_{j}_{nu}").detach().to(torch.float64)
                    monos = _monomials(self.dim_a, nu)
                    # coefficient of the monomial = sum of U over the orderings of its indices
                    coef = torch.zeros(len(monos), ir.dim, u.shape[-1], dtype=torch.float64)
                    for perm in set(itertools.permutations(range(nu))):
                        idx = torch.tensor(monos, dtype=torch.long)[:, list(perm)]
                        coef += u[(slice(None),) + tuple(idx.t())].permute(1, 0, 2)
                    # distinct orderings were each counted once per permutation giving them
                    counts = torch.tensor([_orderings(m) for m in monos], dtype=torch.float64)
                    coef = coef * (counts / math.factorial(nu))[:, None, None]
                    keep = coef.abs().amax(dim=(1, 2)) > 0
                    per_nu.append((nu, [m for m, k in zip(monos, keep.tolist()) if k], coef[keep]))
                blocks.append(per_nu)
            return blocks

        return self._derived.get("tables", us, make)

    def _plan(self):
        """The monomials every output block uses (one list, by degree, each degree-nu monomial
        the product of a degree-(nu-1) one and one component) and, per block, its coefficients
        over that list ``(M, d, k_total)``; cached while ``U`` is unchanged."""
        tables = self._tables()

        def make():
            used = sorted({m for per_nu in tables for _, ms, _ in per_nu for m in ms}, key=lambda m: (len(m), m))
            # every prefix of a used monomial is formed too (its parent in the chain)
            need = set(used)
            for m in used:
                for k in range(1, len(m)):
                    need.add(m[:k])
            order = sorted(need, key=lambda m: (len(m), m))
            position = {m: i for i, m in enumerate(order)}
            parents = [(position[m[:-1]] if len(m) > 1 else -1, m[-1]) for m in order]
            coefs = []
            for per_nu in tables:
                d = per_nu[0][2].shape[1]
                ks = [c.shape[2] for _, _, c in per_nu]
                full = torch.zeros(len(order), d, sum(ks), dtype=torch.float64)
                start = 0
                for (_, ms, c), k in zip(per_nu, ks):
                    if ms:
                        full[[position[m] for m in ms], :, start : start + k] = c
                    start += k
                coefs.append(full)
            degree_starts = [sum(1 for m in order if len(m) < nu) for nu in range(1, self.correlation + 2)]
            return order, parents, degree_starts, coefs

        us = tuple(getattr(self, f"U_{j}_{nu}") for j in range(len(self.irreps_out))
                   for nu in range(1, self.correlation + 1))  # fmt: skip
        return self._derived.get("plan", us, make)

    def forward(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        order, parents, starts, coefs = self._plan()
        n, c = a.shape[0], a.shape[1]
        key = ("index", a.device)
        index = self._derived._entries.get(key)
        if index is None:  # per degree: rows of the parent monomials and the new component
            index = []
            for nu in range(1, self.correlation + 1):
                sl = slice(starts[nu - 1], starts[nu])
                par = torch.tensor([p - starts[nu - 2] if nu > 1 else 0 for p, _ in parents[sl]], dtype=torch.long)
                new = torch.tensor([i for _, i in parents[sl]], dtype=torch.long)
                index.append((par.to(a.device), new.to(a.device)))
            self._derived._entries[key] = index
        # T_z (c, M, d) per block and species present: the species' weights folded into the
        # coefficients (small: no per-atom weights are gathered)
        present = torch.unique(species).tolist()
        folded = {}
        for z in present:
            blocks = []
            for j, coef in enumerate(coefs):
                w = torch.cat([getattr(self, f"W_{j}_{nu}")[z] for nu in range(1, self.correlation + 1)], dim=0)
                blocks.append(torch.einsum("mdk,kc->cmd", coef.to(a.dtype), w.to(a.dtype)))
            folded[z] = torch.cat(blocks, dim=2).transpose(1, 2).contiguous()  # (c, sum d, M)
        dims = [coef.shape[1] for coef in coefs]
        # atoms sorted by species: each species is then a slice of columns, not a gather
        sorting = None
        if len(present) > 1:
            sorting = torch.argsort(species, stable=True)
            a, species = a.index_select(0, sorting), species.index_select(0, sorting)
        chunk = max(1, self.max_chunk_elements // max(1, c * len(order)))
        pieces = []
        for start in range(0, n, chunk):
            part = slice(start, min(start + chunk, n))
            args = (a[part], species[part], index, folded, present, dims)
            if chunk < n and torch.is_grad_enabled():
                pieces.append(checkpoint(_contract, *args, use_reentrant=False))
            else:
                pieces.append(_contract(*args))
        out = torch.cat(pieces, dim=0)
        if sorting is not None:
            out = out.index_select(0, torch.argsort(sorting))
        return out


def _contract(a, species, index, folded, present, dims) -> torch.Tensor:
    """``a (n, c, dim_A)`` -> ``(n, irreps_out.dim)``: the monomials as rows of ``(M, c, n)``
    (each a product of a lower one and one component: gathers of whole contiguous ``(c, n)``
    rows; a gather along a middle axis was half the step), then per species one batched matmul
    over channels with its folded table (the ``(c, M, n)`` view needs no copy)."""
    n, c = a.shape[0], a.shape[1]
    at = a.permute(2, 1, 0).contiguous()  # (dim_A, c, n)
    levels, previous = [], None
    for nu, (par, new) in enumerate(index, start=1):
        rows = at.index_select(0, new)
        if nu > 1:
            rows = previous.index_select(0, par) * rows
        levels.append(rows)
        previous = rows
    p = torch.cat(levels, dim=0).transpose(0, 1)  # (c, M, n) view of (M, c, n)
    if len(present) == 1:
        out = torch.bmm(folded[present[0]], p)  # (c, sum d, n)
    else:
        # species sorted (see forward): one slice of columns each
        parts = []
        for z in present:
            start, stop = (int(torch.searchsorted(species, v)) for v in (z, z + 1))
            if stop > start:
                parts.append(torch.bmm(folded[z], p[:, :, start:stop]))
        out = torch.cat(parts, dim=2)
    # (c, [d_0 | d_1 ..], n) -> e3nn layout (n, [c x d_0 | c x d_1 ..])
    outs, start = [], 0
    for d in dims:
        outs.append(out[:, start : start + d, :].permute(2, 0, 1).reshape(n, c * d))
        start += d
    return torch.cat(outs, dim=1)


def _orderings(m: tuple[int, ...]) -> int:
    """Number of distinct orderings of the multiset ``m``."""
    count = math.factorial(len(m))
    for v in set(m):
        count //= math.factorial(m.count(v))
    return count
