"""A table of hostile inputs, each of which must be refused with a sentence naming the problem,
never answered with a number.

Every probe of issue 12 is here (and the older ones of the geometry, potential and CLI tests):
unphysical geometry, untrusted potential folders, and mistakes on the command line. Each row
names the input, what it must raise (or the CLI exit status), and a fragment of the message.
"""

import json
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import write

from facet_calc import FacetCalculator, load_potential
from facet_calc.cli import main
from facet_calc.potential import INDEX_FILE, WEIGHTS_FILE, potentials_dir


def _cu_cell(edge):
    return Atoms("Cu", cell=np.eye(3) * edge, pbc=True)


def _pair(d, symbol="Si2", pbc=False):
    atoms = Atoms(symbol, positions=[(1, 1, 1), (1, 1, 1 + d)])
    if pbc:
        atoms.cell = np.eye(3) * 8.0
        atoms.pbc = True
    return atoms


def _flat(eps):
    return Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [0, 0, eps]], pbc=True)


def _cluster():
    rng = np.random.default_rng(0)
    return Atoms(f"C{2000}", positions=rng.uniform(0, 1.0, (2000, 3)))  # 2000 atoms in 1 A^3


def _duplicated_crystal():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    return atoms + atoms  # every atom twice: a classic copy-paste error


GEOMETRY = {
    # name: (atoms, expected error type, message fragment)
    "NaN position": (Atoms("H2", positions=[(0, 0, 0), (np.nan, 0, 0)]), ValueError, "NaN or infinite positions"),
    "infinite position": (Atoms("H2", positions=[(0, 0, 0), (np.inf, 0, 0)]), ValueError, "NaN or infinite"),
    "NaN cell": (Atoms("H", cell=[[np.nan, 0, 0], [0, 3, 0], [0, 0, 3]], pbc=True), ValueError, "cell contains NaN"),
    "zero periodic vector": (Atoms("H", cell=[3, 3, 0], pbc=True), ValueError, "singular along periodic"),
    "collinear periodic vectors": (
        Atoms("H", cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True),
        ValueError,
        "singular along periodic",
    ),
    "lattice vector 1e-12 A": (_flat(1e-12), ValueError, "singular along periodic"),
    "lattice vector 1e-7 A (was an OOM kill)": (_flat(1e-7), ValueError, "near-singular or far smaller"),
    "lattice vector 1e-3 A (was -6e98 eV)": (_flat(1e-3), ValueError, "near-singular or far smaller"),
    "skewed near-singular cell": (
        Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [3, 3, 1e-3]], pbc=True),
        ValueError,
        "near-singular",
    ),
    "thin slab cell (T,T,F)": (
        Atoms("Cu", cell=[[3, 0, 0], [1e-4, 1e-4, 0], [0, 0, 10]], pbc=(True, True, False)),
        ValueError,
        "near-singular",
    ),
    "1-atom Cu cell of 0.5 A (was 5.7e8 eV)": (_cu_cell(0.5), ValueError, "far smaller than the 5 A cutoff"),
    "two atoms on one site (was 6.76 eV, zero force)": (_pair(0.0), ValueError, "coincident or overlapping"),
    "two atoms on one site, periodic": (_pair(0.0, pbc=True), ValueError, "coincident or overlapping"),
    "atoms 1e-9 A apart": (_pair(1e-9), ValueError, "coincident or overlapping"),
    "atoms 0.1 A apart (was -7.6e7 eV)": (_pair(0.1), ValueError, "coincident or overlapping"),
    "Cu atoms 0.6 A apart (was -106 eV)": (_pair(0.6, "Cu2"), ValueError, "coincident or overlapping"),
    "every atom of a crystal twice": (_duplicated_crystal(), ValueError, "coincident or overlapping"),
    "2000 atoms in one cubic Angstrom": (_cluster(), ValueError, "packed far more densely"),
    "element without parameters (Po)": (bulk("Po", "sc", a=3.3), ValueError, "no parameters for element"),
    "dummy element X (Z=0)": (Atoms("X", positions=[(0, 0, 0)]), ValueError, "no parameters for element"),
}


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_unphysical_geometry_gives_no_number(name, calc32):
    atoms, error, message = GEOMETRY[name]
    atoms = atoms.copy()
    with pytest.raises(error, match=message):
        atoms.calc = calc32  # unknown elements are refused here already
        atoms.get_potential_energy()


