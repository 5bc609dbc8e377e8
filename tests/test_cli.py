"""The facet-calc command, run in-process on files it writes and reads."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write
from conftest import interrupt_at_step

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
    # the command reports what the workflow gives (B0 of Si against PBE: tests/test_workflows.py)
    from facet_calc import FacetCalculator
    from facet_calc.workflows import eos

    direct = eos(bulk("Si", "diamond", a=5.45), FacetCalculator(dtype="float64"), max_strain=0.05, progress=False)
    assert summary["B0_GPa"] == pytest.approx(direct.b0_gpa, rel=1e-12)  # measured: equal
    assert summary["V0_per_atom_A3"] == pytest.approx(direct.v0_per_atom_a3, rel=1e-12)
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


def test_overwrite_replaces_existing_results(tmp_path, capsys):
    path = tmp_path / "al.extxyz"
    write(path, bulk("Al", "fcc", a=4.05))
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert main(["single", str(path), "--out", str(out), "--quiet"]) == 2
    assert (out / "summary.json").read_text() == "{}"  # refused: nothing was touched
    assert main(["single", str(path), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_atoms"] == 1


def test_single_uses_every_frame_and_others_take_frame(tmp_path, calc32):
    frames = [bulk("Si", "diamond", a=a) for a in (5.40, 5.43, 5.50)]
    path = tmp_path / "frames.extxyz"
    write(path, frames)
    assert main(["single", str(path), "--out", str(tmp_path / "all"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["n_frames"] == 3
    for frame, row in zip(frames, summary["frames"]):
        atoms = frame.copy()
        atoms.calc = calc32
        # float32, batched against one by one (edges summed in another order): measured 1.9e-6
        # eV (2 ulp of 10.8 eV); the frames' energies differ by 5.8e-4 eV and more
        assert row["energy_eV"] == pytest.approx(atoms.get_potential_energy(), abs=2e-5)
    # the written frames carry the batched results (forces, stress) of each frame
    written = read(tmp_path / "all" / "frames_single.extxyz", index=":")
    for frame, back in zip(frames, written):
        atoms = frame.copy()
        atoms.calc = calc32
        np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), atol=1e-5)
        np.testing.assert_allclose(back.get_stress(), atoms.get_stress(), atol=1e-6)  # float32: measured 1.2e-7
    assert main(["single", str(path), "--frame", "-1", "--out", str(tmp_path / "last"), "--quiet"]) == 0
    last = json.loads((tmp_path / "last" / "summary.json").read_text())
    assert last["energy_eV"] == pytest.approx(summary["frames"][-1]["energy_eV"], abs=2e-5)  # as above


def test_ctrl_c_during_md_writes_what_was_done(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt in the 6th step: status 130, a summary of the 5 steps done."""
    from ase.md.verlet import VelocityVerlet

    interrupt_at_step(monkeypatch, VelocityVerlet, 6)
    path = tmp_path / "si.extxyz"
    write(path, bulk("Si", "diamond", a=5.43, cubic=True))
    argv = ["md", str(path), "--ensemble", "nve", "--steps", "50", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 130
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["steps_done"] == 5 and summary["steps"] == 50
    assert "interrupted after 5 of 50 steps" in capsys.readouterr().err
    from ase.io import read

    assert len(read(tmp_path / "si_md.traj", ":")) >= 1  # the trajectory was closed, readable


def test_no_verify_loads_an_unlisted_folder_with_a_warning(tmp_path, capsys):
    import shutil

    from facet_calc.potential import potentials_dir

    folder = tmp_path / "mine"
    shutil.copytree(potentials_dir() / "7net-0-spline", folder)
    path = tmp_path / "al.extxyz"
    write(path, bulk("Al", "fcc", a=4.05))
    argv = ["single", str(path), "--potential", str(folder), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2
    with pytest.warns(UserWarning, match="without checking its files"):
        assert main(argv + ["--no-verify"]) == 0


def test_molecules_relax_and_jobs_that_need_a_crystal_refuse_them(tmp_path, capsys):
    from ase.build import molecule

    path = tmp_path / "h2o.xyz"
    water = molecule("H2O")
    water.positions[0] += 0.1
    write(path, water)
    out = tmp_path / "relax"
    assert main(["relax", str(path), "--out", str(out), "--quiet", "--fmax", "0.01", "--plot"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] and not summary["cell_relaxed"] and "volume_A3" not in summary
    assert (out / "h2o_relax.png").stat().st_size > 1000
    for job in (["eos"], ["elastic"], ["phonons"], ["md", "--ensemble", "npt"]):
        assert main([*job, str(path), "--out", str(tmp_path / job[0]), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "periodic in three directions" in err and "a molecule" in err and err.count("\n") == 1


def test_plot_is_refused_where_nothing_is_drawn_and_help_is_plain(capsys):
    with pytest.raises(SystemExit):
        main(["single", "x.xyz", "--plot"])
    assert "unrecognized arguments: --plot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phonons", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "``" not in text and "default for this job: float64" in text


@pytest.mark.integration
def test_list_and_version_do_not_import_torch():
    import sys

    import processes

    code = "import sys\nfrom facet_calc.cli import main\nmain(['list'])\nprint('torch' in sys.modules)\n"
    # both measured 0.5 s; 10 s is a floor for sub-second children (interpreter start on a busy machine)
    run = processes.run([sys.executable, "-c", code], what="`facet-calc list` in a fresh interpreter", timeout=10)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "False" and "7net-0-spline" in run.stdout
    for argv in (["--help"], ["relax", "--help"], ["finetune", "--help"]):  # help of every kind: no torch
        code = (f"import sys\nfrom facet_calc.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n"
                "    pass\nprint('torch' in sys.modules)\n")  # fmt: skip
        run = processes.run([sys.executable, "-c", code], what=f"`facet-calc {' '.join(argv)}`", timeout=10)
        assert run.returncode == 0 and run.stdout.split()[-1] == "False", (argv, run.stderr[-2000:])
    run = processes.run(
        [sys.executable, "-m", "facet_calc.cli", "--version"], what="`facet-calc --version`", timeout=10
    )
    assert run.returncode == 0 and run.stdout.startswith("facet-calc ")


def test_openmp_spin_is_set_only_before_torch_and_never_over_a_users_choice():
    from facet_calc.cli import OPENMP_SPIN_COUNT, short_openmp_spin

    env = {}
    short_openmp_spin(env, torch_loaded=False)
    assert env == {"GOMP_SPINCOUNT": OPENMP_SPIN_COUNT}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(mine)
        short_openmp_spin(env, torch_loaded=False)
        assert env == mine  # the user's setting stands, and nothing is added beside it
    env = {}
    short_openmp_spin(env, torch_loaded=True)  # libgomp has read its settings: too late to matter
    assert env == {}


def test_phonons_of_a_conventional_cell_use_its_primitive_cell(tmp_path):
    """8-atom conventional Si: phonopy works on the 2-atom primitive cell (6 bands, no folding),
    and the band structure, DOS and thermal properties are written with units."""
    import numpy as np

    path = tmp_path / "si.extxyz"
    write(path, bulk("Si", "diamond", a=5.45, cubic=True))
    out = tmp_path / "ph"
    assert main(["phonons", str(path), "--out", str(out), "--quiet", "--supercell", "2", "2", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_atoms_primitive"] == 2 and len(summary["gamma_frequencies_THz"]) == 6
    thermal = np.loadtxt(out / "si_thermal.csv", delimiter=",")
    header = (out / "si_thermal.csv").read_text().splitlines()[0]
    assert "free_energy_eV" in header and "heat_capacity_cv_eV_per_K" in header
    # Dulong-Petit: Cv -> 3 k_B per atom at high temperature (2 atoms in the primitive cell)
    from ase.units import kB

    assert thermal[-1, 3] == pytest.approx(6 * kB, rel=0.05)
    bands = np.loadtxt(out / "si_phonon_bands.csv", delimiter=",")
    assert bands.shape[1] == 1 + 6


#: every structure command on a file named POSCAR, fast options, and the extxyz files it writes
#: (ASE would guess VASP from such names, and VASP files carry no energy, forces or stress)
POSCAR_JOBS = {
    "single": ([], "float32", ["POSCAR_single.extxyz"]),
    "relax": (["--fmax", "0.05", "--steps", "30"], "float32", ["POSCAR_relaxed.extxyz"]),
    "md": (["--ensemble", "nve", "--steps", "3"], "float32", []),
    "phonons": (["--supercell", "1", "1", "1"], "float64", ["POSCAR_primitive.extxyz"]),
    "eos": ([], "float64", ["POSCAR_eos_v0.extxyz"]),
    "elastic": ([], "float64", ["POSCAR_elastic.extxyz"]),
}


def _assert_results_are_the_calculators(images, calc, dtype):
    # measured (largest over the jobs): float32 0 eV, 7e-7 eV/A, 4e-8 eV/A^3; float64 1.5e-9 eV,
    # 4e-8 eV/A, 9e-10 eV/A^3 (extxyz rounds positions to 1e-8 A)
    tol = {"float32": (1e-5, 1e-5, 1e-6), "float64": (1e-8, 1e-7, 1e-8)}[dtype]
    for back in images:
        stored = dict(back.calc.results)  # the SinglePointCalculator the file's results made
        assert {"energy", "forces", "stress"} <= set(stored), sorted(stored)
        atoms = back.copy()
        atoms.calc = calc
        assert stored["energy"] == pytest.approx(atoms.get_potential_energy(), abs=tol[0])
        np.testing.assert_allclose(stored["forces"], atoms.get_forces(), atol=tol[1])
        np.testing.assert_allclose(stored["stress"], atoms.get_stress(), atol=tol[2])


@pytest.mark.parametrize("job", list(POSCAR_JOBS))
def test_an_input_named_poscar_gives_extxyz_files_with_results(job, tmp_path, calc32, calc64):
    """Every structure file a command writes is extxyz (read back as such) and carries the
    energy, forces and stress the calculator gives for it; trajectories too (ASE traj)."""
    options, dtype, expected = POSCAR_JOBS[job]
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.03, seed=1)
    write(tmp_path / "POSCAR", atoms, format="vasp")
    out = tmp_path / job
    assert main([job, str(tmp_path / "POSCAR"), "--out", str(out), "--quiet", *options]) == 0
    calc = {"float32": calc32, "float64": calc64}[dtype]
    assert sorted(p.name for p in out.glob("*.extxyz")) == expected
    for name in expected:
        _assert_results_are_the_calculators(read(out / name, index=":", format="extxyz"), calc, dtype)
    for path in out.glob("*.traj"):
        _assert_results_are_the_calculators(read(path, index="-1:", format="traj"), calc, dtype)


def test_relaxed_poscar_feeds_phonons(tmp_path):
    """The file ``relax POSCAR`` writes is read as extxyz by the next command (ASE's name
    rule would have read POSCAR_relaxed.extxyz as VASP)."""
    write(tmp_path / "POSCAR", bulk("Si", "diamond", a=5.45), format="vasp")
    argv = ["--out", str(tmp_path), "--quiet"]
    assert main(["relax", str(tmp_path / "POSCAR"), "--fmax", "0.01", *argv]) == 0
    relaxed = read(tmp_path / "POSCAR_relaxed.extxyz", format="extxyz")
    assert main(["phonons", str(tmp_path / "POSCAR_relaxed.extxyz"), "--supercell", "1", "1", "1", *argv,
                 "--overwrite"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_atoms_primitive"] == 2 and len(summary["gamma_frequencies_THz"]) == 6
    # the primitive cell phonopy used is the relaxed one (volume kept to the written precision)
    primitive = read(tmp_path / "POSCAR_relaxed_primitive.extxyz", format="extxyz")
    assert primitive.get_volume() == pytest.approx(relaxed.get_volume(), rel=1e-6)


@pytest.mark.parametrize(
    "option, message",
    [
        (["md", "--temperature", "inf"], "argument --temperature: must be a finite number, got inf"),
        (["md", "--temperature", "-5"], "argument --temperature: must be zero or positive, got -5"),
        (["md", "--pressure", "nan"], "argument --pressure: must be a finite number, got nan"),
        (["md", "--timestep", "inf"], "argument --timestep: must be a finite number, got inf"),
        (["relax", "--fmax", "nan"], "argument --fmax: must be a finite number, got nan"),
        (["eos", "--max-strain", "1.5"], "argument --max-strain: must be a fraction below 1"),
        (["elastic", "--max-strain", "-0.01"], "argument --max-strain: must be positive"),
    ],
)
def test_values_that_make_no_run_are_refused_by_the_parser(option, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([option[0], "x.extxyz", *option[1:]])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_or_a_symlink_loop_as_input_is_named_as_such(tmp_path, capsys):
    import os

    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "loop.extxyz", tmp_path / "loop.extxyz")
    os.symlink(tmp_path / "gone.extxyz", tmp_path / "dangling.extxyz")
    cases = {"folder": "is a folder, not a file", "loop.extxyz": "is a symlink loop",
             "dangling.extxyz": "which does not exist", "missing.extxyz": "does not exist"}  # fmt: skip
    for name, message in cases.items():
        assert main(["single", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (name, err)


def test_a_symlink_loop_in_a_potential_folder_is_named_as_such(tmp_path, capsys):
    """A listed potential folder whose card.md is a link to itself: the error says so (it
    said "has no card.md")."""
    import os
    import shutil

    from facet_calc.potential import potentials_dir

    shutil.copytree(potentials_dir() / "7net-0-spline", tmp_path / "7net-0-spline")
    shutil.copy(potentials_dir() / "index.json", tmp_path / "index.json")
    card = tmp_path / "7net-0-spline" / "card.md"
    card.unlink()
    os.symlink(card, card)
    path = tmp_path / "al.extxyz"
    write(path, bulk("Al", "fcc", a=4.05))
    argv = ["single", str(path), "--potential", str(tmp_path / "7net-0-spline"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "card.md is a symlink loop" in capsys.readouterr().err


def test_ctrl_c_during_relax_writes_the_last_structure_and_a_summary(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt in the 4th optimizer step: status 130, the structure of step 3 with
    its results, a summary marked interrupted, a readable trajectory."""
    from ase.optimize import FIRE

    interrupt_at_step(monkeypatch, FIRE, 4)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=0)
    path = tmp_path / "cu.extxyz"
    write(path, atoms)
    assert main(["relax", str(path), "--out", str(tmp_path), "--quiet", "--fmax", "1e-4", "--plot"]) == 130
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["steps"] == 3 and not summary["converged"]
    assert "interrupted after 3 steps" in capsys.readouterr().err
    last = read(tmp_path / "cu_relax.traj", ":")[-1]
    relaxed = read(tmp_path / "cu_relaxed.extxyz")
    np.testing.assert_allclose(relaxed.positions, last.positions, atol=1e-6)
    assert relaxed.get_potential_energy() == pytest.approx(summary["energy_eV"], abs=1e-5)
    assert (tmp_path / "cu_relax.png").is_file()


def test_elastic_summary_prints_the_matrix_row_by_row(tmp_path, capsys):
    path = tmp_path / "nacl.extxyz"
    write(path, bulk("NaCl", "rocksalt", a=5.64))
    from facet_calc.workflows import WorkflowWarning

    with pytest.warns(WorkflowWarning, match="not relaxed"):  # the CLI test needs no relaxed input
        assert main(["elastic", str(path), "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert json.loads(out) == summary and np.shape(summary["C_GPa_voigt"]) == (6, 6)
    rows = [line for line in out.splitlines() if line.strip().startswith("[") and line.rstrip(",").count(",") == 5]
    assert len(rows) == 12  # the 6x6 matrix and its 6x6 standard errors, one row per line
