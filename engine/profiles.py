"""Guest documents as the listen feature writes them: read with a revision, commit by compare-and-set.

Every change to a guest (an event, a merge, an admin patch, an import line) is read → pure function →
:meth:`Profiles.commit`, which writes only if nobody committed since the read and the operation's token
was not applied before. :func:`update` is that loop. The Redis backend is in
:mod:`engine.profiles_redis`; the embedded one is here and shares the :class:`~engine.store.MemoryStore`'s
guest and identifier maps, so the decide path sees what events wrote.
"""

from __future__ import annotations

import asyncio
import copy
import enum
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from engine.errors import Unavailable
from engine.store.memory import MemoryStore
from engine.types import JSONObject

TOKENS_KEPT = 1000
"""Per guest, how many applied tokens are remembered: a retry older than this many events is applied again."""
MAX_ATTEMPTS = 200


class Commit(enum.Enum):
    OK = "ok"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Snapshot:
    guest: JSONObject | None
    rev: int
    stored: Mapping[str, bytes] | None = None
    """The guest's parts as the store holds them (Redis: each hash field's bytes), so a commit of this read
    rewrites only the parts that changed: an event touches its session and cart, not the orders. None (a new
    guest, the embedded store): a commit writes every part."""


@dataclass(frozen=True, slots=True)
class Write:
    """One compare-and-set of a batch: ``guest`` replaces revision ``rev`` unless one of ``tokens`` was applied."""

    ref: str
    guest: JSONObject
    rev: int
    tokens: tuple[str, ...]
    now_ms: int
    active_ms: int | None = None
    """The write opens a session: put the guest on the sweeper's index with this last-activity time."""
    stored: Mapping[str, bytes] | None = None
    """The read's :attr:`Snapshot.stored`: parts still equal to it are not written again."""


class Profiles(Protocol):
    async def read(self, ref: str) -> Snapshot: ...

    async def commit(
        self,
        ref: str,
        guest: JSONObject,
        rev: int,
        *,
        token: str | None,
        now_ms: int,
        carried: Sequence[str] = (),
        stored: Mapping[str, bytes] | None = None,
    ) -> Commit:
        """Write ``guest`` if its revision is still ``rev`` and ``token`` is new; also remember ``carried`` tokens.

        ``stored`` is the read's :attr:`Snapshot.stored`; parts unchanged since are left as they are."""
        ...

    async def read_many(self, refs: Sequence[str], *, closed_events: bool = True) -> list[Snapshot]:
        """:meth:`read` for several guests in one round trip. ``closed_events=False``: closed sessions' events
        may come back unparsed (:class:`engine.store.StoredEvents`), for a read-modify-write that appends events
        and writes the rest back as it was (``sessions.apply_event``)."""
        ...

    async def commit_many(self, writes: Sequence[Write]) -> list[Commit]:
        """Several guests' compare-and-sets in one round trip; each succeeds or fails on its own.

        A write with several tokens is a DUPLICATE if any of them was applied (nothing is written). A write's
        ``active_ms`` goes onto the active-sessions index in the same round trip, whatever the outcome (an
        entry for a guest with no open session only costs the sweeper one look).
        """
        ...

    async def applied(self, ref: str, tokens: Sequence[str]) -> set[str]:
        """Which of ``tokens`` were applied to the guest ``ref``."""
        ...

    async def tokens(self, ref: str) -> list[str]: ...

    async def delete(self, refs: Sequence[str]) -> None: ...

    async def owner(self, provider: str, identifier: str) -> str | None: ...

    async def claim(self, provider: str, identifier: str, ref: str) -> str:
        """Point the identifier at ``ref`` unless it names a guest already; returns the owner either way."""
        ...

    async def point(self, provider: str, identifier: str, ref: str) -> None: ...

    async def release(self, provider: str, identifier: str, ref: str) -> None: ...

    async def mark_active(self, ref: str, last_ms: int) -> None: ...

    async def mark_inactive(self, ref: str) -> None: ...

    async def idle(self, before_ms: int, count: int) -> list[str]: ...

    async def emit_abandoned(self, records: list[JSONObject]) -> None: ...

    async def abandoned(self, count: int) -> list[JSONObject]: ...


Change = Callable[[JSONObject | None], Any]
"""A pure change: the current guest (None if absent) → the new guest, or None for "nothing to write"."""


async def update(
    profiles: Profiles, ref: str, change: Change, *, token: str | None, now_ms: int, carried: Sequence[str] = ()
) -> tuple[Commit, Any]:
    """Read → change → compare-and-set, retried on conflict. Returns (OK | DUPLICATE, what ``change`` returned).

    ``change`` may return a guest document or a tuple whose first item is one (extra results ride along).
    """
    for attempt in range(MAX_ATTEMPTS):
        snap = await profiles.read(ref)
        result = change(snap.guest)
        guest = result[0] if isinstance(result, tuple) else result
        if guest is None:
            return Commit.OK, result
        outcome = await profiles.commit(
            ref, guest, snap.rev, token=token, now_ms=now_ms, carried=carried, stored=snap.stored
        )
        if outcome is not Commit.CONFLICT:
            return outcome, result
        if attempt > 8:
            # Many writers on one guest: step aside briefly so the winner's followers can finish.
            await asyncio.sleep(0.001 * (attempt % 7))
    raise Unavailable(f"guest {ref} is changing too fast; try again")


