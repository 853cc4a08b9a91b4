"""A server's CPU and its wait for a core, read from the kernel around a run (benchmarks/cpu.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks import cpu

SPIN = "import time\nend = time.perf_counter() + {s}\nwhile time.perf_counter() < end: pass\n"
PARENT = "import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', {spin!r}])\n{spin}child.wait()\n"


def spinning_group(seconds: float) -> subprocess.Popen[bytes]:
    """A process in a new process group that keeps a core busy for ``seconds`` with a child that does the same:
    a server and its worker, as the harness starts them."""
    spin = SPIN.format(s=seconds)
    return subprocess.Popen([sys.executable, "-c", PARENT.format(spin=spin)], start_new_session=True)


def group_of_two(proc: subprocess.Popen[bytes]) -> list[int]:
    deadline = time.monotonic() + 5
    while len(pids := cpu.group_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return pids


def test_a_group_that_spins_is_measured_busy() -> None:
    proc = spinning_group(1.0)
    try:
        assert len(group_of_two(proc)) == 2  # both spinning now
        with cpu.Meter(proc.pid) as meter:
            t0 = time.perf_counter()
            time.sleep(0.4)
            wall_s = time.perf_counter() - t0
    finally:
        proc.wait(timeout=10)
    used = meter.summary(requests=100, seconds=wall_s)
    assert used["processes"] == 2
    # Two spinning processes on a 2-core box: about two cores, less whatever else ran (loose bounds, not timing).
    assert 0.5 <= used["cores_busy"] <= 2.1
    per_request_us = used["cores_busy"] * wall_s * 1e6 / 100
    assert abs(used["cpu_us_per_request"] - per_request_us) <= 0.01 * per_request_us
    assert used["runqueue_wait_ms"] >= 0


def test_group_pids_finds_only_the_group() -> None:
    proc = spinning_group(0.5)
    try:
        pids = group_of_two(proc)
    finally:
        proc.wait(timeout=10)
    assert proc.pid in pids and len(pids) == 2
    assert os.getpid() not in pids


def test_nothing_measured_reports_nothing() -> None:
    with cpu.Meter(-1) as meter:  # no process has group -1
        pass
    assert meter.summary(requests=10, seconds=1.0) == {}
