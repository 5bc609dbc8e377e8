"""The facet-calc command, run in-process on files it writes and reads."""

import json

import pytest
from ase.build import bulk
from ase.io import write

from facet_calc.cli import main


def test_list_and_info(capsys):
    assert main(["list"]) == 0
    assert "7net-0-spline" in capsys.readouterr().out.split()
    assert main(["info", "7net-0-spline"]) == 0
    assert "MPtrj" in capsys.readouterr().out


def test_single_and_relax_write_summaries(tmp_path, capsys):
    poscar = tmp_path / "POSCAR"
    atoms = bulk("Al", "fcc", a=4.2)
    atoms.rattle(0.02, seed=0)
    write(poscar, atoms, format="vasp")
    assert main(["single", str(poscar), "--out", str(tmp_path / "single"), "--quiet"]) == 0
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert single["n_atoms"] == 1 and "energy_eV" in single
    assert main(["relax", str(poscar), "--out", str(tmp_path / "relax"), "--quiet", "--fmax", "0.005"]) == 0
    relaxed = json.loads((tmp_path / "relax" / "summary.json").read_text())
    assert relaxed["converged"] and relaxed["volume_A3"] < atoms.get_volume()
    assert (tmp_path / "relax" / "POSCAR_relaxed.extxyz").is_file()


def test_eos_with_plot(tmp_path):
    path = tmp_path / "si.extxyz"
    write(path, bulk("Si", "diamond", a=5.45))
    assert main(["eos", str(path), "--out", str(tmp_path), "--plot", "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 80 < summary["B0_GPa"] < 110
    assert (tmp_path / "si_eos.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("this is not a structure\n"), "could not read"),
        (lambda p: write(p, bulk("Po", "sc", a=3.3), format="extxyz"), "no parameters for element"),
    ],
)
def test_errors_are_one_sentence_with_status_2(tmp_path, capsys, make, message):
    path = tmp_path / "input.extxyz"
    make(path)
    assert main(["single", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
