"""Ingestion: an event is logged, applied to its guest, and only then acknowledged.

1. **log** — appended to the event log, once per ref (a retry with the same ref is not logged twice);
2. **resolve** — the browser's guest, following merges; an IDENTITY event may merge guests here;
3. **apply** — one compare-and-set commit on that guest, with the event ref as its token, so an event
   is applied at most once however often it is retried or recovered;
4. **report** — abandoned carts closed by this event go onto the ``abandoned`` stream.

The sweeper closes sessions nobody comes back to, with the same rules, on an injectable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine import identity
from engine.errors import Conflict
from engine.eventlog import EventLog
from engine.events import Event
from engine.profiles import Commit, Profiles, update
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
        return Receipt(event.ref, guest_ref, duplicate=not (logged and applied))

    async def record_many(self, events: list[Event]) -> list[Receipt]:
        """A batch: each browser's events in order, different browsers concurrently."""
        by_browser: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            by_browser.setdefault(event.browser_id, []).append(i)
        receipts: list[Receipt | None] = [None] * len(events)

        async def one_browser(indexes: list[int]) -> None:
            for i in indexes:
                receipts[i] = await self.record(events[i])

        await asyncio.gather(*(one_browser(ix) for ix in by_browser.values()))
        return [r for r in receipts if r is not None]

    async def apply(self, event: Event) -> tuple[str, bool]:
        """Apply to the browser's current guest; (guest ref, False if it was applied before). Idempotent."""
        now_ms = self.clock()
        # An anonymous guest's ref is its browser id: most events go straight to it, and a retired one
        # redirects below (one extra round trip only for browsers that were merged).
        ref = event.browser_id
        if event.type == "IDENTITY":
            ref = await identity.resolve(self.profiles, ref, now_ms, self.limits)
            ref = await identity.identify(self.profiles, ref, event.identifiers, now_ms, self.limits)
        for _ in range(identity.MAX_HOPS):
            target = ref

            def change(guest: JSONObject | None, target: str = target) -> Any:
                if guest is not None and guest.get("type") == "retired":
                    return None, None, True
                out = apply_event(guest, target, event, self.limits)
                return out.guest, out, None

            outcome, (_, result, redirect) = await update(self.profiles, ref, change, token=event.ref, now_ms=now_ms)
            if redirect is None:
                if outcome is Commit.OK:
                    await self._after(ref, result)
                    for listener in self.listeners:
                        await listener(ref, event)
                return ref, outcome is Commit.OK
            # Retired (merged into another guest, maybe this very moment): follow it, finishing the fold.
            ref = await identity.resolve(self.profiles, ref, now_ms, self.limits)
        raise Conflict(f"guest of browser {event.browser_id} keeps moving")

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

    async def _after(self, ref: str, outcome: Outcome) -> None:
        if outcome.abandoned:
            await self.profiles.emit_abandoned(outcome.abandoned)
        opened = [s for s in outcome.guest["sessions"] if s.get("status") == "open"]
        if opened and opened[-1]["event_count"] == 1:
            # Only when a session opens: the sweeper re-reads last_ms and re-scores, so later events skip this.
            await self.profiles.mark_active(ref, opened[-1]["last_ms"])
