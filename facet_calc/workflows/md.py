"""Molecular dynamics with ASE's integrators: NVE (velocity Verlet), NVT (Langevin), NPT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ._common import as_atoms, progress_bar, resolve_calculator, save_figure
from .uncertainty import UncertaintyExceeded

try:  # ASE >= 3.29; its MaxwellBoltzmannDistribution is deprecated there
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE (>= 3.23, the minimum)
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms: Atoms, temperature_K: float, *, rng=None) -> None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


ENSEMBLES = ("nve", "nvt", "npt")


@dataclass
class MDResult:
    """Time series of :func:`run_md`, one entry per logged step.

    Attributes:
        atoms: the final structure (a new object), with velocities.
        time_fs: (n,) simulation time in fs.
        potential_energy_ev, kinetic_energy_ev, total_energy_ev: (n,) in eV.
        temperature_k: (n,) instantaneous temperature in K.
        volume_a3: (n,) cell volume in A^3 (0 without a cell).
        steps_done: MD steps completed.
        interrupted: True when the run was stopped early (Ctrl-C or an observer's
            :class:`~facet_calc.workflows.uncertainty.UncertaintyExceeded`); the series hold what
            was done.
        stop_reason: why it stopped early (None: it ran all its steps).
    """

    atoms: Atoms
    time_fs: np.ndarray
    potential_energy_ev: np.ndarray
    kinetic_energy_ev: np.ndarray
    total_energy_ev: np.ndarray
    temperature_k: np.ndarray
    volume_a3: np.ndarray
    steps_done: int = 0
    interrupted: bool = False
    stop_reason: str | None = None

    def plot(self, filename: str) -> Figure:
        """Energies and temperature against time, as PNG."""
        # a Figure, not pyplot: the user's backend and open figures stay as they were
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 5))
        ax_e, ax_t = fig.subplots(2, 1, sharex=True)
        ax_e.plot(self.time_fs, self.total_energy_ev, label="total")
        ax_e.plot(self.time_fs, self.potential_energy_ev, label="potential")
        ax_e.set_ylabel("energy (eV)")
        ax_e.legend()
        ax_t.plot(self.time_fs, self.temperature_k, color="C3")
        ax_t.set_ylabel("temperature (K)")
        ax_t.set_xlabel("time (fs)")
        return save_figure(fig, filename)

    def energy_drift_ev_per_atom(self) -> float:
        """Total-energy change over the run per atom (eV), from a linear fit (NVE check)."""
        slope = np.polyfit(self.time_fs, self.total_energy_ev, 1)[0]
        return float(slope * (self.time_fs[-1] - self.time_fs[0]) / len(self.atoms))


def run_md(
    structure: Any,
    calculator: Calculator | None = None,
    ensemble: str = "nvt",
    temperature_k: float = 300.0,
    timestep_fs: float = 1.0,
    steps: int = 1000,
    friction_per_fs: float = 0.01,
    pressure_gpa: float = 0.0,
    log_interval: int = 10,
    trajectory: str | None = None,
    seed: int = 0,
    progress: bool = True,
    observers: Sequence[Callable[[], None]] = (),
    observer_interval: int = 1,
) -> MDResult:
    """Run ``steps`` MD steps from Maxwell-Boltzmann velocities at ``temperature_k``.

    A ``KeyboardInterrupt`` (Ctrl-C) stops the run after the current step and returns what was
    done, with ``interrupted=True``, instead of losing it.

    ``ensemble``: ``"nve"`` (velocity Verlet), ``"nvt"`` (Langevin, ``friction_per_fs``) or
    ``"npt"`` (Berendsen barostat and thermostat at ``pressure_gpa``).

    ``observers``: callables attached every ``observer_interval`` steps, e.g. an
    :class:`~facet_calc.workflows.uncertainty.UncertaintyMonitor`; one that raises
    ``UncertaintyExceeded`` ends the run early (``interrupted=True``, ``stop_reason`` its message).
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {ENSEMBLES}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not timestep_fs > 0:
        raise ValueError(f"timestep_fs must be positive, got {timestep_fs!r}")
    if not temperature_k >= 0:
        raise ValueError(f"temperature_k must be zero or positive, got {temperature_k!r}")
    atoms = as_atoms(structure)
    if len(atoms) < 2:
        raise ValueError(f"molecular dynamics needs at least 2 atoms, got {len(atoms)}; use a supercell")
    atoms.calc = resolve_calculator(calculator, "md")
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_k, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt, trajectory=trajectory, loginterval=log_interval)
    elif ensemble == "nvt":
        dyn = Langevin(
            atoms,
            timestep=dt,
            temperature_K=temperature_k,
            friction=friction_per_fs / units.fs,
            fixcm=False,  # ASE's recommended setting: fixcm=True does not sample NVT exactly
            rng=rng,
            trajectory=trajectory,
            loginterval=log_interval,
        )
    else:
        dyn = NPTBerendsen(
            atoms,
            timestep=dt,
            temperature_K=temperature_k,
            pressure_au=pressure_gpa * units.GPa,
            taut=100 * units.fs,
            taup=500 * units.fs,
            compressibility_au=1.0 / (100.0 * units.GPa),
            trajectory=trajectory,
            loginterval=log_interval,
        )
    rows = []

    def record():
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        volume = atoms.get_volume() if atoms.cell.rank == 3 else 0.0
        rows.append((dyn.get_time() / units.fs, epot, ekin, epot + ekin, atoms.get_temperature(), volume))

    bar = progress_bar(steps, f"MD {ensemble.upper()}", progress)
    dyn.attach(record, interval=log_interval)
    # ASE also calls observers once before the first step: count steps, not calls
    dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    for observer in observers:
        dyn.attach(observer, interval=observer_interval)
    interrupted, stop_reason = False, None
    try:
        dyn.run(steps)
    except KeyboardInterrupt:
        interrupted, stop_reason = True, "interrupted (Ctrl-C)"
    except UncertaintyExceeded as err:
        interrupted, stop_reason = True, str(err)
    finally:
        bar.close()
        dyn.close()  # flush and close the trajectory, interrupted or not
    data = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return MDResult(atoms, *(data[:, k] for k in range(6)), steps_done=int(dyn.nsteps), interrupted=interrupted,
                    stop_reason=stop_reason)  # fmt: skip
