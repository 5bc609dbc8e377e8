"""Training throughput: facet_calc's trainer against sevenn's own trainer, same data, same run.

    python benchmarks/train_speed.py                                   # generated Si set, batch 4
    python benchmarks/train_speed.py --train models/datasets/si_pbe_gpaw/train.extxyz
    python benchmarks/train_speed.py --steps 24 --batch-size 8 --threads 2 --only sevenn

Both sides fine-tune SevenNet-0 (facet_calc: its exact spline conversion ``7net-0-spline``;
sevenn: the checkpoint ``7net-0``) on the same extxyz (labels in the attached results: energy,
forces, stress), float32 on the CPU, with energy + force + stress terms in the loss, at the
same batch size, learning rate and torch thread count. Each side runs its own real training
step, driven through its own trainer:

* sevenn: exactly the sequence of ``sevenn.scripts.train.train_v2`` (what ``sevenn input.yaml``
  runs) for sevenn's fine-tuning preset ``presets/fine_tune.yaml`` with the checkpoint, batch
  size, learning rate, loss and training file replaced: ``read_config_yaml`` ->
  ``processing_continue_v2`` (checkpoint weights) -> ``graph_dataset.from_config`` (graphs built
  once, up front) -> ``loader_from_config`` (PyG ``DataLoader``) ->
  ``build_E3_equivariant_model`` -> ``Trainer.from_config`` + ``load_state_dicts`` ->
  ``Trainer.run_one_epoch(loader, is_train=True, error_recorder)`` per epoch, then
  ``ErrorRecorder.epoch_forward`` and ``Trainer.scheduler_step`` as ``processing_epoch_v2`` does
  (its checkpoint writing and log printing are left out).
* facet_calc: ``facet_calc.train.Trainer.train_epoch`` (AdamW, gradient clipping, EMA, the
  schedule, training metrics: its defaults) on configurations from ``read_configurations``.

When both sides run, they are set up in one process, warmed up, and then timed in turns of
``--block`` steps (order swapped each round), so that both see the same load on a shared
machine; each turn is an epoch of the trainer cut after ``--block`` steps (per-step work does
not depend on where in an epoch a step falls).

What is timed: training steps only. One-off work is excluded and reported separately: graph
building, model loading, and the first ``--warmup`` steps (lazy initialisation, allocator
growth). A step is everything between two optimizer steps in the trainer's own loop: batching
(collation), forward, loss, backward (with the second derivatives that force and stress terms
need), optimizer step and the per-step metric bookkeeping of each trainer. Throughput =
configurations (atoms) in the timed steps / their summed wall time; also per CPU second of the
process (``time.process_time``), the figure that waiting for a busy core does not inflate.

Memory: each side runs again in a fresh subprocess per batch size (``--batch-size`` and
``--memory-large-batch``, default 4x); the resident set size is sampled every millisecond from
just before the first training step (data, model and optimizer built) to the end of step
``--memory-steps``. Reported: the growth (peak - before) at the batch size, that growth per
atom of the batch (includes one-off allocations of the first step), and the marginal memory per
atom, the slope of the growth between the two batch sizes (one-off costs cancel): what one more
atom in a batch costs.

Prints configurations/s and atoms/s of both sides and their ratio (facet / sevenn; > 1 means
facet_calc trains faster). If ``facet_calc.train`` cannot be imported, the sevenn side still
runs and the facet column says why it is missing. Needs the test extra (sevenn).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

# Runs as a script from anywhere in the checkout (PYTHONPATH=<checkout> for facet_calc).
REPO = Path(__file__).resolve().parent.parent

DEFAULT_LR = 1e-4


# -- data -----------------------------------------------------------------------------------
def generate_si_set(path: str | Path, n_configs: int = 64, seed: int = 0, labeller: str = "sevenn") -> Path:
    """Write the standard benchmark set to ``path`` (extxyz) and return the path.

    ``n_configs`` 8-atom cubic diamond Si cells (a = 5.43 A), each strained by a random
    symmetric strain with components uniform in [-2 %, +2 %] and rattled by 0.05 A (normal,
    per Cartesian component), labelled (energy, forces, stress in the attached results) by a
    cheap calculator: ``"sevenn"`` (SevenNetCalculator("7net-0"), float32) or ``"facet"``
    (FacetCalculator("7net-0-spline")). The labels only have to be physical and consistent:
    throughput does not depend on their values.
    """
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    if labeller == "sevenn":
        from sevenn.calculator import SevenNetCalculator

        calc = SevenNetCalculator("7net-0", device="cpu")
    elif labeller == "facet":
        from facet_calc import FacetCalculator

        calc = FacetCalculator("7net-0-spline", dtype="float64")
    else:
        raise ValueError(f"labeller must be 'sevenn' or 'facet' (got {labeller!r})")
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_configs):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        strain = rng.uniform(-0.02, 0.02, size=(3, 3))
        strain = 0.5 * (strain + strain.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress()
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, stress=stress)
        labelled.info["config_id"] = i
        frames.append(labelled)
    path = Path(path)
    write(path, frames, format="extxyz")
    return path


def labelled_file(path: str | Path, workdir: str | Path, prefix: str = "REF_") -> Path:
    """``path`` if its labels are in the attached results (as both trainers read them by
    default), else a copy in ``workdir`` with ``{prefix}energy``, ``{prefix}forces`` and
    ``{prefix}stress`` (Voigt, eV/A^3, ASE sign; the MACE / janus-core convention) moved into
    attached results. The copy is made before anything is timed."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    frames = read(path, index=":")
    if all(a.calc is not None and {"energy", "forces", "stress"} <= set(a.calc.results) for a in frames):
        return Path(path)
    keys = (f"{prefix}energy", f"{prefix}forces", f"{prefix}stress")
    converted = []
    for i, atoms in enumerate(frames):
        missing = [k for k in keys if k not in atoms.info and k not in atoms.arrays]
        if missing:
            raise ValueError(
                f"{path}[{i}] has neither attached energy/forces/stress results nor {', '.join(missing)}; "
                "label it, or pass --label-prefix for keys named otherwise"
            )
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(
            labelled, energy=float(atoms.info[keys[0]]), forces=atoms.arrays[keys[1]], stress=atoms.info[keys[2]]
        )
        converted.append(labelled)
    out = Path(workdir) / (Path(path).stem + "_results.extxyz")
    write(out, converted, format="extxyz")
    return out


