"""A library must not change the user's process: floating-point modes, plotting backends,
torch's default dtype, thread counts beyond what the process may use."""

import os
import sys

import numpy as np
import processes
import pytest
import torch

from facet_calc.nn._kernels import kernel_threads


@pytest.mark.integration
def test_loading_the_kernel_keeps_subnormal_numbers():
    """Linking with -ffast-math pulls in crtfastmath, which sets flush-to-zero for the whole
    process when the library loads; then 1e-310 * 1.0 == 0.0 everywhere."""
    code = (
        "import numpy as np\n"
        "from facet_calc.nn._kernels import spline_conv_library\n"
        "assert np.float64(1e-310) * 1.0 != 0.0, 'subnormals flushed before the kernel loaded'\n"
        "lib = spline_conv_library()\n"
        "print(lib is not None, np.float64(1e-310) * 1.0 != 0.0, np.float32(1e-40) * np.float32(1) != 0)\n"
    )
    what = "loading the kernel in a fresh interpreter"  # measured 9.3 s
    run = processes.run([sys.executable, "-c", code], what=what, timeout=90, env=dict(os.environ))
    assert run.returncode == 0, run.stderr[-2000:]
    loaded, survive64, survive32 = run.stdout.split()
    if loaded != "True":
        pytest.skip("no C++ compiler here: the kernel cannot be built")
    assert survive64 == "True" and survive32 == "True"


def test_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from facet_calc.workflows.eos import EOSResult

    volumes = np.linspace(15.0, 19.0, 7)
    result = EOSResult(
        volumes_a3=volumes,
        energies_ev=0.05 * (volumes - 17.0) ** 2 - 3.7,
        v0_a3=17.0,
        v0_per_atom_a3=17.0,
        e0_ev=-3.7,
        b0_gpa=0.1 * 17.0 * 160.2,
        eos_name="birchmurnaghan",
    )
    backend = matplotlib.get_backend()
    figures = plt.get_fignums()
    fig = result.plot(tmp_path / "eos.png")
    assert (tmp_path / "eos.png").stat().st_size > 1000
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == figures  # nothing left open in pyplot's figure list
    assert len(fig.axes) == 1


def test_loading_never_changes_torchs_default_dtype(monkeypatch):
    """Building a model changes nothing process-wide: not during construction (a family sees
    the caller's default dtype), not after, not when it fails, and not from threads loading
    float32 and float64 models at once."""
    import threading

    from facet_calc import load_potential
    from facet_calc.nn import families

    before = torch.get_default_dtype()
    load_potential("7net-0-spline", dtype="float64")
    assert torch.get_default_dtype() == before

    class Broken:
        architecture = "broken"

        @staticmethod
        def check_config(config):  # the config is fine; the construction fails
            pass

        def __init__(self, config):
            assert torch.get_default_dtype() == before
            raise RuntimeError("model construction failed")

    monkeypatch.setitem(families.FAMILIES, "broken", Broken)
    with pytest.raises(RuntimeError, match="construction failed"):
        families.build_model({"format_version": 1, "architecture": "broken"}, torch.float64)
    assert torch.get_default_dtype() == before

    errors, dtypes = [], []

    def load(dtype):
        try:
            dtypes.append((dtype, load_potential("7net-0-spline", dtype=dtype).dtype))
        except Exception as err:  # noqa: BLE001 - any failure is the finding
            errors.append(err)

    threads = [threading.Thread(target=load, args=(d,)) for d in ("float32", "float64") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(str(got) == f"torch.{want}" for want, got in dtypes) and len(dtypes) == 6
    assert torch.get_default_dtype() == before


def test_float64_models_built_under_a_float32_default_have_exact_constants():
    """Every buffer of a float64 model built under torch's float32 default equals the buffer of
    one built under a float64 default (e3nn's Clebsch-Gordan tables included), to the bit."""
    import json

    from facet_calc.nn import build_model
    from facet_calc.potential import potentials_dir

    config = json.loads((potentials_dir() / "7net-l3i5-spline" / "config.json").read_text())
    model = build_model(config, torch.float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the test, not the library, changes the default
    try:
        reference = dict(build_model(config, torch.float64).named_buffers())
    finally:
        torch.set_default_dtype(previous)
    checked = 0
    for name, buffer in model.named_buffers():
        if buffer is not None and buffer.is_floating_point():
            assert buffer.dtype == torch.float64, name
            assert torch.equal(buffer, reference[name]), name
            checked += 1
    assert checked > 50


def test_no_module_sets_the_default_dtype():
    """``torch.set_default_dtype`` is process-wide and not thread-safe: the library never calls it."""
    from pathlib import Path

    import facet_calc

    root = Path(facet_calc.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if "set_default_dtype" in p.read_text()]
    assert offenders == []


def test_kernel_threads_respect_the_affinity_mask_and_torch_setting():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this platform")
    allowed = len(os.sched_getaffinity(0))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(allowed + 3)
        assert kernel_threads() == allowed
        torch.set_num_threads(1)
        assert kernel_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_kernel_threads_follow_a_changed_affinity_mask(monkeypatch):
    """The mask is re-read after ``_AFFINITY_TTL`` (0 here): restricting the process to one CPU
    (as ``taskset`` would) brings the kernels' threads down to one."""
    from facet_calc.nn import _kernels

    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs affinity masks and two CPUs")
    monkeypatch.setattr(_kernels, "_AFFINITY_TTL", 0.0)
    mask, previous = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        torch.set_num_threads(len(mask))
        assert kernel_threads() == len(mask)
        os.sched_setaffinity(0, {min(mask)})
        assert kernel_threads() == 1
    finally:
        os.sched_setaffinity(0, mask)
        torch.set_num_threads(previous)