class MemoryProfiles:
    """The embedded backend: no awaits between read and write, so each method is a transaction."""

    def __init__(self, store: MemoryStore) -> None:
        self._guests: dict[str, JSONObject] = store._guests
        self._identifiers: dict[tuple[str, str], str] = store._identifiers
        state = store.extra.setdefault("profiles", {"revs": {}, "tokens": {}, "active": {}, "abandoned": deque()})
        self._revs: dict[str, int] = state["revs"]
        self._tokens: dict[str, dict[str, int]] = state["tokens"]
        self._active: dict[str, int] = state["active"]
        self._abandoned: deque[JSONObject] = state["abandoned"]

    async def read(self, ref: str) -> Snapshot:
        guest = self._guests.get(ref)
        # An orjson round trip copies a JSON document several times faster than deepcopy.
        return Snapshot(orjson.loads(orjson.dumps(guest)) if guest is not None else None, self._revs.get(ref, 0))

    async def read_many(self, refs: Sequence[str], *, closed_events: bool = True) -> list[Snapshot]:
        return [await self.read(ref) for ref in refs]

    async def commit(
        self,
        ref: str,
        guest: JSONObject,
        rev: int,
        *,
        token: str | None,
        now_ms: int,
        carried: Sequence[str] = (),
        stored: Mapping[str, bytes] | None = None,
    ) -> Commit:
        return self._commit(ref, guest, rev, () if token is None else (token,), now_ms, carried)

    async def commit_many(self, writes: Sequence[Write]) -> list[Commit]:
        for w in writes:
            if w.active_ms is not None:
                self._active[w.ref] = w.active_ms
        return [self._commit(w.ref, w.guest, w.rev, w.tokens, w.now_ms, ()) for w in writes]

    def _commit(
        self, ref: str, guest: JSONObject, rev: int, checked: Sequence[str], now_ms: int, carried: Sequence[str]
    ) -> Commit:
        tokens = self._tokens.setdefault(ref, {})
        if any(t in tokens for t in checked):
            return Commit.DUPLICATE
        if self._revs.get(ref, 0) != rev:
            return Commit.CONFLICT
        self._guests[ref] = orjson.loads(orjson.dumps(guest))
        self._revs[ref] = rev + 1
        for t in (*carried, *checked):
            tokens.pop(t, None)
            tokens[t] = now_ms
        while len(tokens) > TOKENS_KEPT:
            del tokens[next(iter(tokens))]
        return Commit.OK

    async def applied(self, ref: str, tokens: Sequence[str]) -> set[str]:
        mine = self._tokens.get(ref, {})
        return {t for t in tokens if t in mine}

    async def tokens(self, ref: str) -> list[str]:
        return list(self._tokens.get(ref, {}))

    async def delete(self, refs: Sequence[str]) -> None:
        for ref in refs:
            self._guests.pop(ref, None)
            self._tokens.pop(ref, None)
            self._active.pop(ref, None)
            self._revs.pop(ref, None)

    async def owner(self, provider: str, identifier: str) -> str | None:
        return self._identifiers.get((provider, identifier))

    async def claim(self, provider: str, identifier: str, ref: str) -> str:
        return self._identifiers.setdefault((provider, identifier), ref)

    async def point(self, provider: str, identifier: str, ref: str) -> None:
        self._identifiers[(provider, identifier)] = ref

    async def release(self, provider: str, identifier: str, ref: str) -> None:
        if self._identifiers.get((provider, identifier)) == ref:
            del self._identifiers[(provider, identifier)]

    async def mark_active(self, ref: str, last_ms: int) -> None:
        self._active[ref] = last_ms

    async def mark_inactive(self, ref: str) -> None:
        self._active.pop(ref, None)

    async def idle(self, before_ms: int, count: int) -> list[str]:
        return sorted((r for r, ms in self._active.items() if ms < before_ms), key=self._active.__getitem__)[:count]

    async def emit_abandoned(self, records: list[JSONObject]) -> None:
        self._abandoned.extend(copy.deepcopy(records))
        while len(self._abandoned) > 100_000:
            self._abandoned.popleft()

    async def abandoned(self, count: int) -> list[JSONObject]:
        return list(self._abandoned)[-count:]


def open_profiles(store: Any) -> Profiles:
    if isinstance(store, MemoryStore):
        return MemoryProfiles(store)
    from engine.profiles_redis import RedisProfiles

    return RedisProfiles(store)