WARN = {
    # close, but not coincident: computed, with one warning saying the number is not to be trusted
    "1-atom Cu cell of 1.0 A": _cu_cell(1.0),
    "Si atoms 0.7 A apart": _pair(0.7),
}


@pytest.mark.parametrize("name", list(WARN))
def test_close_pairs_warn_once_per_calculator(name, potential32):
    calc = FacetCalculator(potential32)
    atoms = WARN[name].copy()
    atoms.calc = calc
    with pytest.warns(UserWarning, match="closer than 0.5 x the sum of covalent radii"):
        atoms.get_potential_energy()
    atoms.positions[0] += 0.01  # a new geometry, still close: no second warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_potential_energy()


def test_stress_without_a_cell_is_refused(calc32):
    atoms = Atoms("H2O", positions=[(0, 0, 0), (0.96, 0, 0), (-0.24, 0.93, 0)])
    atoms.calc = calc32
    with pytest.raises(PropertyNotImplementedError, match="stress needs a cell"):
        atoms.get_stress()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "float16"}, "dtype must be 'float32' or 'float64'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"device": "meta"}, "not supported"),
    ],
    ids=["dtype float16", "device tpu", "device meta"],
)
def test_bad_calculator_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FacetCalculator("7net-0-spline", **kwargs)


def test_a_step_larger_than_the_free_memory_is_refused_before_allocating(calc32, monkeypatch):
    from facet_calc.chunking import MemoryPlan

    plan = MemoryPlan(calc32.potential.model, free_bytes=50 * 2**20, min_region_atoms=calc32.MIN_REGION_ATOMS)
    monkeypatch.setattr(calc32, "memory_plan", plan)  # 50 MiB left
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(4)  # 512 atoms: about 40 MiB of step
    atoms.rattle(0.01, seed=0)
    atoms.calc = calc32
    atoms.get_potential_energy()  # fits
    big = bulk("Si", "diamond", a=5.43, cubic=True).repeat(8)  # 4096 atoms: about 0.4 GiB
    big.calc = calc32
    with pytest.raises(MemoryError, match=r"would need about 0\.\d GiB \(4096 atoms"):
        big.get_potential_energy()


def test_the_memory_estimate_grows_with_atoms_and_edges(potential32):
    from facet_calc.chunking import estimate_step_bytes

    one = estimate_step_bytes(potential32.model, 1000, 28000)
    assert estimate_step_bytes(potential32.model, 2000, 56000) == pytest.approx(2 * one)
    assert estimate_step_bytes(potential32.model, 1000, 56000) > one


# ---------------------------------------------------------------- potential folders


def _copy(tmp_path, with_index=True):
    src = potentials_dir()
    shutil.copytree(src / "7net-0-spline", tmp_path / "mine")
    if with_index:
        index = json.loads((src / INDEX_FILE).read_text())
        (tmp_path / INDEX_FILE).write_text(json.dumps({"mine": index["7net-0-spline"]}))
    return tmp_path / "mine"


def _flip_weights(folder):
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))


POTENTIALS = {
    "unknown name": (lambda tmp: "mace-mp-0", ValueError, "unknown potential"),
    "missing folder": (lambda tmp: tmp / "nowhere", FileNotFoundError, "does not exist"),
    "folder without an index": (lambda tmp: _copy(tmp, with_index=False), ValueError, "pass verify=False"),
    "modified weights": (lambda tmp: (f := _copy(tmp), _flip_weights(f))[0], ValueError, "corrupted or was modified"),
    "modified card": (
        lambda tmp: (f := _copy(tmp), (f / "card.md").write_text("x"))[0],
        ValueError,
        "card.md is corrupted",
    ),
    "malformed index": (
        lambda tmp: (_copy(tmp), (tmp / INDEX_FILE).write_text("[1, 2"))[0],
        ValueError,
        "not valid JSON",
    ),
    "weights missing": (
        lambda tmp: (f := _copy(tmp), (f / WEIGHTS_FILE).unlink())[0],
        FileNotFoundError,
        "weights.safetensors",
    ),
}


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_untrusted_potentials_are_refused(name, tmp_path):
    make, error, message = POTENTIALS[name]
    with pytest.raises(error, match=message):
        load_potential(make(tmp_path))


# ---------------------------------------------------------------- the command line


def _structure(tmp_path, atoms=None, name="si.extxyz"):
    path = tmp_path / name
    write(path, atoms if atoms is not None else bulk("Si", "diamond", a=5.43))
    return str(path)


