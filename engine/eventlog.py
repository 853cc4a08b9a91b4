"""The event log: every accepted event, durably, once per ref — and the consumer that guarantees it is applied.

Ingestion appends first, then applies to the guest, then acknowledges. If a process dies between the
append and the apply, the event is in the log but not on the guest; the *appliers* consumer group reads
the log (at-least-once) and applies every entry old enough to have been handled by its request.

Entries their request did apply are skipped, cheaply: after applying, a request notes the ref
(:meth:`EventLog.applied`), and the next append to that shard turns those refs' markers into
``applied`` in the same script call (no extra round trip on the request path); the consumer checks
markers and acknowledges applied entries a batch at a time (``event_settle.lua``), and only re-applies
the rest. A note lost with a crashed process only means one re-application, a no-op by event ref.

Redis: a stream per shard (``{ev:n}`` hash tags spread the log over a cluster), each ref's marker in its
stream's slot so an append is one atomic script. Embedded: a bounded in-memory list.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError, ResponseError

from engine import keys
from engine.errors import Unavailable
from engine.events import Event
from engine.store.memory import MemoryStore
from engine.store.redis import RedisStore, load_script

MARKER_TTL_S = 24 * 3600
"""How long a ref is remembered by the log: a client retrying later than this appends again."""
STREAM_MAXLEN = 1_000_000
GROUP = "appliers"
RECOVER_BATCH = 500
"""Entries read (and settled in one script call) per round trip of the recovery consumer."""
CLAIM_IDLE_MS = 60_000
"""Entries a peer took but has not confirmed for this long are taken over (the peer is presumed dead)."""

Apply = Callable[[Event], Awaitable[Any]]
log = logging.getLogger("arbiter.eventlog")


class EventLog(Protocol):
    async def append(self, event: Event) -> bool:
        """Record the event durably; False when its ref was recorded before (a retry)."""
        ...

    async def append_many(self, events: Sequence[Event]) -> list[bool]:
        """Record a batch durably, one round trip per shard; per event, False when its ref was recorded before."""
        ...

    def applied(self, events: Sequence[Event]) -> None:
        """Note that these logged events are on their guests, so recovery need not re-apply them."""
        ...

    async def recover(self, apply: Apply, now_ms: int, grace_ms: int) -> int:
        """Apply logged events older than ``grace_ms`` not known to be applied; returns how many."""
        ...

    async def recent(self, count: int) -> list[Event]: ...


class MemoryEventLog:
    """One process owns the embedded store, so nothing can be appended and not applied without both being lost."""

    def __init__(self, store: MemoryStore, maxlen: int = 100_000) -> None:
        state = store.extra.setdefault("eventlog", {"entries": deque(maxlen=maxlen), "refs": {}})
        self._entries: deque[Event] = state["entries"]
        self._refs: dict[str, int] = state["refs"]

    async def append(self, event: Event) -> bool:
        if event.ref in self._refs:
            return False
        if len(self._entries) == self._entries.maxlen:
            self._refs.pop(self._entries[0].ref, None)
        self._entries.append(event)
        self._refs[event.ref] = event.at_ms
        return True

    async def append_many(self, events: Sequence[Event]) -> list[bool]:
        return [await self.append(e) for e in events]

    def applied(self, events: Sequence[Event]) -> None:
        pass

    async def recover(self, apply: Apply, now_ms: int, grace_ms: int) -> int:
        return 0

    async def recent(self, count: int) -> list[Event]:
        return list(self._entries)[-count:]


class RedisEventLog:
    def __init__(self, store: RedisStore, shards: int = 4) -> None:
        self.store = store
        self.client: Any = store.client
        self.shards = shards
        self._append = store.script("event_append.lua")
        self._settle = self.client.register_script(load_script("event_settle.lua"))
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._groups_ready = False
        self._applied: list[list[str]] = [[] for _ in range(shards)]
        """Per shard, refs applied since that shard's last append: written by the next append's script."""

    def shard(self, ref: str) -> int:
        return binascii.crc32(ref.encode()) % self.shards

    async def append(self, event: Event) -> bool:
        return (await self._append_shard(self.shard(event.ref), [event]))[0]

    async def append_many(self, events: Sequence[Event]) -> list[bool]:
        by_shard: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            by_shard.setdefault(self.shard(event.ref), []).append(i)
        created: list[bool] = [False] * len(events)

        async def one_shard(n: int, indexes: list[int]) -> None:
            for i, ok in zip(indexes, await self._append_shard(n, [events[i] for i in indexes]), strict=True):
                created[i] = ok

        # Shards live in different cluster slots, so one script each; they run concurrently.
        await asyncio.gather(*(one_shard(n, ix) for n, ix in by_shard.items()))
        return created

    def applied(self, events: Sequence[Event]) -> None:
        for event in events:
            self._applied[self.shard(event.ref)].append(event.ref)

    async def _append_shard(self, n: int, events: list[Event]) -> list[bool]:
        # Taken before the await: notes added meanwhile ride on the next call. If this call fails they are
        # lost, which costs recovery one idempotent re-application each, never an event.
        notes, self._applied[n] = self._applied[n], []
        markers = [keys.event_marker(n, e.ref) for e in events]
        args: list[Any] = [MARKER_TTL_S, STREAM_MAXLEN, len(events)]
        for e in events:
            args += [e.ref, orjson.dumps(e.as_json())]
        try:
            created = await self.store.hot_script(
                self._append, [keys.event_stream(n), *markers, *(keys.event_marker(n, ref) for ref in notes)], args
            )
        except RedisError as exc:
            raise Unavailable(f"event log unavailable; the event was not recorded: {exc}") from exc
        return [bool(c) for c in created]

    async def flush_applied(self) -> None:
        """Write pending "applied" notes now (an append does it on the way; recovery calls this when idle)."""
        for n in range(self.shards):
            if self._applied[n]:
                await self._append_shard(n, [])

    async def recover(self, apply: Apply, now_ms: int, grace_ms: int) -> int:
        try:
            await self._ensure_groups()
            # Our own notes first, or we would re-apply events this very process applied a moment ago.
            await self.flush_applied()
            done = 0
            for n in range(self.shards):
                done += await self._recover_shard(n, apply, now_ms - grace_ms)
            return done
        except RedisError as exc:
            raise Unavailable(f"event log unavailable: {exc}") from exc

    async def recent(self, count: int) -> list[Event]:
        out: list[Event] = []
        for n in range(self.shards):
            for _, fields in await self.client.xrevrange(keys.event_stream(n), count=count):
                out.append(Event.from_json(orjson.loads(fields[b"e"])))
        return sorted(out, key=lambda e: e.at_ms)[-count:]

    async def _recover_shard(self, n: int, apply: Apply, before_ms: int) -> int:
        stream = keys.event_stream(n)
        # Entries a dead peer took but never confirmed come back to us.
        with contextlib.suppress(ResponseError):
            await self.client.xautoclaim(stream, GROUP, self._consumer, min_idle_time=CLAIM_IDLE_MS, count=500)
        done = 0
        # First our pending entries (read before, not yet known applied), page by page, then new ones
        # until the stream is drained: an applied entry is acknowledged whatever its age, so what stays
        # pending is only what is still in flight or was really lost.
        start = "0"
        while True:
            reply = await self.client.xreadgroup(GROUP, self._consumer, {stream: start}, count=RECOVER_BATCH)
            entries = reply[0][1] if reply else []
            if not entries:
                if start == ">":
                    return done
                start = ">"
                continue
            done += await self._settle_batch(n, entries, apply, before_ms)
            if start != ">":
                start = entries[-1][0]
            elif len(entries) < RECOVER_BATCH:
                return done

    async def _settle_batch(self, n: int, entries: list[Any], apply: Apply, before_ms: int) -> int:
        stream = keys.event_stream(n)
        trimmed = [entry_id for entry_id, fields in entries if not fields]
        live = [(entry_id, fields) for entry_id, fields in entries if fields]
        refs = [_entry_ref(fields) for _, fields in live]
        settled = await self._settle(
            keys=[stream, *(keys.event_marker(n, ref) for ref in refs)],
            args=[GROUP, *(entry_id for entry_id, _ in live)],
        ) if live else []  # fmt: skip
        recovered: list[Any] = []
        try:
            for (entry_id, fields), ok in zip(live, settled, strict=True):
                if ok or int(entry_id.split(b"-")[0]) > before_ms:
                    # Applied by its request; or young, still in its request's hands: pending for a later round.
                    continue
                await apply(Event.from_json(orjson.loads(fields[b"e"])))
                recovered.append(entry_id)
        finally:
            # Trimmed entries (MAXLEN dropped them before anyone read them) have nothing left to apply.
            if recovered or trimmed:
                await self.client.xack(stream, GROUP, *recovered, *trimmed)
        if recovered:
            log.info("recovered %d logged events their requests never applied", len(recovered))
        return len(recovered)

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for n in range(self.shards):
            with contextlib.suppress(ResponseError):  # BUSYGROUP: another process made it first
                await self.client.xgroup_create(keys.event_stream(n), GROUP, id="0", mkstream=True)
        self._groups_ready = True


def _entry_ref(fields: dict[bytes, bytes]) -> str:
    ref = fields.get(b"r")
    # Entries logged before the ref had its own field carry it only inside the event JSON.
    return ref.decode() if ref is not None else str(orjson.loads(fields[b"e"])["ref"])


def open_event_log(store: Any, shards: int) -> EventLog:
    if isinstance(store, MemoryStore):
        return MemoryEventLog(store)
    return RedisEventLog(store, shards)
