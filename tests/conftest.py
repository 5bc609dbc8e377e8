"""Shared fixtures: loaded potentials are expensive (seconds), so each is built once."""

import os
import sys
import warnings

# Before torch loads its OpenMP runtime: idle threads spin briefly and then sleep (as
# `facet-calc` sets it), so the tests and the example scripts they start (which inherit this) do
# not burn the cores other processes need; a user's own setting wins.
from facet_calc.cli import short_openmp_spin  # noqa: E402 (imports no torch)

short_openmp_spin(os.environ, "torch" in sys.modules)

import pytest  # noqa: E402

from facet_calc import FacetCalculator, load_potential  # noqa: E402

warnings.filterwarnings("ignore", module="sevenn")


@pytest.fixture(scope="session")
def potential64():
    return load_potential("7net-0-spline", dtype="float64")


@pytest.fixture(scope="session")
def potential32():
    return load_potential("7net-0-spline", dtype="float32")


@pytest.fixture()
def calc64(potential64):
    """A fresh float64 calculator (cheap: shares the loaded potential)."""
    return FacetCalculator(potential64)


@pytest.fixture()
def calc32(potential32):
    return FacetCalculator(potential32)


@pytest.fixture(scope="session")
def sevenn_reference64():
    pytest.importorskip("sevenn", reason="the fidelity reference needs the test extra: pip install '.[test]'")
    from facet_calc.convert.reference import SevenNetReference

    return SevenNetReference("7net-0", "float64")


def interrupt_at_step(monkeypatch, driver: type, step: int) -> None:
    """Make ``driver.step`` (an ASE optimizer or MD class) raise KeyboardInterrupt on its
    ``step``-th call, as Ctrl-C there would; the earlier steps run as usual."""
    calls, original = {"n": 0}, driver.step

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(driver, "step", interrupted)