def count_atoms(path: str | Path) -> list[int]:
    from ase.io import read

    return [len(a) for a in read(path, index=":")]


# -- timing helpers ---------------------------------------------------------------------------
def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: the CPU time of this process is the robust figure on a loaded
    machine (time spent waiting for a core does not count), the wall time what a user waits."""
    return time.perf_counter(), time.process_time()


def durations(stamps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, CPU) duration of each step from consecutive clock stamps."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps[:-1], stamps[1:])]


def summarize(
    step_times: list[tuple[float, float]], step_configs: list[int], step_atoms: list[int], warmup: int
) -> dict:
    """Throughput of the steps after the first ``warmup``; ``step_times`` are (wall, CPU) s."""
    if len(step_times) <= warmup:
        raise ValueError(f"need more than {warmup} steps to time (got {len(step_times)}); raise --steps")
    wall = [t[0] for t in step_times[warmup:]]
    cpu = [t[1] for t in step_times[warmup:]]
    c = step_configs[warmup:]
    a = step_atoms[warmup:]
    return {
        "timed_steps": len(wall),
        "warmup_steps": warmup,
        "configs_per_s": sum(c) / sum(wall),
        "atoms_per_s": sum(a) / sum(wall),
        "configs_per_cpu_s": sum(c) / sum(cpu),
        "atoms_per_cpu_s": sum(a) / sum(cpu),
        "ms_per_step_median": 1e3 * float(np.median(wall)),
        "cpu_ms_per_step_median": 1e3 * float(np.median(cpu)),
        "warmup_s": float(sum(t[0] for t in step_times[:warmup])),
    }


class _TimedLoader:
    """Wraps a loader for ``sevenn.train.trainer.Trainer.run_one_epoch``: stops after
    ``limit`` batches and stamps the clock just before each batch is fetched (so collation
    counts as part of the step it feeds, as it does in the trainer's own loop)."""

    def __init__(self, loader, limit: int, stamps: list, configs: list[int], atoms: list[int]):
        self.loader, self.limit = loader, limit
        self.stamps, self.configs, self.atoms = stamps, configs, atoms

    def __iter__(self):
        iterator = iter(self.loader)
        for _ in range(self.limit):
            self.stamps.append(clock())
            try:
                batch = next(iterator)
            except StopIteration:
                self.stamps.pop()
                return
            self.configs.append(int(batch.num_graphs))
            self.atoms.append(int(batch.num_nodes))
            yield batch


# -- sevenn side ------------------------------------------------------------------------------
class SevennRun:
    """sevenn's fine-tuning workflow (``train_v2``) set up up to the first epoch.

    Attributes: ``config`` (sevenn's global config dict), ``trainer``
    (``sevenn.train.trainer.Trainer``), ``loader`` (training ``DataLoader``), ``recorder``
    (``ErrorRecorder`` of the training set), ``setup_s`` (graph building, model build and
    checkpoint load, s).
    """

    def __init__(
        self,
        train_file: str | Path,
        batch_size: int,
        workdir: str | Path,
        dtype: str = "float32",
        lr: float = DEFAULT_LR,
        loss: str = "mse",
        seed: int = 0,
        quiet: bool = True,
    ):
        import sevenn
        import sevenn._keys as KEY
        import sevenn.train.graph_dataset as graph_dataset
        import yaml
        from sevenn.error_recorder import ErrorRecorder
        from sevenn.model_build import build_E3_equivariant_model
        from sevenn.parse_input import read_config_yaml
        from sevenn.scripts.processing_continue import processing_continue_v2
        from sevenn.scripts.train import loader_from_config
        from sevenn.train.trainer import Trainer

        if dtype != "float32":
            # sevenn's trainer refuses anything but single precision ("double precision is not
            # implemented yet" in sevenn.main.sevenn)
            raise ValueError(f"sevenn trains in float32 only (asked for {dtype!r}); use --dtype float32")
        if loss not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber' (got {loss!r})")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        # sevenn's own fine-tuning preset, with the benchmark's data and settings put in
        preset = Path(sevenn.__file__).parent / "presets" / "fine_tune.yaml"
        inputs = yaml.safe_load(preset.read_text())
        inputs["train"].update(
            random_seed=seed,
            device="cpu",
            is_train_stress=True,
            loss=loss,
            loss_param={"delta": 0.01} if loss == "huber" else {},
            optimizer="adamw",  # as facet_calc's trainer; sevenn's preset says adam
            optim_param={"lr": lr},
            force_loss_weight=1.0,
            stress_loss_weight=0.01,  # sevenn's stress loss is in kbar
        )
        inputs["train"]["continue"]["checkpoint"] = "7net-0"
        inputs["data"] = {
            "batch_size": batch_size,
            "data_divide_ratio": 0.0,
            "data_format_args": {"index": ":"},
            "load_trainset_path": [str(Path(train_file).resolve())],
        }
        input_yaml = workdir / "input.yaml"
        input_yaml.write_text(yaml.safe_dump(inputs))

        out = io.StringIO()
        # sevenn and PyG print progress bars and log lines while building graphs
        quiet_out = contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext()
        quiet_err = contextlib.redirect_stderr(out) if quiet else contextlib.nullcontext()
        with quiet_out, quiet_err, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            model_config, train_config, data_config = read_config_yaml(str(input_yaml))
            config = {"version": sevenn.__version__, "_model_type": "E3_equivariant_model"}
            config.update(model_config)
            config.update(train_config)
            config.update(data_config)
            config.update(
                {KEY.IS_DDP: False, KEY.DDP_BACKEND: "nccl", KEY.LOCAL_RANK: 0, KEY.RANK: 0, KEY.WORLD_SIZE: 1}
            )
            torch.manual_seed(seed)
            state_dicts, _ = processing_continue_v2(config)
            graphs_start = time.perf_counter()
            datasets = graph_dataset.from_config(config, str(workdir))
            self.graph_build_s = time.perf_counter() - graphs_start
            self.loader = loader_from_config(config, datasets["trainset"], is_train=True)
            model = build_E3_equivariant_model(config)
            self.trainer = Trainer.from_config(model, config)
            self.trainer.load_state_dicts(*state_dicts, strict=False)
            self.recorder = ErrorRecorder.from_config(config, self.trainer.loss_functions)
            self.setup_s = time.perf_counter() - start
        self.config = config
        self.n_configs = len(datasets["trainset"])
        self.steps_per_epoch = len(self.loader)

    def run_steps(self, n_steps: int) -> tuple[list[float], list[int], list[int]]:
        """Run ``n_steps`` training steps (across epochs as needed) through
        ``Trainer.run_one_epoch``; returns per-step (wall, CPU) times (s), configurations, atoms.
        Each call starts a fresh pass of the loader (an epoch cut after the steps asked for)."""
        stamps: list[tuple[float, float]] = []
        configs: list[int] = []
        atoms: list[int] = []
        times: list[tuple[float, float]] = []
        done = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while done < n_steps:
                limit = min(n_steps - done, self.steps_per_epoch)
                first = len(stamps)
                loader = _TimedLoader(self.loader, limit, stamps, configs, atoms)
                self.trainer.run_one_epoch(loader, is_train=True, error_recorder=self.recorder)
                end = clock()
                times.extend(durations(stamps[first:] + [end]))
                done = len(stamps)
                if limit == self.steps_per_epoch:  # a whole epoch: the workflow's epoch end
                    self.recorder.epoch_forward()
                    self.trainer.scheduler_step()
        return times, configs, atoms


def sevenn_throughput(
    train_file: str | Path,
    batch_size: int,
    n_steps: int,
    dtype: str = "float32",
    threads: int | None = 1,
    warmup: int = 2,
    lr: float = DEFAULT_LR,
    loss: str = "mse",
    workdir: str | Path | None = None,
) -> dict:
    """Fine-tune SevenNet-0 with sevenn's own trainer on ``train_file`` for ``n_steps`` steps of
    ``batch_size`` configurations; configurations/s and atoms/s of the steps after ``warmup``.

    Graph building (reported as ``graph_build_s``) and the rest of the setup (``setup_s``) are
    not timed as steps. ``threads`` sets ``torch.set_num_threads`` (None: leave it)."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(workdir) as tmp:
        run = SevennRun(train_file, batch_size, Path(tmp) / "sevenn", dtype=dtype, lr=lr, loss=loss)
        times, configs, atoms = run.run_steps(n_steps)
    result = summarize(times, configs, atoms, warmup)
    result.update(
        side="sevenn",
        graph_build_s=run.graph_build_s,
        setup_s=run.setup_s,
        batch_size=batch_size,
        n_train=run.n_configs,
        threads=torch.get_num_threads(),
        dtype=dtype,
    )
    return result


# -- facet_calc side --------------------------------------------------------------------------
def facet_available() -> str | None:
    """None if facet_calc's trainer can be imported, else the reason it cannot."""
    try:
        import facet_calc.train  # noqa: F401
    except ImportError as err:
        return f"facet_calc.train not importable ({err})"
    return None


class FacetRun:
    """facet_calc's fine-tuning set up up to the first epoch (mirrors ``finetune``, without the
    shift refit and the validation split: every configuration is a training one)."""

    def __init__(
        self,
        train_file: str | Path,
        batch_size: int,
        workdir: str | Path,
        dtype: str = "float32",
        lr: float = DEFAULT_LR,
        loss: str = "mse",
        n_steps: int = 1,
        seed: int = 0,
    ):
        from facet_calc import load_potential
        from facet_calc.train import LossWeights, Trainer, TrainSettings, read_configurations

        start = time.perf_counter()
        potential = load_potential("7net-0-spline", dtype=dtype)
        model = copy.deepcopy(potential.model).requires_grad_(True)
        graphs_start = time.perf_counter()
        configs = read_configurations(train_file, potential.atomic_numbers, potential.cutoff)
        self.graph_build_s = time.perf_counter() - graphs_start
        self.steps_per_epoch = math.ceil(len(configs) / batch_size)
        epochs = max(1, math.ceil(n_steps / self.steps_per_epoch))
        settings = TrainSettings(
            epochs=epochs, batch_size=batch_size, dtype=dtype, lr=lr, seed=seed, loss=LossWeights(kind=loss)
        )
        self.trainer = Trainer(model, configs, [], settings, workdir, progress=False, on_step=self._on_step)
        self.setup_s = time.perf_counter() - start
        self.n_configs = len(configs)
        self._stamps: list[tuple[float, float]] = []
        self._limit = 0
        self._epoch = 0

    def _on_step(self, trainer, epoch: int, step: int) -> None:
        self._stamps.append(clock())
        if len(self._stamps) - 1 >= self._limit:
            raise _StopSteps  # leaves train_epoch after the step (the lead's tests interrupt so)

    def run_steps(self, n_steps: int) -> tuple[list[float], list[int], list[int]]:
        """``n_steps`` steps of ``Trainer.train_epoch`` (across epochs as needed); per-step
        (wall, CPU) times (s), configurations and atoms. Each epoch is cut after the steps asked
        for; the next call goes on with the next epoch (its own seeded shuffle)."""
        times: list[tuple[float, float]] = []
        configs: list[int] = []
        atoms: list[int] = []
        while len(times) < n_steps:
            epoch = self._epoch
            # the batches train_epoch will draw (same seeded shuffle), for the counts only
            batches = self.trainer._batches(self.trainer.train_set, shuffle_epoch=epoch)
            self._limit = min(n_steps - len(times), len(batches))
            self._stamps = [clock()]
            try:
                self.trainer.train_epoch(epoch)
            except _StopSteps:
                pass
            done = len(self._stamps) - 1
            if done != self._limit:
                raise RuntimeError(f"expected {self._limit} steps in epoch {epoch}, saw {done}")
            times.extend(durations(self._stamps))
            configs.extend(len(b) for b in batches[:done])
            atoms.extend(sum(c.n_atoms for c in b) for b in batches[:done])
            self._epoch += 1
        return times, configs, atoms


class _StopSteps(Exception):
    """Raised from the on_step callback to end a facet_calc epoch after the steps asked for."""


def facet_throughput(
    train_file: str | Path,
    batch_size: int,
    n_steps: int,
    dtype: str = "float32",
    threads: int | None = 1,
    warmup: int = 2,
    lr: float = DEFAULT_LR,
    loss: str = "mse",
    workdir: str | Path | None = None,
) -> dict:
    """Fine-tune 7net-0-spline with ``facet_calc.train.Trainer`` on ``train_file``; same
    measurement as :func:`sevenn_throughput`."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(workdir) as tmp:
        run = FacetRun(train_file, batch_size, Path(tmp) / "facet", dtype=dtype, lr=lr, loss=loss, n_steps=n_steps)
        times, configs, atoms = run.run_steps(n_steps)
    result = summarize(times, configs, atoms, warmup)
    result.update(
        side="facet",
        graph_build_s=run.graph_build_s,
        setup_s=run.setup_s,
        batch_size=batch_size,
        n_train=run.n_configs,
        threads=torch.get_num_threads(),
        dtype=dtype,
    )
    return result


# -- both sides in turns ----------------------------------------------------------------------
def interleaved_throughput(
    train_file: str | Path,
    sides: list[str],
    batch_size: int,
    n_steps: int,
    warmup: int = 2,
    block: int = 4,
    dtype: str = "float32",
    threads: int | None = 1,
    lr: float = DEFAULT_LR,
    loss: str = "mse",
) -> dict[str, dict]:
    """Both trainers set up in this process, warmed up (``warmup`` steps each), then timed in
    turns of ``block`` steps (the order swapped every round) until each has run ``n_steps``
    steps: on a shared machine both see the same load. A side whose setup fails is reported
    as ``{"missing": reason}`` (the other still runs)."""
    if threads:
        torch.set_num_threads(threads)
    results: dict[str, dict] = {}
    runs: dict[str, SevennRun | FacetRun] = {}
    record: dict[str, tuple[list, list, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            try:
                if side == "sevenn":
                    runs[side] = SevennRun(train_file, batch_size, Path(tmp) / side, dtype=dtype, lr=lr, loss=loss)
                else:
                    runs[side] = FacetRun(
                        train_file, batch_size, Path(tmp) / side, dtype=dtype, lr=lr, loss=loss, n_steps=n_steps
                    )
                record[side] = runs[side].run_steps(warmup)
            except Exception as err:
                if side == "sevenn" or len(sides) == 1:
                    raise
                traceback.print_exc()  # the facet side is still moving: keep the peer's figures
                runs.pop(side, None)
                results[side] = {"missing": f"failed: {type(err).__name__}: {err}"}
        order = list(runs)
        done = warmup
        while done < n_steps:
            k = min(block, n_steps - done)
            for side in order:
                times, configs, atoms = runs[side].run_steps(k)
                record[side][0].extend(times)
                record[side][1].extend(configs)
                record[side][2].extend(atoms)
            order.reverse()
            done += k
    for side, run in runs.items():
        results[side] = summarize(*record[side], warmup)
        results[side].update(
            side=side,
            graph_build_s=run.graph_build_s,
            setup_s=run.setup_s,
            batch_size=batch_size,
            n_train=run.n_configs,
            threads=torch.get_num_threads(),
            dtype=dtype,
            block=block,
        )
    return results


# -- memory (fresh subprocess per side) -------------------------------------------------------
MEMORY_CHILD = r"""
import json, resource, sys, tempfile, threading, time, warnings
from pathlib import Path
import psutil, torch
warnings.filterwarnings("ignore")
sys.path.insert(0, {bench!r})
import train_speed as ts
side, train_file, batch_size, n_steps, dtype, threads = sys.argv[1:7]
batch_size, n_steps, threads = int(batch_size), int(n_steps), int(threads)
if threads:
    torch.set_num_threads(threads)
process = psutil.Process()
start_rss = process.memory_info().rss
with tempfile.TemporaryDirectory() as tmp:
    if side == "sevenn":
        run = ts.SevennRun(train_file, batch_size, Path(tmp) / "w", dtype=dtype)
    else:
        run = ts.FacetRun(train_file, batch_size, Path(tmp) / "w", dtype=dtype, n_steps=n_steps)
    before = process.memory_info().rss
    highest = [before]
    running = [True]
    def sample():
        while running[0]:
            highest[0] = max(highest[0], process.memory_info().rss)
            time.sleep(0.001)
    sampler = threading.Thread(target=sample)
    sampler.start()
    times, configs, atoms = run.run_steps(n_steps)
    running[0] = False
    sampler.join()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"steps": len(times), "max_atoms_per_batch": max(atoms), "before_mib": before / 2**20,
                  "setup_mib": (before - start_rss) / 2**20, "growth_mib": (highest[0] - before) / 2**20,
                  "peak_mib": peak}}))
