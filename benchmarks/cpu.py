"""What a server's processes spent during a run: CPU, and time spent ready to run but waiting for a core.

A latency tail at a fixed rate has two different causes that the client cannot tell apart: the server had too
much to do (its CPU per second near a whole core), or it had the work but not the core (the load generator, Redis
or another worker was running on it). The kernel counts both per thread in ``/proc/<pid>/task/<tid>/schedstat``
(time on a CPU, time runnable on a run queue, in ns), so the harness reads them around each run for every process
of a server's process group (the server is started in a session of its own: its workers are in its group).

Linux only; elsewhere, or where the kernel keeps no schedstat, a run reports nothing of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def group_pids(pgid: int) -> list[int]:
    """The processes whose process group is ``pgid`` (a server and its workers)."""
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        # Fields after the command, which may itself hold spaces and parentheses: state, ppid, pgrp, …
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def schedstat_ns(pids: list[int]) -> tuple[int, int] | None:
    """(on a CPU, waiting on a run queue) in ns, summed over every thread of ``pids``; None if the kernel keeps none."""
    on_cpu = waiting = 0
    seen = False
    for pid in pids:
        try:
            tasks = list((PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            on_cpu += int(run_ns)
            waiting += int(wait_ns)
            seen = True
    return (on_cpu, waiting) if seen else None


@dataclass
class Meter:
    """``with Meter(pgid) as m: ...``, then ``m.summary(requests, seconds)``: the group's CPU and run-queue wait over
    the block. Processes are found once, at the start (a worker restarted during the run is not counted)."""

    pgid: int | None = None
    pids: list[int] | None = None
    """Given processes instead of a process group's (benchmarks/profile.py: the workers it samples)."""
    _pids: list[int] | None = None
    _start: tuple[int, int] | None = None
    _spent: tuple[int, int] | None = None

    def __enter__(self) -> Meter:
        if self.pids is not None:
            self._pids = list(self.pids)
        elif self.pgid is not None and os.name == "posix" and PROC.is_dir():
            self._pids = group_pids(self.pgid)
        else:
            self._pids = []
        self._start = schedstat_ns(self._pids)
        return self

    def __exit__(self, *exc: object) -> None:
        end = schedstat_ns(self._pids or [])
        if self._start is not None and end is not None:
            self._spent = (end[0] - self._start[0], end[1] - self._start[1])

    def summary(self, requests: int, seconds: float) -> dict[str, Any]:
        """Per answered request and per second of the run; empty when nothing was measured."""
        if self._spent is None or seconds <= 0:
            return {}
        on_cpu_ns, waiting_ns = self._spent
        return {
            "processes": len(self._pids or []),
            "cpu_us_per_request": round(on_cpu_ns / 1000 / requests, 1) if requests else None,
            "cores_busy": round(on_cpu_ns / 1e9 / seconds, 3),
            "runqueue_wait_ms": round(waiting_ns / 1e6, 1),
        }
