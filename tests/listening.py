"""Helpers shared by the listen tests: a manual clock, an ingest over either store, an event builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.eventlog import open_event_log
from engine.events import Event, parse_event
from engine.ingest import Ingest
from engine.profiles import open_profiles
from engine.sessions import Limits
from engine.store import Store

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE_MS = 60_000


@dataclass
class ManualClock:
    """Time moves only when a test says so: no test ever sleeps to let a session time out."""

    now_ms: int = T0_MS

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def make_ingest(store: Store, clock: ManualClock, limits: Limits | None = None) -> Ingest:
    return Ingest(open_profiles(store), open_event_log(store, 2), limits or Limits(), clock)


def event(clock: ManualClock, type: str = "VIEW", browser_id: str = "b1", **fields: Any) -> Event:
    raw = {
        "type": type, "channel": "WEB", "browser_id": browser_id, "pos": "shop", "language": "EN",
        "currency": "EUR", "page": "home", **fields,
    }  # fmt: skip
    return parse_event(raw, "", now_ms=clock())


def add(clock: ManualClock, item: str, price: float, quantity: int = 1, **fields: Any) -> Event:
    return event(clock, "ADD", product={"item_id": item, "price": price, "quantity": quantity}, **fields)
