"""Decisions that become ready together are evaluated together, node by node.

A worker under load resumes several decisions in one turn of its event loop: Redis answers their guest reads in one
reply, parsed at once. Evaluated one after another, each decision walks every node end to end and finds the code
and data of each cold in the CPU's caches (on the benchmark VM a node cost two to four times what it costs run back
to back); evaluated node-major (:meth:`engine.plan.Plan.evaluate_batch`) each node runs for all of them in a row.

The batch forms by itself: a decision joins the batch of its loop turn, which runs once every decision woken in that
turn has joined (one ``call_soon`` later). Nothing waits for company: a decision with no other decision reading its
guest (the only ones that could be woken in the same turn) and no batch forming is evaluated at once, without the
hop. So batches form only when decisions overlap, which is when the CPU they save is needed. Measured on the
benchmark's model (benchmarks/RESULTS.md, session 17): at saturation (wrk, 32 connections) +30 % decisions a second
and 188 against 243 µs of CPU a decision; at fixed rates of 1,500 and 2,800 a second, no difference beyond noise.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.plan import Plan, Result
from engine.types import JSONObject

SERVICE = "batcher"
"""Key of the worker's :class:`Batcher` in ``rt.services``."""


class Batcher:
    """One per worker (event loop). ``evaluate`` is what :func:`engine.decide.evaluate` awaits."""

    def __init__(self, deadline_ms: int, observe: Any = None) -> None:
        self.deadline_ms = deadline_ms
        self._observe = observe
        """Called with each batch's size (the batch-size histogram in /metrics), if given."""
        self._waiting: list[tuple[Plan, JSONObject, JSONObject, asyncio.Future[Any]]] = []
        self.reading = 0
        """Decisions waiting for their guest (:func:`engine.decide.decide` counts them): the ones that could be ready
        in this loop turn too."""

    async def evaluate(self, plan: Plan, guest: JSONObject, context: JSONObject) -> Result:
        if not self._waiting and not self.reading:
            # No decision could join this one in this turn: at once, without the hop a batch takes.
            if self._observe is not None:
                self._observe(1)
            return await plan.evaluate_one(guest, context, self.deadline_ms)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._run)
        self._waiting.append((plan, guest, context, answer))
        outcome = await answer
        # An I/O node that had to call out: this decision goes on by itself, the batch did not wait for it.
        return outcome if isinstance(outcome, Result) else await outcome()

    def _run(self) -> None:
        waiting, self._waiting = self._waiting, []
        if self._observe is not None:
            self._observe(len(waiting))
        by_plan: dict[int, list[tuple[Plan, JSONObject, JSONObject, asyncio.Future[Any]]]] = {}
        for job in waiting:
            by_plan.setdefault(id(job[0]), []).append(job)
        for jobs in by_plan.values():
            requests = [(guest, context) for _, guest, context, _ in jobs]
            try:
                outcomes: list[Any] = jobs[0][0].evaluate_batch(requests, self.deadline_ms)
            except Exception as exc:  # noqa: BLE001 — a bug in the batch loop fails its decisions, not the worker
                outcomes = [exc] * len(jobs)
            for (_, _, _, answer), outcome in zip(jobs, outcomes, strict=True):
                if answer.done():  # its request was cancelled meanwhile
                    continue
                if isinstance(outcome, BaseException):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome)
