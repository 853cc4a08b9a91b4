"""How long the machine itself stops: a probe that asks to wake every millisecond and records how late it woke.

The idea is jHiccup's (Azul): a process that does nothing but wait 1 ms at a time is late only when the machine
did not run it, so its lateness is what every process on the box lost at that moment, whatever it was doing. On
the 2-vCPU VM of benchmarks/RESULTS.md, with nothing else running, two probes (one per vCPU) were late by 22-35 ms
two or three times a minute, both at the same moments: the whole VM paused. A request in flight then waits as
long, and near a worker's capacity the queue a pause leaves takes far longer than the pause to drain.

The harness runs one probe through each measured run (:class:`Probe`) and reports its pauses next to the run's
latencies. It asks for a higher priority (``nice -10``, where allowed) so that CPU contention among the processes
under test, which their latencies already show, does not count as the machine pausing: it wakes ahead of them.
It costs ~1-2 % of a core (a thousand wake-ups a second).

    python -m benchmarks.hiccup --duration 60      # the idle box: print its pauses
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from typing import IO, Any

INTERVAL_S = 0.001
REPORTED_MS = (5, 15)
"""Pauses longer than these are counted; the longest are listed."""
WORST_KEPT = 10
NICE = -10
READY = "watching"
"""The line a probe run by :class:`Probe` prints once its wait loop starts."""


def watch(until: IO[str] | None, duration_s: float | None) -> dict[str, Any]:
    """Wait ``INTERVAL_S`` at a time until ``until`` reaches its end (or ``duration_s`` has passed); a summary of how
    late each wake-up came. Waiting in ``select`` on ``until`` makes the wait itself the probe."""
    clock = time.perf_counter
    start = clock()
    end = start + duration_s if duration_s is not None else float("inf")
    counts = dict.fromkeys(REPORTED_MS, 0)
    worst: list[float] = []
    probes = 0
    streams = [until] if until is not None else []
    woke = start
    while woke < end:
        ready, _, _ = select.select(streams, [], [], INTERVAL_S)
        if ready and not until.read(1):  # type: ignore[union-attr]  # end of input: the caller is done
            break
        # From one wake-up to the next, the loop's own bookkeeping included: a pause anywhere in it counts.
        now = clock()
        late_ms = (now - woke - INTERVAL_S) * 1000
        woke = now
        probes += 1
        for threshold in REPORTED_MS:
            if late_ms > threshold:
                counts[threshold] += 1
        if late_ms > REPORTED_MS[0]:
            worst = sorted([*worst, late_ms])[-WORST_KEPT:]
    return {
        "seconds": round(clock() - start, 2),
        "probes": probes,
        **{f"late_over_{t}ms": n for t, n in counts.items()},
        "max_ms": round(worst[-1], 1) if worst else 0.0,
        "worst_ms": [round(w, 1) for w in reversed(worst)],
    }


class Probe:
    """A probe in a process of its own for the duration of a ``with`` block; ``summary`` once it has ended."""

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Probe:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.hiccup", "--until-input-ends"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        with contextlib.suppress(OSError):  # not allowed (not root): an ordinary priority, then
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, NICE)
        # Wait for it to be watching: a process still starting (a cold disk, a busy box: CI took over 0.4 s once)
        # would miss the start of the block, and a pause then.
        if self._proc.stdout is not None and self._proc.stdout.readline().strip() != READY:
            raise RuntimeError("the pause probe did not start (python -m benchmarks.hiccup)")
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        out, _ = proc.communicate(timeout=10)  # closes its input: it prints its summary and ends
        with contextlib.suppress(ValueError):
            self.summary = json.loads(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to watch")
    parser.add_argument("--until-input-ends", action="store_true", help="watch until standard input closes")
    args = parser.parse_args(argv)
    if args.until_input_ends:
        print(READY, flush=True)
        summary = watch(sys.stdin, None)
    else:
        summary = watch(None, args.duration)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
