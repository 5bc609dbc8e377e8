"""Release metadata, checked without building: pyproject's package data covers every file of
every shipped potential, and the licence files it names exist. (CI builds the sdist and wheel
and inspects their file lists: .ci/check_dist.py.)"""

import fnmatch
import json
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_data_covers_every_indexed_potential_file(pyproject):
    patterns = pyproject["tool"]["setuptools"]["package-data"]["facet_calc.potentials"]
    index = json.loads((ROOT / "potentials" / "index.json").read_text())
    files = ["index.json", "LICENSE-SevenNet"] + [f"{name}/{f}" for name, e in index.items() for f in e["sha256"]]
    assert len(index) >= 4
    uncovered = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert uncovered == []
    assert all((ROOT / "potentials" / f).is_file() for f in files)


def test_licence_files_exist_and_credit_sevennet(pyproject):
    project = pyproject["project"]
    assert project["license"] == "MIT"
    for name in project["license-files"]:
        assert (ROOT / name).is_file(), name
    sevennet = (ROOT / "potentials" / "LICENSE-SevenNet").read_text()
    assert "MIT License" in sevennet and "Copyright (c) 2024 Yutack Park" in sevennet
