"""CUDA end to end (skipped without a GPU): same results as the CPU, both paths, both dtypes."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from facet_calc import FacetCalculator, load_potential

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _structures():
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    si.rattle(0.05, seed=1)
    return [si, bulk("NaCl", "rocksalt", a=5.6), molecule("CH3CH2OH")]


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 1e-3)])
@pytest.mark.parametrize("path", ["triton-kernel", "torch-ops", "e3nn-reference"])
def test_cuda_matches_cpu(dtype, tol, path):
    backend = {"triton-kernel": "kernel", "torch-ops": "torch", "e3nn-reference": "e3nn"}[path]
    cpu = FacetCalculator(load_potential("7net-0-spline", dtype=dtype, backend=backend))
    gpu = FacetCalculator(load_potential("7net-0-spline", dtype=dtype, device="cuda", backend=backend))
    assert gpu.potential.device.type == "cuda"
    for atoms in _structures():
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = cpu, gpu
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < tol * len(atoms)
        assert np.abs(a.get_forces() - b.get_forces()).max() < tol
        if atoms.cell.rank == 3:
            assert np.abs(a.get_stress() - b.get_stress()).max() < tol


def test_auto_device_picks_cuda():
    calc = FacetCalculator("7net-0-spline", device="auto")
    assert calc.device.type == "cuda"


def test_training_on_cuda_matches_the_cpu(tmp_path):
    """Two epochs of fine-tuning in float64 give the same weights on the GPU as on the CPU."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from facet_calc.train import TrainSettings, finetune

    frames = []
    for i in range(6):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.05, seed=i)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    write(tmp_path / "cu.extxyz", frames)
    weights = {}
    for device in ("cpu", "cuda"):
        settings = TrainSettings(epochs=2, batch_size=3, lr=1e-3, dtype="float64", device=device)
        result = finetune("7net-0-spline", tmp_path / "cu.extxyz", tmp_path / device, settings, progress=False)
        weights[device] = dict(load_potential(result.potential_dir, dtype="float64").model.named_parameters())
    for name, value in weights["cpu"].items():
        assert torch.allclose(value, weights["cuda"][name].cpu(), rtol=1e-8, atol=1e-10), name
