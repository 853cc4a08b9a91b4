"""The event log: every accepted event, durably, once per ref — and the consumer that guarantees it is applied.

Ingestion appends first, then applies to the guest, then acknowledges. If a process dies between the
append and the apply, the event is in the log but not on the guest; the *appliers* consumer group reads
the log (at-least-once) and applies every entry old enough to have been handled by its request, which
is a no-op for the ones that were (applying is idempotent by event ref).

Redis: a stream per shard (``{ev:n}`` hash tags spread the log over a cluster), each ref's marker in its
stream's slot so an append is one atomic script. Embedded: a bounded in-memory list.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
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

Apply = Callable[[Event], Awaitable[Any]]


class EventLog(Protocol):
    async def append(self, event: Event) -> bool:
        """Record the event durably; False when its ref was recorded before (a retry)."""
        ...

    async def recover(self, apply: Apply, now_ms: int, grace_ms: int) -> int:
        """Apply logged events older than ``grace_ms`` that no consumer has confirmed yet; returns how many."""
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

    async def recover(self, apply: Apply, now_ms: int, grace_ms: int) -> int:
        return 0

    async def recent(self, count: int) -> list[Event]:
        return list(self._entries)[-count:]


class RedisEventLog:
    def __init__(self, store: RedisStore, shards: int = 4) -> None:
        self.client: Any = store.client
        self.shards = shards
        self._append = self.client.register_script(load_script("event_append.lua"))
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._groups_ready = False

    def shard(self, ref: str) -> int:
        return binascii.crc32(ref.encode()) % self.shards

    async def append(self, event: Event) -> bool:
        n = self.shard(event.ref)
        try:
            created, _ = await self._append(
                keys=[keys.event_stream(n), keys.event_marker(n, event.ref)],
                args=[orjson.dumps(event.as_json()), MARKER_TTL_S, STREAM_MAXLEN],
            )
        except RedisError as exc:
            raise Unavailable(f"event log unavailable; the event was not recorded: {exc}") from exc
        return bool(created)

    async def recover(self, apply: Apply, now_ms: int, grace_ms: int) -> int:
        try:
            await self._ensure_groups()
            done = 0
            for n in range(self.shards):
                done += await self._recover_shard(keys.event_stream(n), apply, now_ms - grace_ms)
            return done
        except RedisError as exc:
            raise Unavailable(f"event log unavailable: {exc}") from exc

    async def recent(self, count: int) -> list[Event]:
        out: list[Event] = []
        for n in range(self.shards):
            for _, fields in await self.client.xrevrange(keys.event_stream(n), count=count):
                out.append(Event.from_json(orjson.loads(fields[b"e"])))
        return sorted(out, key=lambda e: e.at_ms)[-count:]

    async def _recover_shard(self, stream: str, apply: Apply, before_ms: int) -> int:
        # Entries a dead peer took but never confirmed come back to us after a minute.
        with contextlib.suppress(ResponseError):
            await self.client.xautoclaim(stream, GROUP, self._consumer, min_idle_time=60_000, count=500)
        done = 0
        for start in ("0", ">"):
            reply = await self.client.xreadgroup(GROUP, self._consumer, {stream: start}, count=500)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    if int(entry_id.split(b"-")[0]) > before_ms:
                        # Young: its request may still be applying it. It stays pending for a later round.
                        continue
                    await apply(Event.from_json(orjson.loads(fields[b"e"])))
                    await self.client.xack(stream, GROUP, entry_id)
                    done += 1
        return done

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for n in range(self.shards):
            with contextlib.suppress(ResponseError):  # BUSYGROUP: another process made it first
                await self.client.xgroup_create(keys.event_stream(n), GROUP, id="0", mkstream=True)
        self._groups_ready = True


def open_event_log(store: Any, shards: int) -> EventLog:
    if isinstance(store, MemoryStore):
        return MemoryEventLog(store)
    return RedisEventLog(store, shards)
