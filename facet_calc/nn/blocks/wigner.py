"""Wigner-3j (real Clebsch-Gordan) tables in one fixed sign convention, whatever e3nn is installed.

The converted potentials were trained with e3nn >= 0.5, whose ``wigner_3j(l1, l2, l3)`` differs
from e3nn 0.4.4's (what mace-torch 0.3.16 pins) by a sign for some triples, e.g. (1, 2, 2) and
(1, 3, 3); every table is unique up to that sign. A weight trained with one convention and
evaluated with the other silently changes the energy (2.4 meV on an 8-atom chiral cluster for
7net-0). So facet_calc takes e3nn's table and fixes its sign: the first non-zero entry (in
e3nn's flat order) has the sign recorded here from e3nn >= 0.5, for every triple with
``l1, l2, l3 <= 8``. ``python -m facet_calc.nn.blocks.wigner`` prints the record (run it with
e3nn >= 0.5 to regenerate; a test checks it against the installed e3nn).
"""

from __future__ import annotations

import torch
from e3nn import o3

#: the largest order the sign record covers
L_MAX = 8

#: ``+``/``-``: sign of the first non-zero entry of e3nn >= 0.5's table, triples in the order of
#: :func:`triples`
REFERENCE_SIGNS = (
    "++++++++++++-+--+--+--+--+--+--+-+++-+--+++--+++--+++--+++--+++--++--+++-++--++--+++-+--"
    "++--+--++--+--++-+--+++--++++-++--+++--++-+--++--+++--++--++--++--+--++-+--+++++-++--+++--"
    "++-++--++--+--++--+++--++--++--++--+--++-+++-++--+++--++++--++-++--++--+--++--+++--++--++-"
    "-++--+++-++--++--+++--++++--++-++--++--+--++--+++--++--++++++-++--++--+++--++++--++-++--"
    "++--+--++--++"
)


#: the same record of e3nn 0.4.4 (what mace-torch 0.3.16 pins, and what the MACE foundation
#: models were trained and are evaluated with); the MACE family builds its tables in this
#: convention (config ``"wigner_convention": "e3nn-0.4"``)
REFERENCE_SIGNS_E3NN_0_4 = (
    "++++++++++++-++-++-++-++-++-++-++++--++-+++--+++--+++--+++--+++--++--++--++--+++-+++-+--++"
    "+-+--+++-++-+++++-++++-+++--++--+++--+--++-+++-+++---++-+++--++-+---+++---+++--++--+++--+-"
    "-++-++---++-+++-+++---++-+++-+++-+--+++++--++--++---+-+--++--++-++---++-+++-+++---+--+++-+"
    "+--++--++--+---+++-++-+---+--++-+++--++-+++-+++---+--+++-++-+---++-++++--+-+---++-++-+++--"
    "++-+++-++"
)

#: sign records by convention name: ``"e3nn-0.5"`` (e3nn >= 0.5, the default) and ``"e3nn-0.4"``
CONVENTIONS = {"e3nn-0.5": REFERENCE_SIGNS, "e3nn-0.4": REFERENCE_SIGNS_E3NN_0_4}


def triples(l_max: int = L_MAX) -> list[tuple[int, int, int]]:
    """Every ``(l1, l2, l3)`` with ``l1, l2, l3 <= l_max`` and ``|l1 - l2| <= l3 <= l1 + l2``."""
    return [
        (l1, l2, l3)
        for l1 in range(l_max + 1)
        for l2 in range(l_max + 1)
        for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1)
    ]


_INDEX = {t: k for k, t in enumerate(triples())}


def first_nonzero_sign(table: torch.Tensor) -> int:
    flat = table.flatten()
    return 1 if float(flat[flat.abs() > 1e-8][0]) > 0 else -1


def wigner_3j(l1: int, l2: int, l3: int, dtype: torch.dtype = torch.float64,
              convention: str = "e3nn-0.5") -> torch.Tensor:  # fmt: skip
    """``(2 l1 + 1, 2 l2 + 1, 2 l3 + 1)`` real Wigner-3j table in ``convention`` (a key of
    :data:`CONVENTIONS`; default e3nn >= 0.5's), computed in float64, then cast."""
    key = (int(l1), int(l2), int(l3))
    if key not in _INDEX:
        raise ValueError(f"no Wigner-3j sign record for {key}: facet_calc covers l1, l2, l3 <= {L_MAX}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown Wigner-3j convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    table = o3.wigner_3j(*key, dtype=torch.float64)
    wanted = 1 if CONVENTIONS[convention][_INDEX[key]] == "+" else -1
    if first_nonzero_sign(table) != wanted:
        table = -table
    return table.to(dtype)


def sign_record() -> str:
    """The record of the installed e3nn (equal to :data:`REFERENCE_SIGNS` for e3nn >= 0.5)."""
    return "".join("+" if first_nonzero_sign(o3.wigner_3j(*t, dtype=torch.float64)) > 0 else "-" for t in triples())


if __name__ == "__main__":
    print(sign_record())
