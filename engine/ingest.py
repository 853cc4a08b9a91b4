"""Ingestion: an event is logged, applied to its guest, and only then acknowledged.

1. **log** — appended to the event log, once per ref (a retry with the same ref is not logged twice);
2. **resolve** — the browser's guest, following merges; an IDENTITY event may merge guests here;
3. **apply** — one compare-and-set commit on that guest, with the event ref as its token, so an event
   is applied at most once however often it is retried or recovered;
4. **report** — abandoned carts closed by this event go onto the ``abandoned`` stream;
5. **note** — the log is told the event is applied, so its recovery consumer skips it.

A batch does the same per step for all its events at once: one log append per shard, then per guest one
read, all its events applied in order, one compare-and-set carrying every event ref as a token — every
guest's read in one round trip and every commit in another.

The sweeper closes sessions nobody comes back to, with the same rules, on an injectable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine import identity
from engine.errors import Conflict, Unavailable
from engine.eventlog import EventLog
from engine.events import Event
from engine.profiles import MAX_ATTEMPTS, Commit, Profiles, Snapshot, Write, update
from engine.sessions import Limits, Outcome, apply_event, close_idle
from engine.types import JSONObject

Clock = Callable[[], int]
"""Milliseconds since the epoch. Tests pass their own so nothing ever sleeps to make time pass."""


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Receipt:
    ref: str
    guest_ref: str
    duplicate: bool

    def as_json(self) -> JSONObject:
        return {"ref": self.ref, "guest_ref": self.guest_ref, "status": "duplicate" if self.duplicate else "accepted"}


AppliedListener = Callable[[str, Event], Awaitable[Any]]
"""Called with (surviving guest ref, event) once per event actually applied — e.g. experiment rewards."""


class Ingest:
    def __init__(
        self,
        profiles: Profiles,
        log: EventLog,
        limits: Limits,
        clock: Clock = wall_clock_ms,
        listeners: tuple[AppliedListener, ...] = (),
    ) -> None:
        self.profiles = profiles
        self.log = log
        self.limits = limits
        self.clock = clock
        self.listeners = listeners

    async def record(self, event: Event) -> Receipt:
        """Log then apply one validated event. Raises :class:`~engine.errors.Unavailable` if either write fails."""
        logged = await self.log.append(event)
        guest_ref, applied = await self.apply(event)
        self.log.applied((event,))
        return Receipt(event.ref, guest_ref, duplicate=not (logged and applied))

    async def record_many(self, events: list[Event]) -> list[Receipt]:
        """A batch: logged in one round trip per log shard, then applied by :meth:`apply_many`."""
        if len(events) == 1:
            return [await self.record(events[0])]
        logged = await self.log.append_many(events)
        results = await self.apply_many(events)
        self.log.applied(events)
        return [
            Receipt(e.ref, ref, duplicate=not (new and applied))
            for e, new, (ref, applied) in zip(events, logged, results, strict=True)
        ]

    async def apply(self, event: Event) -> tuple[str, bool]:
        """Apply to the browser's current guest; (guest ref, False if it was applied before). Idempotent."""
        # An anonymous guest's ref is its browser id: most events go straight to it, and a retired one
        # redirects in _apply_runs (one extra round trip only for browsers that were merged).
        ref = event.browser_id
        if event.type == "IDENTITY":
            now_ms = self.clock()
            ref = await identity.resolve(self.profiles, ref, now_ms, self.limits)
            ref = await identity.identify(self.profiles, ref, event.identifiers, now_ms, self.limits)
        run = _Run(ref, [event])
        await self._apply_runs([run])
        return run.ref, run.applied[0]

    async def apply_many(self, events: list[Event]) -> list[tuple[str, bool]]:
        """Apply a batch: each browser's events in order, with one read and one commit per guest for all
        of them, every guest's read (and commit) in one round trip. Idempotent per event ref.

        A browser whose events include an IDENTITY (which may merge guests) goes one event at a time.
        """
        by_browser: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            by_browser.setdefault(event.browser_id, []).append(i)
        out: list[tuple[str, bool]] = [("", False)] * len(events)
        runs: list[tuple[list[int], _Run]] = []
        identifying: list[list[int]] = []
        for browser, indexes in by_browser.items():
            if any(events[i].type == "IDENTITY" for i in indexes):
                identifying.append(indexes)
            else:
                runs.append((indexes, _Run(browser, [events[i] for i in indexes])))

        async def one_by_one(indexes: list[int]) -> None:
            for i in indexes:
                out[i] = await self.apply(events[i])

        await asyncio.gather(self._apply_runs([run for _, run in runs]), *(one_by_one(ix) for ix in identifying))
        for indexes, run in runs:
            for i, applied in zip(indexes, run.applied, strict=True):
                out[i] = (run.ref, applied)
        return out

    async def _apply_runs(self, runs: list[_Run]) -> None:
        """Read every run's guest (one round trip), apply its events in place, compare-and-set them all (one
        round trip); runs that lost a race, met a retired guest or a token applied before go round again."""
        now_ms = self.clock()
        pending = [run for run in runs if run.events]
        for attempt in range(MAX_ATTEMPTS):
            # Closed sessions' events unparsed: appending events leaves them as they were (unless one closes).
            snaps = await self.profiles.read_many([run.ref for run in pending], closed_events=False)
            writes, staged, moved = self._stage(pending, snaps, now_ms)
            results = await self.profiles.commit_many(writes) if writes else []
            retry: list[_Run] = []
            committed: list[tuple[_Run, list[int], list[Outcome]]] = []
            for (run, fresh, outcomes), result in zip(staged, results, strict=True):
                if result is Commit.OK:
                    for j in fresh:
                        run.applied[j] = True
                    committed.append((run, fresh, outcomes))
                    continue
                if result is Commit.DUPLICATE:
                    # Applied before (a retry, or recovery racing its request): learn which, apply the rest.
                    if len(fresh) == 1:
                        run.known.add(run.events[fresh[0]].ref)
                    else:
                        run.known |= await self.profiles.applied(run.ref, [run.events[j].ref for j in fresh])
                retry.append(run)
            for run in moved:
                run.hops += 1
                if run.hops > identity.MAX_HOPS:
                    raise Conflict(f"guest of browser {run.events[0].browser_id} keeps moving")
                run.ref = await identity.resolve(self.profiles, run.ref, now_ms, self.limits)
                retry.append(run)
            await self._after(committed)
            pending = retry
            if not pending:
                return
            if attempt > 8:
                # Many writers on one guest: step aside briefly so the winner's followers can finish.
                await asyncio.sleep(0.001 * (attempt % 7))
        raise Unavailable("guests are changing too fast; try again")

    async def sweep(self, batch: int = 500) -> int:
        """Close sessions idle past the timeout; returns how many guests were looked at."""
        now_ms = self.clock()
        refs = await self.profiles.idle(now_ms - self.limits.session_timeout_ms, batch)
        for ref in refs:

            def change(guest: JSONObject | None) -> Any:
                if guest is None or guest.get("type") == "retired":
                    return None, [], None
                open_before = sum(1 for s in guest["sessions"] if s.get("status") == "open")
                abandoned = close_idle(guest, now_ms, self.limits)
                still_open = [s["last_ms"] for s in guest["sessions"] if s.get("status") == "open"]
                # A read guest is a private copy, so closing in place is safe; write only if something closed.
                closed = len(still_open) < open_before
                return (guest if closed else None), abandoned, max(still_open, default=None)

            _, (_, abandoned, last_ms) = await update(self.profiles, ref, change, token=None, now_ms=now_ms)
            if abandoned:
                await self.profiles.emit_abandoned(abandoned)
            if last_ms is not None:
                await self.profiles.mark_active(ref, last_ms)
            else:
                await self.profiles.mark_inactive(ref)
        return len(refs)

    def _stage(
        self, runs: list[_Run], snaps: list[Snapshot], now_ms: int
    ) -> tuple[list[Write], list[tuple[_Run, list[int], list[Outcome]]], list[_Run]]:
        """Apply each run's fresh events to its read guest: (writes, what each write carries, runs to redirect)."""
        writes: list[Write] = []
        staged: list[tuple[_Run, list[int], list[Outcome]]] = []
        moved: list[_Run] = []
        for run, snap in zip(runs, snaps, strict=True):
            if snap.guest is not None and snap.guest.get("type") == "retired":
                # Merged into another guest (maybe this very moment): follow it, finishing the fold.
                moved.append(run)
                continue
            fresh = run.fresh()
            if not fresh:
                continue
            guest, outcomes = snap.guest, []
            for j in fresh:
                outcome = apply_event(guest, run.ref, run.events[j], self.limits)
                guest = outcome.guest
                outcomes.append(outcome)
            assert guest is not None
            tokens = tuple(run.events[j].ref for j in fresh)
            writes.append(Write(run.ref, guest, snap.rev, tokens, now_ms, _active_ms(guest, outcomes), snap.stored))
            staged.append((run, fresh, outcomes))
        return writes, staged, moved

    async def _after(self, committed: list[tuple[_Run, list[int], list[Outcome]]]) -> None:
        abandoned = [record for _, _, outcomes in committed for o in outcomes for record in o.abandoned]
        if abandoned:
            await self.profiles.emit_abandoned(abandoned)
        for run, fresh, _ in committed:
            for j in fresh:
                for listener in self.listeners:
                    await listener(run.ref, run.events[j])


def _active_ms(guest: JSONObject, outcomes: list[Outcome]) -> int | None:
    """Where the guest goes on the sweeper's index, if these events opened a session."""
    # Only when a session opens: the sweeper re-reads last_ms and re-scores, so later events skip this.
    if not any(o.opened for o in outcomes):
        return None
    opened = [s for s in guest["sessions"] if s.get("status") == "open"]
    return int(opened[-1]["last_ms"]) if opened else None


@dataclass(slots=True)
class _Run:
    """Consecutive events of one browser, applied to one guest with one read and one compare-and-set."""

    ref: str
    """The guest they go to: the browser's own at first, then wherever merges sent it."""
    events: list[Event]
    applied: list[bool] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    """Refs found applied to the guest before (a retried batch): skipped."""
    hops: int = 0

    def __post_init__(self) -> None:
        self.applied = [False] * len(self.events)

    def fresh(self) -> list[int]:
        """Positions of the events still to apply: not known applied, and the first of any repeated ref."""
        seen, out = set(self.known), []
        for j, event in enumerate(self.events):
            if event.ref not in seen and not self.applied[j]:
                seen.add(event.ref)
                out.append(j)
        return out