"""


def measure_memory(
    side: str, train_file: str | Path, batch_size: int, n_steps: int = 3, dtype: str = "float32", threads: int = 1
) -> dict:
    """Peak resident-set growth (MiB) of ``n_steps`` training steps of ``side`` ("sevenn" or
    "facet") over the resident set just before the first step, in a fresh process.

    The growth includes one-off allocations of the first step; :func:`memory_per_atom` takes
    two batch sizes to separate them from what each atom of a batch costs."""
    bench = Path(__file__).resolve().parent
    code = MEMORY_CHILD.format(bench=str(bench))
    env = dict(os.environ)
    # the caller's PYTHONPATH first (it may point at another checkout), this checkout as fallback
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            side,
            str(Path(train_file).resolve()),
            str(batch_size),
            str(n_steps),
            dtype,
            str(threads),
        ],
        # cwd: "-c" puts the working directory first on sys.path, where a checkout's facet_calc
        # would shadow the one PYTHONPATH names
        capture_output=True,
        text=True,
        env=env,
        cwd=bench,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory run of {side} (batch {batch_size}) failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["batch_size"] = batch_size
    return result


def memory_per_atom(
    side: str,
    train_file: str | Path,
    batch_sizes: tuple[int, int],
    n_steps: int = 3,
    dtype: str = "float32",
    threads: int = 1,
) -> dict:
    """Training memory per atom in a batch: step RSS growth at two batch sizes (fresh process
    each); ``marginal_kib_per_atom`` is the slope between them (fixed one-off costs cancel),
    ``kib_per_atom`` the growth at the first size divided by its atoms (includes them)."""
    runs = [measure_memory(side, train_file, b, n_steps, dtype, threads) for b in batch_sizes]
    small, large = runs
    d_atoms = large["max_atoms_per_batch"] - small["max_atoms_per_batch"]
    slope = 1024 * (large["growth_mib"] - small["growth_mib"]) / d_atoms if d_atoms > 0 else float("nan")
    return {
        "runs": runs,
        "growth_mib": small["growth_mib"],
        "kib_per_atom": 1024 * small["growth_mib"] / small["max_atoms_per_batch"],
        "marginal_kib_per_atom": slope,
    }


# -- main ------------------------------------------------------------------------------------
def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--train",
        default=None,
        help="extxyz with energy/forces/stress (default: generate the "
        "standard set of 64 rattled, strained 8-atom Si cells into a temporary file)",
    )
    parser.add_argument(
        "--labeller", choices=["sevenn", "facet"], default="sevenn", help="calculator that labels the generated set"
    )
    parser.add_argument(
        "--label-prefix", default="REF_", help="label keys of a --train file without attached results: PREFIXenergy..."
    )
    parser.add_argument("--n-configs", type=int, default=64, help="size of the generated set")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16, help="training steps per side (including warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--block", type=int, default=4, help="steps per turn when both sides run in turns")
    parser.add_argument("--dtype", choices=["float32"], default="float32", help="sevenn trains in float32 only")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--loss", choices=["mse", "huber"], default="mse")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on both sides")
    parser.add_argument("--only", choices=["both", "sevenn", "facet"], default="both")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--memory-steps", type=int, default=3, help="training steps per memory run")
    parser.add_argument(
        "--memory-large-batch",
        type=int,
        default=None,
        help="second batch size of the memory runs (default 4x --batch-size)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        train_file = (
            Path(args.train)
            if args.train
            else generate_si_set(Path(tmp) / "si_bench.extxyz", args.n_configs, labeller=args.labeller)
        )
        if not train_file.is_file():
            parser.error(f"training file {str(train_file)!r} does not exist")
        given = train_file
        train_file = labelled_file(train_file, tmp, args.label_prefix)
        if train_file != given:
            print(f"# labels {args.label_prefix}energy/forces/stress of {given} copied into attached results")
        sizes = count_atoms(train_file)
        load = os.getloadavg()
        print(
            f"# data: {args.train or 'generated Si set'} ({len(sizes)} configurations, "
            f"{min(sizes)}-{max(sizes)} atoms each)"
        )
        print(
            f"# batch {args.batch_size}, {args.dtype}, CPU, torch threads {args.threads}, lr {args.lr}, "
            f"{args.loss} loss on energy + forces + stress, {args.steps} steps of which {args.warmup} warm-up"
        )
        print(f"# load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")

        sides = ["sevenn", "facet"] if args.only == "both" else [args.only]
        missing = facet_available() if "facet" in sides else None
        results: dict[str, dict] = {}
        common = dict(
            batch_size=args.batch_size,
            n_steps=args.steps,
            dtype=args.dtype,
            threads=args.threads,
            warmup=args.warmup,
            lr=args.lr,
            loss=args.loss,
        )
        runnable = [side for side in sides if not (side == "facet" and missing)]
        if missing:
            results["facet"] = {"missing": missing}
        results.update(interleaved_throughput(train_file, runnable, block=args.block, **common))
        if not args.no_memory:
            sizes = (args.batch_size, args.memory_large_batch or 4 * args.batch_size)
            for side in runnable:
                if "missing" in results[side]:
                    continue
                try:
                    results[side]["memory"] = memory_per_atom(
                        side, train_file, sizes, args.memory_steps, args.dtype, args.threads
                    )
                except Exception:
                    if side == "sevenn" or args.only == "facet":
                        raise
                    traceback.print_exc()

    print(
        f"{'side':>7} {'configs/s':>10} {'atoms/s':>9} {'configs/CPU-s':>14} {'ms/step':>8} {'graphs s':>9} "
        f"{'warm-up s':>9} "
        f"{'mem MiB':>8} {'KiB/atom':>9} {'marginal KiB/atom':>18}"
    )
    for side, r in results.items():
        if "missing" in r:
            print(f"{side:>7}  not run: {r['missing']}")
            continue
        mem = r.get("memory", {})
        print(
            f"{side:>7} {r['configs_per_s']:10.2f} {r['atoms_per_s']:9.1f} {r['configs_per_cpu_s']:14.2f} "
            f"{r['ms_per_step_median']:8.0f} {r['graph_build_s']:9.2f} {r['warmup_s']:9.2f} "
            f"{_fmt(mem.get('growth_mib', '-'), '8.0f'):>8} "
            f"{_fmt(mem.get('kib_per_atom', '-'), '9.0f'):>9} "
            f"{_fmt(mem.get('marginal_kib_per_atom', '-'), '18.0f'):>18}"
        )
    both = [results.get(s, {}) for s in ("sevenn", "facet")]
    if all("configs_per_s" in r for r in both):
        ratio = both[1]["configs_per_s"] / both[0]["configs_per_s"]
        cpu_ratio = both[1]["configs_per_cpu_s"] / both[0]["configs_per_cpu_s"]
        print(f"speed-up facet/sevenn: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time  (> 1: facet_calc trains faster)")
        if all("memory" in r for r in both):
            mem_ratio = both[1]["memory"]["marginal_kib_per_atom"] / both[0]["memory"]["marginal_kib_per_atom"]
            print(f"memory facet/sevenn (marginal KiB/atom): {mem_ratio:.2f}x  (< 1: facet_calc uses less)")
    load = os.getloadavg()
    print(f"# load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
