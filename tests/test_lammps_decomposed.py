"""The per-layer domain driver (facet_calc.lammps.decomposed) without LAMMPS.

A periodic structure is cut into slabs along x; each slab is one domain with its owned atoms and
the periodic images / other slabs' atoms within one cutoff as ghosts. The domains run in threads
and exchange ghost features through shared arrays, as LAMMPS' forward and reverse communication
would. The sum over domains must equal :func:`facet_calc.nn.forward.evaluate` on the whole system.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from ase.build import bulk
from lammps_support import write_small_potential

from facet_calc import load_potential
from facet_calc.graph import Structure, graph_from_atoms, neighbour_list
from facet_calc.lammps.decomposed import evaluate_domain
from facet_calc.nn import evaluate
from facet_calc.species import SpeciesTable


class _Domain:
    def __init__(self, owned: np.ndarray, graph, species: np.ndarray) -> None:
        self.owned = owned
        mask = np.isin(graph.receivers, owned)
        recv, send, shifts = graph.receivers[mask], graph.senders[mask], graph.shifts[mask]
        local = {int(a): k for k, a in enumerate(owned)}
        ghost_keys: dict[tuple, int] = {}
        senders = []
        for j, s in zip(send, shifts):
            key = (int(j), *np.round(s).astype(int).tolist())
            if key[1:] == (0, 0, 0) and int(j) in local:
                senders.append(local[int(j)])
            else:
                senders.append(len(owned) + ghost_keys.setdefault(key, len(ghost_keys)))
        self.ghost_atoms = np.array([key[0] for key in ghost_keys], dtype=np.int64)
        self.n_local = len(owned)
        self.species = np.concatenate([species[owned], species[self.ghost_atoms]]).astype(np.int64)
        self.receivers = np.array([local[int(i)] for i in recv], dtype=np.int64)
        self.senders = np.array(senders, dtype=np.int64)
        self.edge_vec = graph.edge_vectors[mask]
        self.global_receivers, self.global_senders = recv, send


class _ThreadExchange:
    """Ghost exchange between domains evaluated in threads (collective, like MPI)."""

    def __init__(self, domains: list[_Domain], n_atoms: int) -> None:
        self.domains = domains
        self.n_atoms = n_atoms
        self.barrier = threading.Barrier(len(domains))
        self.table = None
        self.parts: list = [None] * len(domains)

    def for_domain(self, k: int):
        exchange = self

        class One:
            def forward(self, owned):
                d = exchange.domains[k]
                assert owned.shape[0] == d.n_local
                exchange.parts[k] = owned
                exchange.barrier.wait()
                if k == 0:
                    table = owned.new_zeros((exchange.n_atoms, owned.shape[1]))
                    for m, dom in enumerate(exchange.domains):
                        table[torch.as_tensor(dom.owned, dtype=torch.long)] = exchange.parts[m]
                    exchange.table = table
                exchange.barrier.wait()
                out = torch.cat([owned, exchange.table[torch.as_tensor(d.ghost_atoms, dtype=torch.long)]])
                exchange.barrier.wait()
                return out

            def reverse(self, rows):
                d = exchange.domains[k]
                assert rows.shape[0] == d.n_local + len(d.ghost_atoms)  # LAMMPS reads every ghost row
                exchange.parts[k] = rows
                exchange.barrier.wait()
                if k == 0:
                    table = rows.new_zeros((exchange.n_atoms, rows.shape[1]))
                    for m, dom in enumerate(exchange.domains):
                        part = exchange.parts[m]
                        table.index_add_(0, torch.as_tensor(dom.owned, dtype=torch.long), part[: dom.n_local])
                        table.index_add_(0, torch.as_tensor(dom.ghost_atoms, dtype=torch.long), part[dom.n_local :])
                    exchange.table = table
                exchange.barrier.wait()
                out = exchange.table[torch.as_tensor(d.owned, dtype=torch.long)].clone()
                exchange.barrier.wait()
                return out

        return One()


def _decomposed(model, atoms, n_slabs: int, empty_domain: bool):
    graph = neighbour_list(Structure.from_atoms(atoms), model.cutoff)
    numbers = list(model.config["atomic_numbers"])
    species = np.array([numbers.index(z) for z in atoms.numbers])
    frac = atoms.get_scaled_positions(wrap=True)[:, 0]
    owned = [np.nonzero((frac >= k / n_slabs) & (frac < (k + 1) / n_slabs))[0] for k in range(n_slabs)]
    if empty_domain:
        owned.append(np.zeros(0, dtype=np.int64))
    domains = [_Domain(o, graph, species) for o in owned]
    exchange = _ThreadExchange(domains, len(atoms))
    results: list = [None] * len(domains)
    errors = []

    def run(k):
        d = domains[k]
        try:
            results[k] = evaluate_domain(
                model,
                torch.as_tensor(d.species),
                torch.as_tensor(d.edge_vec, dtype=model.scale.dtype),
                torch.as_tensor(d.senders),
                torch.as_tensor(d.receivers),
                d.n_local,
                exchange.for_domain(k),
            )
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)
            exchange.barrier.abort()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(domains))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    energy = sum(float(r["energy"]) for r in results)
    forces = np.zeros((len(atoms), 3))
    virial = np.zeros((3, 3))
    for d, r in zip(domains, results):
        g = r["edge_grad"].double().numpy()
        np.add.at(forces, d.global_receivers, g)
        np.add.at(forces, d.global_senders, -g)
        virial += g.T @ d.edge_vec
    return energy, forces, 0.5 * (virial + virial.T), domains


def _whole_system(model, atoms) -> dict:
    """The reference: :func:`evaluate` on the whole periodic system in one graph."""
    return evaluate(model, graph_from_atoms(atoms, model.cutoff, SpeciesTable(model.config["atomic_numbers"])))


@pytest.fixture(scope="module", params=["facet-spline-nequip", "facet-spline-nequip-species", "facet"])
def small_model(request, tmp_path_factory):
    """A small model of each family (the domain driver relies only on the layer-wise contract),
    and one whose self-connections depend on the species (layers then need the rows' species)."""
    if request.param == "facet-spline-nequip-species":
        from facet_calc.nn import build_model, initialise_for_training
        from facet_calc.nn.families.nequip_spline import nequip_spline_config

        config = nequip_spline_config([8, 14], channels=8, lmax=2, n_layers=2, cutoff=3.5, avg_num_neighbors=10.0,
                                      self_connection="species")  # fmt: skip
        return initialise_for_training(build_model(config, torch.float64), seed=0).eval().requires_grad_(False)
    if request.param == "facet":
        from facet_calc.nn import build_model, initialise_for_training
        from facet_calc.nn.families.facet import facet_config

        config = facet_config([8, 14], hidden="8x0e+4x1o+2x2e", embedding=8, mixer={"channels": 4}, cutoff=3.5)
        model = initialise_for_training(build_model(config), seed=0)
        with torch.no_grad():  # residual scales on (zero at initialisation: every layer the identity)
            for name, param in model.named_parameters():
                if name.endswith("residual.norm.weight"):
                    param.fill_(0.7)
        return model.eval().requires_grad_(False)
    folder = write_small_potential(tmp_path_factory.mktemp("pot") / "small-sio", cutoff=3.5)
    return load_potential(folder, dtype="float64").model


def _sio(repeat, seed):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    atoms.symbols[::5] = "O"
    return atoms


@pytest.mark.parametrize("n_slabs", [2, 3])
def test_domains_sum_to_the_whole_system(small_model, n_slabs):
    atoms = _sio((3, 2, 2), seed=n_slabs)
    energy, forces, virial, domains = _decomposed(small_model, atoms, n_slabs, empty_domain=True)
    assert domains[-1].n_local == 0 and all(d.n_local > 0 for d in domains[:-1])
    ref = _whole_system(small_model, atoms)
    assert abs(energy - float(ref["energy"])) < 1e-12 * abs(float(ref["energy"]))
    scale = np.abs(ref["forces"].numpy()).max()
    assert np.abs(forces - ref["forces"].numpy()).max() < 1e-10 * scale
    assert np.abs(virial - ref["virial"].numpy()).max() < 1e-10 * np.abs(ref["virial"].numpy()).max()


@pytest.mark.parametrize("backend", ["torch", "e3nn"])
def test_domains_sum_to_the_whole_system_on_every_backend(small_model, backend):
    """The per-layer driver hands the layers a shared edge context whose spline basis is a leaf
    per layer; the plain torch path and the e3nn reference must come out exact as well."""
    before = small_model.layers[0].backend
    small_model.set_backend(backend)
    try:
        atoms = _sio((3, 2, 2), seed=11)
        energy, forces, virial, _ = _decomposed(small_model, atoms, 2, empty_domain=False)
        ref = _whole_system(small_model, atoms)
    finally:
        small_model.set_backend(before)
    assert abs(energy - float(ref["energy"])) < 1e-12 * abs(float(ref["energy"]))
    assert np.abs(forces - ref["forces"].numpy()).max() < 1e-10 * np.abs(ref["forces"].numpy()).max()
    assert np.abs(virial - ref["virial"].numpy()).max() < 1e-10 * np.abs(ref["virial"].numpy()).max()


def test_ghosts_get_no_node_wise_work(small_model):
    """Each layer's node-wise maps (the last linear, and the gate or the mixer after it) see the
    owned rows only; the ghosts enter the convolution as senders and nothing else."""
    atoms = _sio((3, 2, 2), seed=3)
    rows = []
    hooks = [layer.fast["linear_out"].register_forward_hook(lambda m, inp, out: rows.append(out.shape[0]))
             for layer in small_model.layers]  # fmt: skip
    try:
        _, _, _, domains = _decomposed(small_model, atoms, 2, empty_domain=False)
    finally:
        for hook in hooks:
            hook.remove()
    owned = sorted(d.n_local for d in domains)
    assert all(len(d.ghost_atoms) > 0 for d in domains)
    assert sorted(set(rows)) == sorted(set(owned)) and len(rows) == len(small_model.layers) * len(domains)


def test_shipped_potential_in_two_domains(potential64):
    """7net-0-spline (5 layers) in two slabs of a cell narrower than two cutoffs: each slab's
    ghosts include its own periodic images."""
    model = potential64.model
    atoms = _sio((2, 1, 1), seed=7)
    energy, forces, _, _ = _decomposed(model, atoms, 2, empty_domain=False)
    ref = _whole_system(model, atoms)
    assert abs(energy - float(ref["energy"])) < 1e-12 * abs(float(ref["energy"]))
    assert np.abs(forces - ref["forces"].numpy()).max() < 1e-10 * np.abs(ref["forces"].numpy()).max()
