"""Child processes for the tests (examples, LAMMPS under mpirun, fresh interpreters), each with
a deadline, so that a hang fails the test that started it instead of blocking the run.

Each deadline is 5-10x the child's run time measured on 2 cores shared with other test runs
(the comment beside each call gives the measurement); past it the child's whole process group
is killed (mpirun and its ranks alike) and the test fails, naming what hung and showing its last
output.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def run(cmd, *, what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, **kwargs)`` with a deadline of
    ``timeout`` seconds; ``what`` names the child in the failure message ("example 03_relax.py")."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the child and what it started
            except ProcessLookupError:
                pass
            stdout, stderr = process.communicate()
            pytest.fail(
                f"{what} hung: no result after {timeout:.0f} s (5-10x its measured run time), killed.\n"
                f"command: {' '.join(map(str, cmd))}\n"
                f"last stdout:\n{(stdout or '')[-2000:]}\nlast stderr:\n{(stderr or '')[-2000:]}",
                pytrace=False,
            )
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
