"""A compiled decision model and its evaluation.

``Plan.evaluate`` only walks the compiled nodes: nothing is parsed or compiled here. A plan with no I/O
nodes evaluates synchronously; one with external calls evaluates on the event loop, starting each call as
soon as its inputs are ready and giving every unfinished node its fallback when the deadline passes.
``Plan.evaluate_batch`` evaluates several decisions node by node (engine/batching.py says when).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ArbiterError, EvaluationError
from engine.feel import UnaryTests, to_json
from engine.feel.convert import coerce_input
from engine.nodes.base import MISS, TraceEntry
from engine.types import JSONObject

_perf_ns = time.perf_counter_ns


@dataclass(slots=True)
class Result:
    outputs: Any
    trace: list[TraceEntry]
    errors: list[JSONObject] = field(default_factory=list)

    def trace_json(self) -> list[JSONObject]:
        return [to_json(e.as_dict()) for e in self.trace]


@dataclass(frozen=True, slots=True)
class Plan:
    key: str
    version: int
    nodes: tuple[Any, ...]
    """Topologically ordered compiled nodes."""
    output_id: str | None
    inputs: tuple[tuple[str, str], ...]
    deadline_ms: int | None
    max_result_bytes: int
    types: Mapping[str, Any] = field(default_factory=dict)
    input_checks: tuple[tuple[str, UnaryTests], ...] = ()
    """Declared inputs whose type lists allowed values (DMN item definitions): checked on the way in."""
    """The model's item definitions: declared inputs are coerced through them (DMN structures, lists)."""
    reads_session_events: bool = True
    """Whether the model may read a guest's session events (:mod:`engine.guestreads`): if not, decisions read the
    guest without them. True unless the compiler has shown otherwise."""
    reads_assignments: bool = True
    """Whether the model may read a guest's experiment assignments beyond those of the experiments it chooses in
    (:mod:`engine.guestreads`): if not, decisions read only those. True unless the compiler has shown otherwise."""
    experiment_keys: tuple[str, ...] = ()
    """The experiments its experiment nodes choose in: their targeting sees the whole guest."""
    is_async: bool = field(init=False)
    output_is_json: bool = field(init=False)
    """The answer node returns JSON already (output nodes do): no second conversion."""
    steps: tuple[tuple[Any, bool, tuple[str, ...]], ...] = field(init=False, repr=False)
    """Per node: the node, whether it waits on I/O, and the I/O nodes among its dependencies (worked out
    once here rather than per request: most nodes have none to wait for)."""

    def __post_init__(self) -> None:
        io_ids = {n.id for n in self.nodes if hasattr(n, "evaluate_async")}
        steps = tuple((n, n.id in io_ids, tuple(d for d in n.deps if d in io_ids)) for n in self.nodes)
        object.__setattr__(self, "is_async", bool(io_ids))
        object.__setattr__(self, "steps", steps)
        answer = next((n for n in self.nodes if n.id == self.output_id), None)
        object.__setattr__(self, "output_is_json", getattr(answer, "json_output", False))

    def scope(self, guest: JSONObject, context: JSONObject) -> dict[str, Any]:
        scope: dict[str, Any] = {"guest": guest, "context": context}
        for name, type_name in self.inputs:
            scope[name] = coerce_input(context.get(name), type_name, self.types)
        return scope

    def evaluate(self, guest: JSONObject, context: JSONObject) -> Result:
        """Evaluate a plan without I/O nodes. Never raises for a node's failure: the trace records it."""
        scope = self.scope(guest, context)
        rejected = self._check_inputs(scope)
        trace = [self._run(node, scope) for node in self.nodes]
        return self._result(scope, trace, rejected)

    def _check_inputs(self, scope: dict[str, Any]) -> list[JSONObject]:
        """An input outside its type's allowed values is an error, and reaches the model as null."""
        rejected = []
        for name, allowed in self.input_checks:
            value = scope.get(name)
            if value is not None and not allowed.matches(value, scope):
                scope[name] = None
                rejected.append({"input": name, "error": f"{to_json(value)!r} is not allowed ({allowed.source})"})
        return rejected

    async def evaluate_one(self, guest: JSONObject, context: JSONObject, deadline_ms: int) -> Result:
        """One decision on its own: on the event loop if the plan has I/O nodes, else in one synchronous pass."""
        if self.is_async:
            return await self.evaluate_async(guest, context, deadline_ms)
        return self.evaluate(guest, context)

    async def evaluate_async(self, guest: JSONObject, context: JSONObject, deadline_ms: int) -> Result:
        """Evaluate a plan with I/O nodes within ``deadline_ms`` (the model's own deadline wins if set)."""
        deadline_s = time.monotonic() + (self.deadline_ms or deadline_ms) / 1000
        scope = self.scope(guest, context)
        rejected = self._check_inputs(scope)
        return await self._evaluate_from(0, scope, [], rejected, deadline_s)

    async def _evaluate_from(
        self, start: int, scope: dict[str, Any], trace: list[TraceEntry], rejected: list[JSONObject], deadline_s: float
    ) -> Result:
        """The steps from ``start`` on (the ones before it are in ``scope`` and ``trace``): each I/O node a task
        unless its cache answers, awaited when a later node needs it or at the end."""
        pending: dict[str, asyncio.Task[TraceEntry]] = {}
        for node, waits_on_io, io_deps in self.steps[start:]:
            if pending:
                for dep in io_deps:
                    task = pending.pop(dep, None)
                    if task is not None:
                        trace.append(await task)
            if waits_on_io:
                hit = self._run_cached(node, scope, deadline_s)
                if hit is not None:
                    trace.append(hit)
                    continue
                pending[node.id] = asyncio.ensure_future(self._run_async(node, scope, deadline_s))
            else:
                trace.append(self._run(node, scope))
        for task in pending.values():
            trace.append(await task)
        return self._result(scope, trace, rejected)

    def evaluate_batch(
        self, requests: Sequence[tuple[JSONObject, JSONObject]], deadline_ms: int
    ) -> list[Result | Callable[[], Awaitable[Result]] | BaseException]:
        """Several decisions of this plan at once, node by node: each node runs for every request before the next
        node runs, so its code and data are warm in the CPU's caches for all but the first (a decision walked end to
        end finds them cold: ~2-4× its nodes' cost in a loop, benchmarks/RESULTS.md, session 17).

        Per request, in order: its :class:`Result`; or, once one of its I/O nodes must really call out (no cache
        answer), the rest of its evaluation for its own caller to start and await (a function: nothing is left
        pending if that caller is gone), from that node on exactly as :meth:`evaluate_async` goes on; or the
        exception its inputs raised (only that request fails)."""
        deadline_s = time.monotonic() + (self.deadline_ms or deadline_ms) / 1000
        out: list[Any] = [None] * len(requests)
        live: list[tuple[int, dict[str, Any], list[TraceEntry], list[JSONObject]]] = []
        for slot, (guest, context) in enumerate(requests):
            try:
                scope = self.scope(guest, context)
                rejected = self._check_inputs(scope)
            except Exception as exc:  # noqa: BLE001 — a request's own bad input, reported to that request alone
                out[slot] = exc
                continue
            live.append((slot, scope, [], rejected))
        for i, (node, waits_on_io, _) in enumerate(self.steps):
            if not live:
                break
            if not waits_on_io:
                for _, scope, trace, _ in live:
                    trace.append(self._run(node, scope))
                continue
            still = []
            for job in live:
                slot, scope, trace, rejected = job
                hit = self._run_cached(node, scope, deadline_s)
                if hit is None:
                    out[slot] = functools.partial(self._evaluate_from, i, scope, trace, rejected, deadline_s)
                else:
                    trace.append(hit)
                    still.append(job)
            live = still
        for slot, scope, trace, rejected in live:
            out[slot] = self._result(scope, trace, rejected)
        return out

    def _run(self, node: Any, scope: dict[str, Any]) -> TraceEntry:
        entry = TraceEntry(node.id, node.kind)
        t0 = _perf_ns()
        value = None
        try:
            if node.gate is not None and node.gate.fn(scope) is not True:
                entry.skipped = True
            else:
                value = node.evaluate(scope, entry)
        except ArbiterError as exc:
            entry.error = exc.detail
            value = getattr(node, "fallback", None)
        except Exception as exc:  # noqa: BLE001 — a bug in one node must not turn a decision into a 500
            entry.error = f"internal error in {node.kind} node: {type(exc).__name__}: {exc}"
            value = getattr(node, "fallback", None)
        scope[node.id] = value
        entry.output = value
        entry.time_us = (_perf_ns() - t0) // 1000
        return entry

    def _run_cached(self, node: Any, scope: dict[str, Any], deadline_s: float) -> TraceEntry | None:
        """A cache hit answered in place, without the task and ``asyncio.timeout`` of a real call."""
        cached = getattr(node, "cached", None)
        if cached is None or time.monotonic() >= deadline_s:  # past the deadline the fallback answers
            return None
        entry = TraceEntry(node.id, node.kind)
        t0 = _perf_ns()
        try:
            value = cached(scope, entry)
        except Exception:  # noqa: BLE001 — the call path reports it, with the fallback
            return None
        if value is MISS:
            return None
        scope[node.id] = value
        entry.output = value
        entry.time_us = (_perf_ns() - t0) // 1000
        return entry

    async def _run_async(self, node: Any, scope: dict[str, Any], deadline_s: float) -> TraceEntry:
        entry = TraceEntry(node.id, node.kind)
        t0 = _perf_ns()
        value = node.fallback
        try:
            if node.gate is not None and node.gate(scope) is not True:
                entry.skipped, value = True, None
            else:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining_s):
                    value = await node.evaluate_async(scope, entry, deadline_s)
        except TimeoutError:
            entry.fallback = entry.fallback or "deadline"
        except ArbiterError as exc:
            entry.error = exc.detail
            entry.fallback = entry.fallback or "error"
        except Exception as exc:  # noqa: BLE001 — see _run
            entry.error = f"internal error in {node.kind} node: {type(exc).__name__}: {exc}"
            entry.fallback = entry.fallback or "error"
        scope[node.id] = value
        entry.output = value
        entry.time_us = (_perf_ns() - t0) // 1000
        return entry

    def _result(self, scope: dict[str, Any], trace: list[TraceEntry], rejected: list[JSONObject]) -> Result:
        if self.output_id is not None:
            outputs = scope.get(self.output_id)
            if not self.output_is_json:
                outputs = to_json(outputs)
        else:
            outputs = to_json({n.id: scope.get(n.id) for n in self.nodes})
        errors = rejected + [{"node": e.id, "error": e.error} for e in trace if e.error is not None]
        return Result(outputs, trace, errors)


class ResultTooLarge(EvaluationError):
    status, slug, title = 422, "result-too-large", "Decision result exceeds the size cap"
