"""The machine-pause probe (benchmarks/hiccup.py): a probe that was not run for a while reports how long."""

from __future__ import annotations

import os
import signal
import time

from benchmarks import hiccup


def test_a_probe_that_is_not_run_reports_the_pause() -> None:
    """Stopping the probe's process (SIGSTOP) for 80 ms is what a paused machine does to it."""
    with hiccup.Probe() as probe:  # returns once the probe is waking every millisecond
        time.sleep(0.2)
        pid = probe._proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.08)
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.2)
    pauses = probe.summary
    assert pauses["late_over_15ms"] >= 1, pauses and pauses["late_over_5ms"] >= pauses["late_over_15ms"]
    assert pauses["max_ms"] >= 70 and pauses["worst_ms"][0] == pauses["max_ms"]
    assert pauses["probes"] > 100 and pauses["seconds"] >= 0.4


def test_an_undisturbed_watch_wakes_about_every_millisecond() -> None:
    pauses = hiccup.watch(None, 0.3)
    assert 0.3 <= pauses["seconds"] < 1.0
    assert 100 < pauses["probes"] <= 300  # never more than one wake-up per millisecond
    assert len(pauses["worst_ms"]) <= hiccup.WORST_KEPT
    assert pauses["worst_ms"] == sorted(pauses["worst_ms"], reverse=True)
