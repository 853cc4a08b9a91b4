"""Prometheus metrics: request latency per route, decision latency per model, time per node.

One registry per app (not the library's global one), so tests can build many apps in one process.
Labelled children are cached per (model, node): ``labels()`` costs a lock and a dict walk, and the
decide path would pay it once per node per request.

The latency histograms are :class:`LoopHistogram`: a decision observes eleven of them (the decision and
each node), and prometheus_client's ``Histogram.observe`` takes a lock and walks the buckets in Python
(~0.9 µs); here an observation is one ``bisect`` and two additions. No lock is needed because every
observation and every scrape runs on the worker's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.nodes.base import TraceEntry

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
NODE_BUCKETS_S = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.005, 0.025, 0.1)
LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
GC_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LAG_TICK_S = 0.05
"""How often the lag watch checks the worker's event loop: 20 timer callbacks a second, nothing measurable."""


class LoopHistogram(Collector):
    """A labelled Prometheus histogram for one event loop (see the module doc): same exposition as
    ``prometheus_client.Histogram`` (``_bucket`` with ``le``, ``_sum``, ``_count``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
        unit_s: float = 1.0,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.bounds = buckets
        self.unit_s = unit_s
        """What one unit of an observation is, in seconds: the node histograms take whole µs as the plan measured
        them, with no conversion per node per decision."""
        # Whole bounds as ints: a plan measures whole µs, and bisect compares int with int faster than with float.
        in_unit = (round(b / unit_s, 9) for b in buckets)
        self._bounds_in_unit = tuple(int(b) if b == int(b) else b for b in in_unit)
        self._children: dict[tuple[str, ...], _Bins] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Bins:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Bins(self._bounds_in_unit)
        return child

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            running, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), child.counts, strict=True):
                running += count
                buckets.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            family.add_metric(list(values), buckets, child.total * self.unit_s)
        yield family


class _Bins:
    """One labelled histogram's buckets, bounds and sum in its histogram's unit."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound counts in that bucket, as Prometheus's ``le`` means.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "arbiter_http_requests", "HTTP requests", ("route", "method", "status"), registry=self.registry
        )
        self.request_s = LoopHistogram(
            "arbiter_http_request_seconds",
            "HTTP request latency",
            ("route",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.decision_s = LoopHistogram(
            "arbiter_decision_seconds",
            "Decision evaluation latency (fetch+evaluate)",
            ("model",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.node_s = LoopHistogram(
            "arbiter_node_seconds",
            "Per-node evaluation time",
            ("model", "node", "kind"),
            buckets=NODE_BUCKETS_S,
            registry=self.registry,
            unit_s=1e-6,
        )
        self.node_errors = Counter(
            "arbiter_node_errors",
            "Nodes that failed or took their fallback",
            ("model", "node", "reason"),
            registry=self.registry,
        )
        self.degraded = Counter(
            "arbiter_degraded_decisions", "Decisions answered without the store", ("model",), registry=self.registry
        )
        self.dropped_records = Counter(
            "arbiter_decision_records_dropped",
            "Decision log records dropped after the store refused them",
            registry=self.registry,
        )
        self.models_loaded = Gauge("arbiter_models_loaded", "Models in production", registry=self.registry)
        # Each worker keeps its own registry and a scrape reaches whichever accepted the connection: the pid tells
        # whose numbers these are (the load harness sums each worker's once; counts alone changed while a
        # saturated worker drained its queue, and one worker was summed twice).
        Gauge(
            "arbiter_worker_start_time_seconds",
            "When this worker process started (its registry's numbers count from then)",
            ("pid",),
            registry=self.registry,
        ).labels(str(os.getpid())).set(time.time())
        self.decision_batch = LoopHistogram(
            "arbiter_decision_batch_size",
            "Decisions evaluated together, node by node (engine/batching.py): more than one when decisions overlap",
            (),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels()
        self.loop_lag_s = LoopHistogram(
            "arbiter_event_loop_lag_seconds",
            "How late the worker's event loop ran a timer due every 50 ms: every request in flight waited as long",
            (),
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        ).labels()
        gc_pause_s = LoopHistogram(
            "arbiter_gc_pause_seconds",
            "Python's cyclic garbage collector: how long each collection stopped the worker, by generation",
            ("generation",),
            buckets=GC_BUCKETS_S,
            registry=self.registry,
        )
        self._gc_pause_s = tuple(gc_pause_s.labels(str(g)) for g in range(3))
        self._gc_started_s = 0.0
        self._node_children: dict[str, dict[str, Any]] = {}
        """model → node id → its histogram child (no key tuple to build and hash per node per decision)."""
        self._decision_children: dict[str, Any] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """(route, method, status) → (latency histogram child, request counter child)."""

    def observe_decision(self, model: str, elapsed_s: float, trace: list[TraceEntry]) -> None:
        child = self._decision_children.get(model)
        if child is None:
            child = self._decision_children[model] = self.decision_s.labels(model)
        child.observe(elapsed_s)
        nodes = self._node_children.get(model)
        if nodes is None:
            nodes = self._node_children[model] = {}
        for entry in trace:
            bins = nodes.get(entry.id)
            if bins is None:
                bins = nodes[entry.id] = self.node_s.labels(model, entry.id, entry.kind)
            # _Bins.observe inlined, in µs: a call and a division less for each node of each decision.
            time_us = entry.time_us
            bins.counts[bisect_left(bins.bounds, time_us)] += 1
            bins.total += time_us
            if entry.error is not None or entry.fallback is not None:
                self.node_errors.labels(model, entry.id, entry.fallback or "error").inc()

    def observe_request(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.request_s.labels(route),
                self.requests.labels(route, method, str(status)),
            )
        children[0].observe(elapsed_s)
        children[1].inc()

    async def watch_loop_lag(self) -> None:
        """Observe, every ``LAG_TICK_S``, how late the loop woke this task: a long callback, a collection,
        a CPU-bound request, or the process not running at all (a busy machine) each show as lag. Tells an
        operator whether slow answers come from inside the worker or from outside it."""
        loop = asyncio.get_running_loop()
        while True:
            due_s = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self.loop_lag_s.observe(max(0.0, loop.time() - due_s))

    @contextlib.contextmanager
    def watching_gc(self) -> Iterator[None]:
        """Time every collection while the app runs (a collection is a pause every request in flight shares: with
        the loop lag, it tells an operator whether a slow tail came from the collector). Removed on the way out:
        tests build many apps in one process."""
        gc.callbacks.append(self._gc_phase)
        try:
            yield
        finally:
            gc.callbacks.remove(self._gc_phase)

    def _gc_phase(self, phase: str, info: dict[str, int]) -> None:
        # Collections run in whichever thread allocates: almost always the event loop's; one from an executor thread
        # (name resolution) could at worst lose an increment to a race, never corrupt the buckets.
        if phase == "start":
            self._gc_started_s = time.perf_counter()
        else:
            self._gc_pause_s[info["generation"]].observe(time.perf_counter() - self._gc_started_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request by route name (the endpoint), so label cardinality stays bounded."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("endpoint"), "__name__", "unmatched")
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - t0)
