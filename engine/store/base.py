"""The store interface: what the engine needs from persistence, in domain terms.

Two real backends implement it: :mod:`engine.store.memory` (embedded, one process, the default for
``make run``) and :mod:`engine.store.redis` (production, Redis or Redis Cluster). The same behaviour
suite runs against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from engine.types import JSONObject

MODEL_STATES = ("draft", "test", "production", "archived")


class GuestLookup(NamedTuple):
    """How a request names its guest: exactly one of the three. (A tuple: made per request, in C.)"""

    browser_id: str | None = None
    guest_ref: str | None = None
    provider: str | None = None
    identifier: str | None = None

    @property
    def direct_ref(self) -> str | None:
        """The guest ref to read without an index lookup.

        An anonymous guest's ref is its first browser id, so a storefront's cookie names the guest's
        keys directly and a decide call costs one round trip.
        """
        return self.guest_ref or self.browser_id


@dataclass(frozen=True, slots=True)
class ModelPointers:
    """Which version of a model serves traffic (production) and which is shadowed (test)."""

    production: int | None
    test: int | None
    history: tuple[int, ...]
    """Versions published to production, oldest first: rollback walks back along it."""
    latest: int


class DecisionRecord(NamedTuple):
    """A served (or shadow) decision for the decision log (a tuple: made per decision, in C)."""

    decision_id: str
    model_key: str
    model_version: int
    guest_ref: str | None
    outputs: Any
    """JSON data, or the decision's outputs already serialised as an ``orjson.Fragment`` (stores write it as is)."""
    shadow: bool
    at_ms: int
    extra: JSONObject | None = None

    def as_dict(self) -> JSONObject:
        out: JSONObject = {
            "decision_id": self.decision_id,
            "model": self.model_key,
            "version": self.model_version,
            "guest_ref": self.guest_ref,
            "outputs": self.outputs,
            "shadow": self.shadow,
            "at_ms": self.at_ms,
        }
        if self.extra:
            out.update(self.extra)
        return out


class StoredEvents:
    """A closed session's events as the store holds them, not parsed: an event's read-modify-write appends to the
    open session and writes these back as they were, so it need not parse and re-encode the guest's whole
    history (``engine.store.redis.guest_document``, ``session_events="lazy"``). Deliberately not a list: code
    that would read them calls :meth:`load` (``trim_closed_history`` does)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def load(self) -> list[JSONObject]:
        events: list[JSONObject] = orjson.loads(self.raw)
        return events


def empty_guest(ref: str | None) -> JSONObject:
    """What an unknown guest looks like to a model: a fresh anonymous visitor, not an error."""
    return {
        "ref": ref,
        "type": "visitor",
        "known": False,
        "attributes": {},
        "ext": {},
        "identifiers": [],
        "segments": [],
        "facts": {},
        "cart": {"items": [], "value": 0},
        "sessions": [],
        "orders": [],
        "assignments": {},
    }


class Store(Protocol):
    name: str

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

    # --- models ---------------------------------------------------------------------------------
    async def model_add_version(self, key: str, document: JSONObject, digest: str) -> tuple[int, bool]:
        """Store a new draft version atomically: (its number, True); or, when a version with the same
        content ``digest`` exists already, (that version, False)."""
        ...

    async def model_get_version(self, key: str, version: int) -> JSONObject | None: ...

    async def model_list_versions(self, key: str) -> list[JSONObject]: ...

    async def model_keys(self) -> list[str]: ...

    async def model_pointers(self, key: str) -> ModelPointers | None: ...

    def model_changes(self) -> AsyncIterator[str]:
        """Keys of models whose lifecycle another process changed, as they happen (may never yield)."""
        ...

    async def model_set_state(self, key: str, version: int, state: str) -> ModelPointers:
        """Move ``version`` to ``state``, keeping the invariants (one production, one test) atomically."""
        ...

    # --- guests and decisions -------------------------------------------------------------------
    async def guest_load(
        self, lookup: GuestLookup, *, session_events: bool = True, experiments: tuple[str, ...] | None = None
    ) -> JSONObject | None:
        """The guest's decision-time document, in one round trip where the lookup allows; without its sessions'
        events if ``session_events`` is false, and with only the ``assignments`` of ``experiments`` if that is
        not None (a store may return more)."""
        ...

    async def guest_save(self, ref: str, guest: JSONObject) -> None:
        """Replace a guest document (admin and tests; events update guests through their own scripts)."""
        ...

    async def decisions_record(self, records: list[DecisionRecord]) -> None: ...

    async def decisions_recent(self, count: int) -> list[JSONObject]: ...

    # --- resources: small admin-managed documents (connections, experiments, catalogues…) --------
    async def resource_put(self, kind: str, key: str, document: JSONObject) -> None: ...

    async def resource_get(self, kind: str, key: str) -> JSONObject | None: ...

    async def resource_list(self, kind: str) -> list[JSONObject]: ...

    async def resource_delete(self, kind: str, key: str) -> bool: ...

    def resource_changes(self, kind: str) -> AsyncIterator[str]:
        """Keys of ``kind`` resources written or deleted (by any process, this one too), as it happens (may never
        yield)."""
        ...
