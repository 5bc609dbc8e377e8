"""The conformance suite: every registered model family (``facet_calc.nn.families.FAMILIES``)
passes the same physics checks before anything else uses it. A new family needs no edit here.

Each check compares against an independent reference: rotations and inversion of the input
(symmetry), central finite differences of the energy (forces, stress), two far-apart copies
(extensivity), a displaced far atom (locality), and the e3nn reference path (fast paths)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from facet_calc.graph import collate, graph_from_atoms
from facet_calc.nn import FAMILIES, build_model, evaluate, initialise_for_training
from facet_calc.species import SpeciesTable

ELEMENTS = [1, 8, 14]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request):
    family = FAMILIES[request.param]
    config = family.config_from_hyperparameters(ELEMENTS, **family.example_hyperparameters)
    model = initialise_for_training(build_model(config, torch.float64), seed=1)
    # parameters that start at zero (Facet's residual scales: every layer starts as the identity)
    # get random values, and so do the per-species scales and shifts: a model that starts as a
    # function of the species alone would pass every check below without computing anything
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() and not param.any():
                param.copy_(0.5 * torch.randn(param.shape, generator=generator, dtype=torch.float64))
        model.scale.copy_(torch.tensor([0.7, 1.3, 0.9], dtype=torch.float64))
        model.shift.copy_(torch.tensor([-0.3, -1.1, -2.0], dtype=torch.float64))
    return model.eval().requires_grad_(False)


def _structure(seed=0) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43) * (1, 1, 2)
    atoms.numbers[1] = 8
    atoms += Atoms("H", positions=[[1.0, 0.4, 0.6]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.05 * np.random.default_rng(seed).normal(size=(3, 3))),
                   scale_atoms=True)  # fmt: skip
    atoms.rattle(0.08, seed=seed)
    return atoms


def _run(model, atoms):
    graph = graph_from_atoms(atoms, model.cutoff, SpeciesTable(model.config["atomic_numbers"]))
    return evaluate(model, graph)


def test_rotation_and_translation(model):
    atoms = _structure()
    out = _run(model, atoms)
    rot = Rotation.random(random_state=3).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    moved.positions = atoms.positions @ rot.T + np.array([3.1, -2.0, 0.7])
    turned = _run(model, moved)
    # the family declares its tolerance: nequip layout measured 1e-16 (E), 6e-15 (F, relative to
    # the largest force); Facet's grid mixer 7e-6 (E) and 1.4e-4 (F)
    tol = model.equivariance_tolerance
    assert abs(turned["energy"] - out["energy"]).item() / abs(out["energy"]).item() < tol
    forces = out["forces"].numpy() @ rot.T
    assert np.abs(turned["forces"].numpy() - forces).max() < tol * np.abs(forces).max()
    virial = rot @ out["virial"][0].numpy() @ rot.T
    assert np.abs(turned["virial"][0].numpy() - virial).max() < tol * np.abs(virial).max()


def test_forces_and_stress_are_finite_differences(model):
    atoms = _structure(1)
    out = _run(model, atoms)
    eps = 1e-5

    def energy(a):
        return float(_run(model, a)["energy"])

    for i, k in [(0, 0), (3, 2), (4, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += eps
        minus.positions[i, k] -= eps
        fd = -(energy(plus) - energy(minus)) / (2 * eps)
        assert abs(fd - float(out["forces"][i, k])) < 1e-7  # central difference, eps 1e-5
    for a, b in [(0, 0), (0, 1), (2, 1)]:
        strain = np.eye(3)
        strain[a, b] += eps
        strain[b, a] += eps if a != b else 0.0
        plus = atoms.copy()
        plus.set_cell(atoms.cell.array @ strain.T, scale_atoms=True)
        strain_m = 2 * np.eye(3) - strain
        minus = atoms.copy()
        minus.set_cell(atoms.cell.array @ strain_m.T, scale_atoms=True)
        fd = (energy(plus) - energy(minus)) / (2 * eps) / (2 if a != b else 1)
        assert abs(fd - float(out["virial"][0, a, b])) < 1e-6


def test_extensive_and_batched(model):
    """Two copies far apart have twice the energy; a batch equals its structures one by one."""
    molecule = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    single = _run(model, molecule)
    pair = molecule + molecule
    pair.positions[3:] += [20.0, 0, 0]
    double = _run(model, pair)
    assert abs(double["energy"] - 2 * single["energy"]).item() < 1e-12
    table = SpeciesTable(model.config["atomic_numbers"])
    structures = [_structure(0), molecule, _structure(2)]
    batched = evaluate(model, collate([graph_from_atoms(a, model.cutoff, table) for a in structures]))
    for k, atoms in enumerate(structures):
        assert abs(batched["energy"][k] - _run(model, atoms)["energy"][0]).item() < 1e-11


def test_local(model):
    """An atom further than layers x cutoff from atom 0 does not change atom 0's energy."""
    chain = Atoms("SiSiSiSiSi", positions=[[3.0 * i, 0, 0] for i in range(5)])
    reach = len(model.layers) * model.cutoff
    out = _run(model, chain)
    moved = chain.copy()
    moved.positions[4, 1] += 0.3
    far = _run(model, moved)
    assert np.linalg.norm(chain.positions[4] - chain.positions[0]) >= reach  # the check reaches far enough
    assert far["energies"][0] == out["energies"][0]
    assert far["energies"][4] != out["energies"][4]


@pytest.mark.parametrize("backend", ["torch", "kernel"])
def test_fast_paths_equal_the_reference(model, backend):
    atoms = _structure(2)
    try:
        reference = _run(model.set_backend("e3nn"), atoms)
        fast = _run(model.set_backend(backend), atoms)
    finally:
        model.set_backend("auto")
    for key in ("energy", "forces", "virial"):
        scale = reference[key].abs().max()
        assert (fast[key] - reference[key]).abs().max() / scale < 1e-12, key
