"""Decisions that become ready together are evaluated together, node by node.

A worker under load resumes several decisions in one turn of its event loop: Redis answers their guest reads in one
reply, parsed at once. Evaluated one after another, each decision walks every node end to end and finds the code
and data of each cold in the CPU's caches; evaluated node-major (:meth:`engine.plan.Plan.evaluate_batch`) each node
runs back to back for all of them. The batch forms by itself: a decision joins the batch of its loop turn, which runs
once every decision woken in that turn has joined (one ``call_soon`` later). Nothing waits for company — a lone
decision is a batch of one — so batches grow only when decisions queue, which is when the CPU it saves is needed.
Measured on the benchmark's model: saturation +30-40 % (wrk, 32 connections), in-process 16 in flight −16 % CPU a
decision, one in flight +4 % (the extra loop hop), benchmarks/RESULTS.md, session 17.
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

    async def evaluate(self, plan: Plan, guest: JSONObject, context: JSONObject) -> Result:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._run)
        self._waiting.append((plan, guest, context, answer))
        outcome = await answer
        # An I/O node that had to call out: this decision goes on by itself, the batch did not wait for it.
        return outcome if isinstance(outcome, Result) else await outcome

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
                    if asyncio.iscoroutine(outcome):
                        outcome.close()
                elif isinstance(outcome, BaseException):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome)
