"""The loop-local histograms expose exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import asyncio
import gc
import re
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from engine.metrics import LAG_TICK_S, NODE_BUCKETS_S, LoopHistogram, Metrics


def test_same_exposition_as_prometheus_client() -> None:
    reference_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("t_seconds", "doc", ("model", "node"), buckets=NODE_BUCKETS_S, registry=reference_registry)
    ours = LoopHistogram("t_seconds", "doc", ("model", "node"), NODE_BUCKETS_S, ours_registry)
    # Values on bucket bounds (le is inclusive), between them, past the last one, and zero.
    values = [0.0, 0.000005, 0.000007, 0.00001, 0.0001, 0.00012, 0.1, 0.5, 3.0]
    for i, v in enumerate(values):
        for labels in (("m", "a"), ("m", f"n{i % 2}")):
            reference.labels(*labels).observe(v)
            ours.labels(*labels).observe(v)
    expected = [line for line in generate_latest(reference_registry).decode().splitlines() if "_created" not in line]
    assert generate_latest(ours_registry).decode().splitlines() == expected


def test_node_times_in_whole_microseconds_expose_as_seconds() -> None:
    """The node histogram takes the µs the plan measured, as ints; it must render what prometheus_client renders
    for the same times in seconds (bounds in seconds, the sum in seconds, a time on a bound in that bucket)."""
    from engine.nodes.base import TraceEntry

    reference_registry = CollectorRegistry()
    reference = Histogram(
        "arbiter_node_seconds", "Per-node evaluation time", ("model", "node", "kind"), buckets=NODE_BUCKETS_S,
        registry=reference_registry,
    )  # fmt: skip
    metrics = Metrics()
    for time_us in (0, 5, 7, 10, 100, 120, 999, 1000, 250_000):
        entry = TraceEntry("n", "table")
        entry.time_us = time_us
        metrics.observe_decision("m", 0.001, [entry])
        reference.labels("m", "n", "table").observe(time_us / 1_000_000)

    def node_lines(text: bytes) -> list[str]:
        return [line for line in text.decode().splitlines() if line.startswith("arbiter_node_seconds_")]

    expected = [line for line in node_lines(generate_latest(reference_registry)) if "_created" not in line]
    assert node_lines(metrics.render()) == expected


def lag_buckets(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {le: float(n) for le, n in re.findall(r'arbiter_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', text)}


async def test_a_stalled_event_loop_shows_as_lag() -> None:
    metrics = Metrics()
    watch = asyncio.ensure_future(metrics.watch_loop_lag())
    try:
        await asyncio.sleep(LAG_TICK_S * 4)  # ticks of an idle loop: on time
        idle = lag_buckets(metrics)
        assert idle["+Inf"] >= 2
        time.sleep(0.3)  # noqa: ASYNC251 — the stall under test: a callback that holds the loop for 300 ms
        await asyncio.sleep(LAG_TICK_S * 2)
        stalled = lag_buckets(metrics)
        late = (stalled["+Inf"] - stalled["0.1"]) - (idle["+Inf"] - idle["0.1"])
        assert late >= 1  # the tick due during the stall ran at least 100 ms late
        assert stalled["+Inf"] > idle["+Inf"] + late  # and the watch went on ticking after it
    finally:
        watch.cancel()


def test_a_workers_registry_names_its_process() -> None:
    """Each worker's /metrics is its own registry; the pid tells scrapes of different workers apart, as the load
    harness's report needs (benchmarks/load_report.py), and a second scrape of the same worker is the same one."""
    import os

    from benchmarks import load_report

    m = Metrics()
    m.observe_decision("m", 0.001, [])
    first = m.render().decode()
    m.observe_decision("m", 0.001, [])  # still draining its queue: its counts move between scrapes
    second = m.render().decode()
    assert f'arbiter_worker_start_time_seconds{{pid="{os.getpid()}"}}' in first
    a, b = load_report.parse(first, "m"), load_report.parse(second, "m")
    assert a.worker == b.worker == str(os.getpid()) and a.counts != b.counts
    other = load_report.parse(first.replace(f'pid="{os.getpid()}"', 'pid="1"'), "m")
    assert other.worker == "1"


def gc_counts(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {g: float(n) for g, n in re.findall(r'arbiter_gc_pause_seconds_count\{generation="(\d)"\} (\S+)', text)}


def test_collections_are_timed_while_watched_and_not_after() -> None:
    metrics = Metrics()
    gc.disable()  # only the collections below: none triggered by allocations in between
    try:
        with metrics.watching_gc():
            gc.collect(0)
            gc.collect(2)
            gc.collect(2)
        gc.collect(2)  # no longer watched: a finished app leaves no callback behind
    finally:
        gc.enable()
    assert gc_counts(metrics) == {"0": 1.0, "1": 0.0, "2": 2.0}
    text = metrics.render().decode()
    total_s = float(re.search(r'arbiter_gc_pause_seconds_sum\{generation="2"\} (\S+)', text).group(1))  # type: ignore[union-attr]
    assert 0 < total_s < 5  # two real full collections took some time, in seconds
    assert metrics._gc_phase not in gc.callbacks
