"""The loop-local histograms expose exactly what prometheus_client's Histogram would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from engine.metrics import NODE_BUCKETS_S, LoopHistogram


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
