"""The held-out set facet-s-7net0 0.1.0 was measured on: 700 structures drawn (seed 2026) from the
recipe's stages that its training never saw (substitutions, defects, clusters and molecules).

    python models/facet-s-7net0/heldout.py    # data/parts/*.extxyz -> data/heldout.extxyz
"""

from pathlib import Path

import numpy as np
from ase.io import read, write

DATA = Path(__file__).resolve().parent / "data"

if __name__ == "__main__":
    parts = ("substitution", "defects", "clusters")
    frames = [a for part in parts for a in read(DATA / "parts" / f"{part}.extxyz", ":")]
    chosen = np.sort(np.random.default_rng(2026).permutation(len(frames))[:700])
    write(DATA / "heldout.extxyz", [frames[i] for i in chosen])
