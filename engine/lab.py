"""The experiments feature: definitions and allocations cached in-process, exposures recorded off-path.

The request path (an ``experiment`` node, an OFREP flag) calls :meth:`Lab.choose`, which reads only this
process's memory. Two background tasks keep that memory fresh and write what requests produce:

- the refresher (every ``refresh_s``, ~1 s) re-reads definitions, and when an experiment enters a new
  allocation epoch computes its weights from the posteriors (Monte-Carlo, ``rt.rng``) and offers them to
  Redis; the first process to do so fixes the epoch's weights for all (``Ledger.claim_epoch``);
- the flusher writes exposures (counters, attribution units, the guest's ``assignments`` entry) in
  batches a few milliseconds after the decision was served.

Events from the events feature reach experiments through :func:`engine.rewards.on_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from engine import notices
from engine.assignment import Allocation, Choice, assign
from engine.bandit import allocate
from engine.errors import Conflict, NotFound, Unavailable
from engine.experiments import Experiment, compile_experiment, overlapping
from engine.ledger import Exposure, Ledger, open_ledger
from engine.outage import RETRY_AFTER_S, Outage
from engine.runtime import Runtime
from engine.store import DecisionRecord
from engine.types import JSONObject

log = logging.getLogger("arbiter.experiments")
_exposure = Exposure._make
RESOURCE = "experiment"
ALLOCATION_FIELDS = ("arms", "allocation")
"""Changing these starts a new revision (and so a new epoch): old counts stay with the old weights."""
MAX_PENDING = 100_000
FLUSH_BATCH = 512
"""Exposures per ledger write."""


class UnknownExperiment(NotFound):
    slug, title = "unknown-experiment", "No such experiment"


def epoch_of(exp: Experiment, now_ms: int) -> str:
    """Fixed splits change weights only with a new revision; bandits also every ``epoch_s``."""
    if exp.mode == "fixed":
        return str(exp.revision)
    return f"{exp.revision}.{max(now_ms - exp.started_ms, 0) // int(exp.epoch_s * 1000)}"


class Lab:
    def __init__(self, rt: Runtime, *, refresh_s: float = 1.0, flush_interval_ms: int = 5) -> None:
        self.rt = rt
        self.ledger: Ledger = open_ledger(rt.store)
        self.refresh_s = refresh_s
        self.flush_interval_s = flush_interval_ms / 1000
        self.experiments: dict[str, Experiment] = {}
        self.allocations: dict[str, Allocation] = {}
        self._pending: list[Exposure] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._follower: asyncio.Task[None] | None = None
        self._flush_outage = Outage(log, "writing exposures")
        self._refresh_outage = Outage(log, "refreshing experiments")

    # --- the request path: memory only ------------------------------------------------------------
    def get(self, key: str) -> Experiment:
        exp = self.experiments.get(key)
        if exp is None:
            raise UnknownExperiment(f"no experiment '{key}'", pointer="/experiment")
        return exp

    def choose(
        self, key: str, guest: Mapping[str, Any], context: Mapping[str, Any], eligible: Collection[str] | None = None
    ) -> Choice:
        exp = self.get(key)
        alloc = self.allocations.get(key) or Allocation(epoch_of(exp, 0), exp.weights)
        ref = guest.get("ref")
        return assign(exp, alloc, ref if isinstance(ref, str) and ref else None, guest, context, eligible, self.rt.rng)

    def observe(self, record: DecisionRecord) -> None:
        """A decision was served: queue an exposure for every experiment arm it showed."""
        # Runs per decision: the record's fields read once, the exposure made as the tuple it is (a NamedTuple's
        # own constructor is a Python function).
        decision_id, _, _, guest_ref, _, shadow, at_ms, extra = record
        if shadow or not extra:
            return
        pending = self._pending
        for out in extra.get("experiments", ()):
            exp = self.experiments.get(out.get("experiment"))
            arm = out.get("arm")
            if exp is None or arm is None or out.get("reason") == "DEFAULT":
                continue
            keep = exp.mode == "fixed" and guest_ref is not None
            unit = guest_ref if keep and guest_ref else decision_id
            if len(pending) >= MAX_PENDING:
                pending.pop(0)
            window_s = exp.attribution_window_s
            pending.append(_exposure((exp.key, arm, out["epoch"], unit, decision_id, guest_ref, at_ms, window_s, keep)))
        if pending:
            self._wake.set()

    # --- background -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._refresh_loop()), loop.create_task(self._flush_loop())]
        self._follower = loop.create_task(self._follow_changes())

    async def stop(self) -> None:
        # Loops end at their next turn rather than by cancellation: cancelling a task inside a Redis
        # pipeline can leave the connection half-used, and a swallowed CancelledError would hang here.
        self._stopping.set()
        self._wake.set()
        if self._follower is not None:
            # Cancelled, as it waits on its pub/sub connection (closed on the way out); a refresh it is in the middle
            # of reads through redis-py, which drops a connection a cancel interrupts. Not awaited itself (a cancel
            # Python 3.11 swallows must not hang a shutdown).
            self._follower.cancel()
            await asyncio.wait({self._follower}, timeout=2)
        for task in self._tasks:
            try:
                async with asyncio.timeout(5):
                    await task
            except (TimeoutError, asyncio.CancelledError):
                log.warning("experiments task did not stop in time")
        with contextlib.suppress(Unavailable):
            await self.flush()

    async def flush(self) -> None:
        """Write the exposures queued before the call; returns when they are written.

        Exposures queued while this awaits wait for the flusher's next turn: writing until none were left chased
        the few that arrived during each round trip (2.9 exposures a write, two round trips each, against 22
        now: benchmarks/inprocess)."""
        # The lock makes a reader's flush (results, rewards) wait for a batch the flusher has in flight.
        async with self._flushing:
            due, self._pending = self._pending, []
            for start in range(0, len(due), FLUSH_BATCH):
                try:
                    await self.ledger.expose(due[start : start + FLUSH_BATCH])
                except Unavailable:
                    self._pending[:0] = due[start:]
                    raise

    async def refresh(self) -> None:
        docs = await self.rt.store.resource_list(RESOURCE)
        seen: set[str] = set()
        for doc in docs:
            key = doc.get("key")
            if not isinstance(key, str):
                continue
            seen.add(key)
            current = self.experiments.get(key)
            if current is None or current.definition != doc:
                try:
                    self.experiments[key] = compile_experiment(doc, key)
                    self.allocations.pop(key, None)
                except Exception:  # noqa: BLE001 — one bad stored document must not stop the others
                    log.exception("stored experiment %s does not compile; keeping the previous one", key)
        for key in set(self.experiments) - seen:
            del self.experiments[key]
            self.allocations.pop(key, None)
        now_ms = int(time.time() * 1000)
        for exp in list(self.experiments.values()):
            await self._allocate(exp, now_ms)

    async def _allocate(self, exp: Experiment, now_ms: int) -> None:
        epoch = epoch_of(exp, now_ms)
        current = self.allocations.get(exp.key)
        if current is not None and current.epoch == epoch:
            return
        if exp.mode == "bandit" and exp.status == "running":
            tallies = await self.ledger.totals(exp.key, exp.arm_ids)
            weights = allocate(exp.policy, tallies, self.rt.rng)
        else:
            weights = list(exp.weights)
        if exp.status == "running":
            weights = await self.ledger.claim_epoch(exp.key, epoch, weights)
        self.allocations[exp.key] = Allocation(epoch, tuple(weights))

    def _interval_s(self) -> float:
        bandit_epochs = [e.epoch_s for e in self.experiments.values() if e.mode == "bandit" and e.status == "running"]
        return min([self.refresh_s, *(s / 4 for s in bandit_epochs)])

    async def _refresh_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s()):
                    await self._stopping.wait()
                return
            try:
                await self.refresh()
            except Unavailable as exc:
                self._refresh_outage.failed(f"{exc.detail} (serving the cached allocation)")
            else:
                self._refresh_outage.ended()

    async def _follow_changes(self) -> None:
        """Refresh as soon as an experiment is written or deleted anywhere: a process waiting for its timed
        refresh served an experiment node in a model published just after the experiment with an error (its
        fallback) for up to ``refresh_s`` (the load harness's two-worker runs showed six to eight). The timed
        refresh stays, as the backstop for a missed notice (pub/sub is fire-and-forget)."""

        async def changed(key: str) -> None:
            try:
                await self.refresh()
            except Unavailable as exc:
                log.warning("experiment refresh after a change notice failed; the timed one retries: %s", exc.detail)

        await notices.follow(lambda: self.rt.store.resource_changes(RESOURCE), changed, "experiment")

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            await self._wake.wait()
            with contextlib.suppress(TimeoutError):
                # Gather a batch (one pipeline for many decisions), unless we are stopping.
                async with asyncio.timeout(self.flush_interval_s):
                    await self._stopping.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Unavailable as exc:
                self._flush_outage.failed(exc.detail)
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_AFTER_S):
                        await self._stopping.wait()
            else:
                self._flush_outage.ended()

    # --- admin ----------------------------------------------------------------------------------
    async def put(self, key: str, doc: JSONObject) -> Experiment:
        """Validate and store a definition; keeps revision and start time, which the engine owns."""
        doc = {k: v for k, v in doc.items() if k not in ("revision", "started_ms")}
        compile_experiment(doc, key)
        stored = await self.rt.store.resource_get(RESOURCE, key)
        revision = 1
        started_ms = 0
        if stored is not None:
            changed = any(stored.get(f) != doc.get(f) for f in ALLOCATION_FIELDS)
            revision = int(stored.get("revision", 1)) + (1 if changed else 0)
            started_ms = int(stored.get("started_ms", 0))
        if doc.get("status") == "running" and not started_ms:
            started_ms = int(time.time() * 1000)
        final = {**doc, "key": key, "revision": revision, "started_ms": started_ms}
        exp = compile_experiment(final, key)
        if exp.layer is not None and exp.status in ("running", "paused"):
            for other in self.experiments.values():
                if other.key != key and other.status in ("running", "paused") and overlapping(exp, other):
                    raise Conflict(
                        f"layer '{exp.layer}' buckets {list(exp.layer_range)} overlap experiment '{other.key}' "
                        f"{list(other.layer_range)}",
                        pointer="/layer/range",
                    )
        await self.rt.store.resource_put(RESOURCE, key, exp.definition)
        self.experiments[key] = exp
        self.allocations.pop(key, None)
        await self._allocate(exp, int(time.time() * 1000))
        return exp

    async def delete(self, key: str) -> None:
        exp = self.get(key)
        await self.rt.store.resource_delete(RESOURCE, key)
        await self.ledger.forget(key, exp.arm_ids)
        self.experiments.pop(key, None)
        self.allocations.pop(key, None)


def lab_of(rt: Runtime) -> Lab:
    lab = rt.services.get("experiments")
    if not isinstance(lab, Lab):
        raise Unavailable("the experiments feature is not running")
    return lab