def _two_frames(tmp_path):
    path = tmp_path / "traj.extxyz"
    write(path, [bulk("Si", "diamond", a=5.43), bulk("Si", "diamond", a=5.50)])
    return str(path)


def _existing_results(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text("{}")
    return _structure(tmp_path)


# name: (argv builder (tmp_path -> argv list, {OUT} is the output folder), message fragment)
CLI = {
    "missing structure file": (lambda t: ["single", str(t / "none.cif")], "does not exist"),
    "unreadable structure file": (
        lambda t: ["single", str((t / "x.extxyz", (t / "x.extxyz").write_text("junk\n"))[0])],
        "could not read",
    ),
    "--out is a file": (
        lambda t: ["single", _structure(t), "--out", str((t / "f", (t / "f").write_text(""))[0])],
        "is a file, not a folder",
    ),
    "existing results, no --overwrite": (
        lambda t: ["single", _existing_results(t), "--out", str(t / "out")],
        "already holds results",
    ),
    "multi-frame file to md": (lambda t: ["md", _two_frames(t), "--steps", "2"], "holds 2 structures"),
    "--frame out of range": (lambda t: ["single", _two_frames(t), "--frame", "7"], "does not select a structure"),
    "unlisted potential folder": (
        lambda t: ["single", _structure(t), "--potential", str(_copy(t, False))],
        "--no-verify",
    ),
    "coincident atoms in the file": (lambda t: ["single", _structure(t, _pair(0.0), "pair.xyz")], "coincident"),
    "lattice vector of 1e-3 A in the file": (lambda t: ["single", _structure(t, _flat(1e-3))], "near-singular"),
}

ARGPARSE = {
    "unknown --device": ["single", "x.cif", "--device", "gpu0"],
    "--steps 0": ["md", "x.cif", "--steps", "0"],
    "--steps -5": ["md", "x.cif", "--steps", "-5"],
    "relax --steps 0": ["relax", "x.cif", "--steps", "0"],
    "--timestep 0": ["md", "x.cif", "--timestep", "0"],
    "--temperature -10": ["md", "x.cif", "--temperature", "-10"],
    "--fmax -1": ["relax", "x.cif", "--fmax", "-1"],
    "--fmax nan": ["relax", "x.cif", "--fmax", "nan"],
    "--supercell 0 2 2": ["phonons", "x.cif", "--supercell", "0", "2", "2"],
    "--max-strain 0": ["eos", "x.cif", "--max-strain", "0"],
    "--dtype float16": ["single", "x.cif", "--dtype", "float16"],
}


@pytest.mark.parametrize("name", list(CLI))
def test_cli_mistakes_are_one_sentence_with_status_2(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, message = CLI[name]
    argv = build(tmp_path)
    out_given = "--out" in argv
    if not out_given:
        argv += ["--out", str(tmp_path / "results")]
    status = main(argv + ["--quiet"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    if not out_given:
        assert not (tmp_path / "results" / "summary.json").exists()


@pytest.mark.parametrize("name", list(ARGPARSE))
def test_cli_bad_options_are_refused_before_any_work(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(ARGPARSE[name])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def count_hostile_inputs() -> int:
    """Number of hostile inputs this file tries (reported in the issue's closing note)."""
    return len(GEOMETRY) + 1 + 3 + 1 + len(POTENTIALS) + len(CLI) + len(ARGPARSE)


if __name__ == "__main__":
    print(f"{count_hostile_inputs()} hostile inputs refused; {len(WARN)} close-pair inputs warned")


def test_one_calculator_shared_by_threads_gives_each_its_own_results(calc32):
    """Four threads asking one calculator for stresses of differently strained cells each get
    the stress of their own cell (unserialised, one thread's graph met another's volume)."""
    import threading

    cells = []
    for k in range(8):
        atoms = bulk("Si", "diamond", a=5.2 + 0.05 * k, cubic=True)
        atoms.rattle(0.02, seed=k)
        cells.append(atoms)
    serial = []
    for atoms in cells:
        a = atoms.copy()
        a.calc = calc32
        serial.append(a.get_stress())
    got: dict[int, list] = {}

    def work(offset):
        for _ in range(3):
            for k in range(offset, len(cells), 4):
                a = cells[k].copy()
                a.calc = calc32
                got.setdefault(k, []).append(a.get_stress())

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k, stresses in got.items():
        for stress in stresses:
            np.testing.assert_array_equal(stress, serial[k])
    assert sum(len(v) for v in got.values()) == 3 * len(cells)


def test_coincident_atoms_are_refused_by_every_engine(potential32):
    """The overlap check lives in the one graph builder, so torch-sim and the trainer refuse
    Si2 at 0.1 A as the calculator does (torch-sim returned -7.6e7 eV before)."""
    from ase import Atoms

    from facet_calc.train.data import DataError, read_configurations

    dimer = Atoms("Si2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(ValueError, match="coincident or overlapping"):
        FacetCalculator(potential32).get_potential_energy(dimer)
    labelled = dimer.copy()
    labelled.info["REF_energy"] = -5.0
    from facet_calc.train.data import LabelKeys

    with pytest.raises(DataError, match=r"structures\[0\].*coincident"):
        read_configurations([labelled], potential32.atomic_numbers, potential32.cutoff, LabelKeys(energy="REF_energy"))
    torch_sim = pytest.importorskip("torch_sim")
    from facet_calc.torchsim import FacetTorchSimModel

    model = FacetTorchSimModel(potential32)
    state = torch_sim.io.atoms_to_state([dimer], model.device, model.dtype)
    with pytest.raises(ValueError, match="system 0: .*coincident"):
        model(state)


def _tampered(config, path, change):
    import copy
    import json
    import shutil

    from facet_calc.potential import potentials_dir

    folder = path / "tampered"
    shutil.copytree(potentials_dir() / "7net-0-spline", folder)
    edited = change(copy.deepcopy(config))
    (folder / "config.json").write_text(json.dumps(edited))
    return folder


CONFIG_CHANGES = {
    "negative denominator": (lambda c: c["layers"][0].update(denominator=-1.0) or c, r"layers\[0\]\.denominator"),
    "zero denominator": (lambda c: c["layers"][1].update(denominator=0) or c, r"layers\[1\]\.denominator"),
    "r_max unlike the cutoff": (lambda c: c["radial"].update(r_max=3.0) or c, "radial.r_max .* must equal the cutoff"),
    "cutoff 3": (lambda c: c.update(cutoff=3.0) or c, "radial.r_max .* must equal the cutoff"),
    "cutoff -5": (lambda c: c.update(cutoff=-5.0) or c, r"cutoff \(A\) must be a positive"),
    "cutoff NaN": (lambda c: c.update(cutoff=float("nan")) or c, r"cutoff \(A\) must be a positive"),
    "negative atomic number": (lambda c: c["atomic_numbers"].__setitem__(0, -1) or c, "each atomic number"),
    "duplicate atomic numbers": (lambda c: c["atomic_numbers"].__setitem__(1, c["atomic_numbers"][0]) or c,
                                 "duplicates"),  # fmt: skip
    "atomic number 1e9": (lambda c: c["atomic_numbers"].__setitem__(0, 10**9) or c, "each atomic number"),
    "n_intervals 1e8": (lambda c: c["radial"].update(n_intervals=10**8) or c, r"radial\.n_intervals"),
    "weight_numel 1e9": (lambda c: c["layers"][0].update(weight_numel=10**9) or c, r"layers\[0\]\.weight_numel"),
    "weight_numel off by one": (lambda c: c["layers"][2].update(weight_numel=c["layers"][2]["weight_numel"] + 1) or c,
                                "its instructions need"),  # fmt: skip
    "no layers": (lambda c: c.update(layers=[]) or c, "layers must be a list of 1 to"),
    "a list, not a dict": (lambda c: [c], "JSON object"),
}


@pytest.mark.parametrize("case", list(CONFIG_CHANGES))
def test_a_tampered_config_is_refused_naming_the_field(case, tmp_path):
    """A config whose file was changed (and, say, re-signed) is checked value by value before
    anything is allocated: each bad value raises a ConfigError that names it (before, some gave
    E = -2.26e11 eV, allocations of 7 GiB to 1 TB, or raw exceptions)."""
    import json
    import warnings

    from facet_calc.nn.config_checks import ConfigError
    from facet_calc.potential import potentials_dir

    config = json.loads((potentials_dir() / "7net-0-spline" / "config.json").read_text())
    change, message = CONFIG_CHANGES[case]
    folder = _tampered(config, tmp_path, change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verify=False warns that nothing is checked by digest
        with pytest.raises(ConfigError, match=message):
            load_potential(folder, verify=False)
