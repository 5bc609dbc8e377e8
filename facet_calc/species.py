"""SpeciesTable: atomic number <-> a model's species index, one mapping for every caller.

A potential knows a list of elements (``config["atomic_numbers"]``); its species index is the
position in that list. The calculator, torch-sim, LAMMPS, the trainer and D3 all map through
this table, so an unknown element gets the same message everywhere::

    >>> table = SpeciesTable([8, 1])
    >>> table.indices([1, 1, 8]).tolist()
    [1, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.data import atomic_numbers as _number_of_symbol
from ase.data import chemical_symbols


class UnknownElementError(ValueError):
    """An element the potential has no parameters for."""


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)


class SpeciesTable:
    """The elements of a potential, in species-index order.

    Args:
        atomic_numbers: the potential's elements (no repeats, each 1..118).
        owner: the potential's name, for messages.
    """

    def __init__(self, atomic_numbers: Sequence[int], owner: str = "this potential") -> None:
        numbers = [int(z) for z in atomic_numbers]
        if not numbers or len(set(numbers)) != len(numbers) or not all(0 < z < len(chemical_symbols) for z in numbers):
            raise ValueError(f"atomic_numbers must be distinct atomic numbers 1..118, got {list(atomic_numbers)}")
        self.atomic_numbers = numbers
        self.owner = owner
        self._lookup = np.full(max(numbers) + 1, -1, dtype=np.int64)
        self._lookup[numbers] = np.arange(len(numbers))

    def __len__(self) -> int:
        return len(self.atomic_numbers)

    def __contains__(self, z: int) -> bool:
        return 0 <= int(z) < len(self._lookup) and self._lookup[int(z)] >= 0

    def indices(self, numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(n,)`` int64 species indices of atomic ``numbers``; :class:`UnknownElementError`
        naming the elements the potential lacks and those it has."""
        numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        known = (numbers >= 0) & (numbers < len(self._lookup))
        species = np.full(numbers.shape, -1, dtype=np.int64)
        species[known] = self._lookup[numbers[known]]
        if np.any(species < 0):
            unknown = sorted({int(z) for z in numbers[species < 0]})
            raise UnknownElementError(
                f"{self.owner} has no parameters for element(s) {', '.join(map(_symbol, unknown))}; "
                f"it supports: {' '.join(_symbol(z) for z in sorted(self.atomic_numbers))}"
            )
        return species

    def indices_of_symbols(self, symbols: Sequence[str]) -> np.ndarray:
        """Species indices of chemical symbols (LAMMPS' ``pair_coeff * * Si O``); a word that
        is not an element symbol is a ``ValueError`` that says so."""
        numbers = []
        for name in symbols:
            z = _number_of_symbol.get(name, 0)
            if z == 0:
                raise ValueError(f"{name!r} is not a chemical element symbol")
            numbers.append(z)
        return self.indices(numbers)
