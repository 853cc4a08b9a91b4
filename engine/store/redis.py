"""The Redis store: production persistence, on one Redis or a Redis Cluster.

Every multi-key write is one Lua script over keys of one hash tag (see :mod:`engine.keys`), so it is
atomic and cluster-safe. Scripts live in ``lua/`` and are registered once at start-up.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, NamedTuple

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ClusterError, NoScriptError, RedisError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine import keys
from engine.errors import Unavailable
from engine.lifecycle import transition
from engine.store.base import DecisionRecord, GuestLookup, ModelPointers, StoredEvents
from engine.store.slots import SlotWires
from engine.store.wire import Lua, Wire, pairs
from engine.types import JSONObject

GUEST_PARTS = ("sessions", "orders", "cart", "assignments")
"""Guest fields kept as their own hash fields so events can rewrite one without the others."""
EVENTS_FIELD = "ev:"
"""Hash fields ``ev:<session ref>``: one session's events, stored apart from the session itself. They are most of a
guest's bytes; apart, a decision whose model never reads them (:func:`engine.guestreads.reads_session_events`)
skips parsing them, and an event rewrites only its own session's field, not the guest's whole history.
``sessions`` keeps an empty ``events`` list in each session whose events moved out, so a process from before
these fields (a rolling deploy, a rollback) reads and appends to sessions as it always did; events it appends
there are read back after the moved ones (:func:`guest_document`)."""
EVENTS_FIELD_BYTES = EVENTS_FIELD.encode()
"""The same prefix as the raw field names Redis replies with."""
ASSIGNMENT_FIELD = "as:"
"""Hash fields ``as:<experiment>``: the guest's assignment in one experiment (``assignments`` in the document). A
field each makes an exposure's write one ``HSET`` (``HSETNX`` for a fixed split, which keeps the first) in the
flush's script call, where one JSON map of them all was decoded, changed and re-encoded in Lua per exposure, its
cost and its AOF bytes growing with every experiment the guest was ever in. A map in the field ``assignments`` is
what processes from before these fields wrote: read under them (a field wins over the map's entry) and folded into
them by the guest's next event commit (``guest_commit.lua``)."""
ASSIGNMENT_FIELD_BYTES = ASSIGNMENT_FIELD.encode()
_DOCUMENT_FIELDS = (b"profile", *(part.encode() for part in GUEST_PARTS))
"""A guest's fields but its sessions' events and per-experiment assignments: what a decision whose model cannot
read the events asks for, with the assignment fields of the experiments it chooses in (:func:`_read_fields`)."""
CAS_RETRIES = 8


def load_script(name: str) -> str:
    return resources.files("engine.store").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua file from ``lua/``, runnable over a wire (one Redis, or a cluster's primary) or through redis-py."""

    lua: Lua
    registered: Any


class KeyGroup(NamedTuple):
    """Keys one multi-key script call may take (see :meth:`RedisStore.slot_groups`), and where each was in the list."""

    keys: list[str]
    indices: list[int]


class Batch:
    """Commands and scripts sent in one round trip (not a transaction). Replies are raw: ``pairs()`` for hashes."""

    __slots__ = ("_items", "_store")

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._items: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._items)

    def command(self, *args: Any) -> None:
        self._items.append(args)

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        self._items.append((script, keys, args))

    async def execute(self) -> list[Any]:
        if not self._items:
            return []
        wire, slots = self._store.wire, self._store.slots
        if wire is not None or slots is not None:
            items = [(i[0].lua, i[1], i[2]) if isinstance(i[0], Script) else i for i in self._items]
            if wire is not None:
                return await wire.call_many(items)
            if slots is not None:
                replies = await slots.batch(items)
                if replies is not None:
                    return replies
        try:
            return await self._pipelined()
        except NoScriptError:
            # A cluster node restarted or failed over and lost its script cache; the EVALSHAs ran nothing.
            # The plain commands sent alongside did run: callers batch only idempotent ones with scripts.
            await self._store.load_scripts({i[0] for i in self._items if isinstance(i[0], Script)})
            return await self._pipelined()

    async def _pipelined(self) -> list[Any]:
        # redis-py's pipeline routes each command to its slot's node on a cluster. Plain EVALSHA: its
        # script-aware pipeline would add a SCRIPT EXISTS round trip per batch.
        pipe = self._store.client.pipeline(transaction=False)
        for item in self._items:
            if isinstance(item[0], Script):
                pipe.execute_command("EVALSHA", item[0].lua.sha, len(item[1]), *item[1], *item[2])
            else:
                pipe.execute_command(*item)
        return list(await pipe.execute())


MAX_CONNECTIONS = 256
POOL_WAIT_S = 1.0
"""How long a request waits for a free connection before the store counts as unavailable."""


_ROUTING_ERRORS = (SlotNotCoveredError, KeyError)
"""What redis-py's cluster client raises, besides Redis errors, when a slot has no node (a cluster that is down):
``SlotNotCoveredError``, and for a slot missing from its map a bare ``KeyError`` (redis-py 8.1,
``NodesManager.get_node_from_slot``). Neither is a ``RedisError``: they escaped every handler as a 500 on a
request, and killed a background writer or a notice follower for the rest of the process."""


class _Cluster(RedisCluster):
    """redis-py's cluster client, every failure to reach a slot's node a :class:`RedisError` (``ClusterError``)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except _ROUTING_ERRORS as exc:
            raise ClusterError(f"no node serves the slot: {exc!r}") from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as RedisCluster.pipeline makes its own


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except _ROUTING_ERRORS as exc:
            raise ClusterError(f"no node serves the slot: {exc!r}") from exc


def connect(url: str, timeout_ms: int) -> Any:
    """``redis://…`` for one server, ``redis+cluster://…`` for a Redis Cluster.

    Socket timeouts bound how long a hung Redis can hold a request: past them the decide path answers
    degraded from defaults instead of waiting. A blocking pool makes a burst of requests queue briefly for a
    connection; redis-py's default pool refuses the 101st concurrent command outright ("Too many
    connections"), which under wrk turned accepted-looking traffic into 503s.
    """
    timeout_s = timeout_ms / 1000
    if url.startswith("redis+cluster://"):
        return _Cluster.from_url(
            "redis://" + url.removeprefix("redis+cluster://"),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=MAX_CONNECTIONS,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return aioredis.Redis.from_pool(pool)


class RedisStore:
    name = "redis"

    def __init__(self, url: str, *, decision_log_maxlen: int = 100_000, timeout_ms: int = 250) -> None:
        self.url = url
        self.timeout_s = timeout_ms / 1000
        self.client = connect(url, timeout_ms)
        self.wire = Wire.from_url(url, timeout_ms=timeout_ms)
        """The hot paths' connection (see :mod:`engine.store.wire`); None on a cluster (``slots``) and over TLS."""
        self.slots = SlotWires(self.client, url, self.timeout_s) if isinstance(self.client, RedisCluster) else None
        """On a cluster, the hot paths' connections, one per primary (see :mod:`engine.store.slots`)."""
        self._decision_log_maxlen = decision_log_maxlen
        self._add_version = self.client.register_script(load_script("model_add_version.lua"))
        self._cas_state = self.client.register_script(load_script("model_cas_state.lua"))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        if self.wire is not None:
            await self.wire.close()
        if self.slots is not None:
            await self.slots.close()
        await self.client.aclose()

    async def hot(self, *args: Any) -> Any:
        """A command on the request path: over the wire, or a cluster primary's, else through redis-py."""
        if self.wire is not None:
            return await self.wire.call(*args)
        if self.slots is not None:
            done, reply = await self.slots.read(*args)
            if done:
                return reply
        return await self._bounded(self.client.execute_command(*args))

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        # redis-py retries a lost connection with backoff, and its cluster client meets a cluster that is down
        # (a primary lost, no replica to take over) by closing every connection and pausing 250 ms, then again:
        # measured, a decision waited 3-4 s for its guest. A request's call gets the socket timeout, whole, and
        # then answers degraded like any other store outage.
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no answer within {self.timeout_s * 1000:.0f} ms") from exc

    def batch(self) -> Batch:
        return Batch(self)

    def script(self, name: str) -> Script:
        """Register a script from ``lua/`` once, at start-up, for both transports."""
        source = load_script(name)
        return Script(Lua.of(source), self.client.register_script(source))

    async def load_scripts(self, scripts: set[Script]) -> None:
        """``SCRIPT LOAD`` on every node (redis-py sends it to all primaries of a cluster)."""
        for script in scripts:
            await self.client.script_load(script.lua.source)

    def slot_groups(self, keys: Sequence[str], most: int) -> list[KeyGroup]:
        """``keys`` in groups one multi-key script may take: all together on one server, by hash slot on a
        cluster; at most ``most`` each, in their order (a key's later entries stay after its earlier ones)."""
        if not isinstance(self.client, RedisCluster):
            by_slot = {0: list(range(len(keys)))}
        else:
            by_slot = {}
            for i, key in enumerate(keys):
                by_slot.setdefault(self.client.keyslot(key), []).append(i)
        return [
            KeyGroup([keys[i] for i in indices[start : start + most]], indices[start : start + most])
            for indices in by_slot.values()
            for start in range(0, len(indices), most)
        ]

    async def hot_script(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        """A script on the request path."""
        if self.wire is not None:
            return await self.wire.script(script.lua, keys, args)
        if self.slots is not None:
            done, reply = await self.slots.script(script.lua, keys, args)
            if done:
                return reply
        return await self._bounded(script.registered(keys=keys, args=args))

    # --- models ---------------------------------------------------------------------------------
    async def model_add_version(self, key: str, document: JSONObject, digest: str) -> tuple[int, bool]:
        doc = {**document, "digest": digest, "created_ms": int(time.time() * 1000)}
        try:
            version, created = await self._add_version(
                keys=[keys.model_meta(key), keys.model_versions(key), keys.model_states(key)],
                args=[orjson.dumps(doc), digest],
            )
            await self.client.sadd(keys.MODEL_INDEX, key)
        except RedisError as exc:
            raise Unavailable(f"model store unavailable: {exc}") from exc
        return int(version), bool(created)

    async def model_get_version(self, key: str, version: int) -> JSONObject | None:
        try:
            raw, state = await self._pipeline(
                ("hget", keys.model_versions(key), version), ("hget", keys.model_states(key), version)
            )
        except RedisError as exc:
            raise Unavailable(f"model store unavailable: {exc}") from exc
        if raw is None:
            return None
        doc: JSONObject = orjson.loads(raw)
        doc["version"], doc["state"] = version, state.decode()
        return doc

    async def model_list_versions(self, key: str) -> list[JSONObject]:
        try:
            raw, states = await self._pipeline(
                ("hgetall", keys.model_versions(key)), ("hgetall", keys.model_states(key))
            )
        except RedisError as exc:
            raise Unavailable(f"model store unavailable: {exc}") from exc
        out = []
        for v, doc in sorted(((int(k), orjson.loads(d)) for k, d in raw.items())):
            doc.pop("definition", None)
            doc["version"], doc["state"] = v, states[str(v).encode()].decode()
            out.append(doc)
        return out

    async def model_keys(self) -> list[str]:
        try:
            return sorted(k.decode() for k in await self.client.smembers(keys.MODEL_INDEX))
        except RedisError as exc:
            raise Unavailable(f"model store unavailable: {exc}") from exc

    async def model_pointers(self, key: str) -> ModelPointers | None:
        try:
            # On the decide path, once a pointer's cache entry expires: bounded like the guest read.
            meta = pairs(await self.hot("HGETALL", keys.model_meta(key)))
        except RedisError as exc:
            raise Unavailable(f"model store unavailable: {exc}") from exc
        return _pointers(meta) if meta else None

    def model_changes(self) -> AsyncIterator[str]:
        return self._notices(keys.MODEL_CHANNEL)

    def resource_changes(self, kind: str) -> AsyncIterator[str]:
        return self._notices(keys.resource_channel(kind))

    async def _notices(self, channel: str) -> AsyncIterator[str]:
        """A channel's messages until the connection fails (:class:`Unavailable`): callers re-subscribe."""
        pubsub = self.client.pubsub()
        try:
            if isinstance(self.client, RedisCluster):
                # A cluster's pub/sub picks its node from the slot map, which only a first command fills: a
                # follower started before any other command failed with a KeyError, once per start-up.
                await self.client.initialize()
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].decode()
        except (RedisError, *_ROUTING_ERRORS) as exc:  # a cluster's pub/sub routes outside execute_command
            raise Unavailable(f"change notices unavailable: {exc}") from exc
        finally:
            await pubsub.aclose()

    async def model_set_state(self, key: str, version: int, state: str) -> ModelPointers:
        meta_key, states_key = keys.model_meta(key), keys.model_states(key)
        try:
            for _ in range(CAS_RETRIES):
                meta, raw_states = await self._pipeline(("hgetall", meta_key), ("hgetall", states_key))
                states = {int(k): v.decode() for k, v in raw_states.items()}
                t = transition(_pointers(meta), states, version, state)
                pairs: list[Any] = []
                for v, s in t.states.items():
                    pairs += [v, s]
                p = t.pointers
                pointers_json = orjson.dumps({"production": p.production, "test": p.test, "history": p.history})
                if await self._cas_state(
                    keys=[meta_key, states_key], args=[meta.get(b"rev", b"0"), pointers_json, *pairs]
                ):
                    await self.client.publish(keys.MODEL_CHANNEL, key)
                    return t.pointers
        except RedisError as exc:
            raise Unavailable(f"model store unavailable: {exc}") from exc
        raise Unavailable(f"model {key} is changing too fast; try again")

    # --- guests and decisions -------------------------------------------------------------------
    async def guest_load(
        self, lookup: GuestLookup, *, session_events: bool = True, experiments: tuple[str, ...] | None = None
    ) -> JSONObject | None:
        try:
            ref = lookup.direct_ref
            if ref is None and lookup.provider and lookup.identifier:
                raw_ref = await self.hot("GET", keys.identifier(lookup.provider, lookup.identifier))
                ref = raw_ref.decode() if raw_ref else None
            if ref is None:
                return None
            guest = await self._guest_read(ref, session_events, experiments)
            if guest is not None and guest.get("type") == "retired" and guest.get("survivor"):
                # A merged-away guest: one more round trip, only for browsers that were anonymous once.
                guest = await self._guest_read(guest["survivor"], session_events, experiments)
            return guest
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc

    async def _guest_read(
        self, ref: str, session_events: bool, experiments: tuple[str, ...] | None
    ) -> JSONObject | None:
        if session_events or experiments is None:
            return guest_document(pairs(await self.hot("HGETALL", keys.guest(ref))), session_events=session_events)
        names = _read_fields(experiments)
        values = await self.hot("HMGET", keys.guest(ref), *names)
        fields = dict(zip(names, values, strict=True))
        return guest_document(fields, session_events=False, assignments=names[len(_DOCUMENT_FIELDS) :])

    async def guest_save(self, ref: str, guest: JSONObject) -> None:
        try:
            await self.client.hset(keys.guest(ref), mapping=guest_fields(guest))
            for ident in guest.get("identifiers", []):
                await self.client.set(keys.identifier(ident["provider"], ident["id"]), ref)
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc

    async def decisions_record(self, records: list[DecisionRecord]) -> None:
        batch, maxlen = self.batch(), self._decision_log_maxlen
        for r in records:
            batch.command(
                "XADD", keys.DECISION_LOG, "MAXLEN", "~", maxlen, "*", "d", orjson.dumps(r.as_dict(), default=str)
            )
        try:
            await batch.execute()
        except RedisError as exc:
            raise Unavailable(f"decision log unavailable: {exc}") from exc

    async def decisions_recent(self, count: int) -> list[JSONObject]:
        try:
            entries = await self.client.xrevrange(keys.DECISION_LOG, count=count)
        except RedisError as exc:
            raise Unavailable(f"decision log unavailable: {exc}") from exc
        return [orjson.loads(fields[b"d"]) for _, fields in entries]

    async def resource_put(self, kind: str, key: str, document: JSONObject) -> None:
        try:
            await self.client.hset(keys.resources(kind), key, orjson.dumps(document))
            await self.client.publish(keys.resource_channel(kind), key)
        except RedisError as exc:
            raise Unavailable(f"store unavailable: {exc}") from exc

    async def resource_get(self, kind: str, key: str) -> JSONObject | None:
        try:
            raw = await self.client.hget(keys.resources(kind), key)
        except RedisError as exc:
            raise Unavailable(f"store unavailable: {exc}") from exc
        return orjson.loads(raw) if raw is not None else None

    async def resource_list(self, kind: str) -> list[JSONObject]:
        try:
            raw = await self.client.hgetall(keys.resources(kind))
        except RedisError as exc:
            raise Unavailable(f"store unavailable: {exc}") from exc
        return [orjson.loads(v) for _, v in sorted(raw.items())]

    async def resource_delete(self, kind: str, key: str) -> bool:
        try:
            deleted = bool(await self.client.hdel(keys.resources(kind), key))
            await self.client.publish(keys.resource_channel(kind), key)
        except RedisError as exc:
            raise Unavailable(f"store unavailable: {exc}") from exc
        return deleted

    async def _pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for name, *args in commands:
            getattr(pipe, name)(*args)
        return list(await pipe.execute())


def _pointers(meta: dict[bytes, bytes]) -> ModelPointers:
    p = orjson.loads(meta[b"pointers"]) if b"pointers" in meta else {}
    return ModelPointers(
        p.get("production"), p.get("test"), tuple(p.get("history", ())), int(meta.get(b"latest", b"0"))
    )


@functools.lru_cache(maxsize=256)
def _read_fields(experiments: tuple[str, ...]) -> tuple[bytes, ...]:
    """A decision's ``HMGET``: the document's fields and the assignment fields of the fixed splits it chooses in
    (:func:`engine.decide.guest_needs`: a few distinct tuples per worker)."""
    return _DOCUMENT_FIELDS + tuple(ASSIGNMENT_FIELD_BYTES + key.encode() for key in experiments)


def guest_document(
    fields: dict[bytes, bytes],
    *,
    session_events: bool | Literal["lazy"] = True,
    assignments: Sequence[bytes] | None = None,
) -> JSONObject | None:
    """A guest hash's fields as one document; None without a profile.

    ``assignments``: which of ``fields`` are assignment fields (:data:`ASSIGNMENT_FIELD`) when the caller asked for
    them by name; None looks through them all (a whole hash).

    ``session_events``: True puts every session's events (:data:`EVENTS_FIELD`) in their sessions; False leaves
    them out (each moved-out session keeps its empty list); ``"lazy"`` parses only open sessions' and hands closed
    ones' over as :class:`StoredEvents`, for an event's read-modify-write, which appends to an open session and
    writes closed ones back as they were unless a session closes (``sessions.trim_closed_history`` loads them).
    """
    profile = fields.get(b"profile")
    if profile is None:
        return None
    guest: JSONObject = orjson.loads(profile)
    for part in GUEST_PARTS:
        raw = fields.get(part.encode())
        if raw is not None:
            guest[part] = orjson.loads(raw)
    for name in (f for f in fields if f.startswith(ASSIGNMENT_FIELD_BYTES)) if assignments is None else assignments:
        raw = fields.get(name)
        if raw is not None:
            entries = guest.get("assignments")
            if not isinstance(entries, dict):
                entries = guest["assignments"] = {}
            entries[name[len(ASSIGNMENT_FIELD_BYTES) :].decode()] = orjson.loads(raw)
    if session_events and "sessions" in guest:
        lazy = session_events == "lazy"
        for session in guest["sessions"]:
            ref = session.get("ref")
            raw = fields.get(EVENTS_FIELD_BYTES + ref.encode()) if isinstance(ref, str) else None
            if raw is None:
                continue
            # Inline events next to moved ones were appended by a process from before the split fields: newer.
            inline = session.get("events")
            if lazy and not inline and session.get("status") != "open":
                session["events"] = StoredEvents(raw)
            else:
                moved = orjson.loads(raw)
                session["events"] = moved + inline if inline else moved
    return guest


def guest_fields(guest: JSONObject) -> dict[str, bytes]:
    """The hash fields a whole guest is stored in: ``profile`` and each part's (:func:`guest_part`)."""
    fields = {"profile": orjson.dumps({k: v for k, v in guest.items() if k not in GUEST_PARTS})}
    for part in GUEST_PARTS:
        if part in guest:
            fields.update(guest_part(part, guest[part]))
    return fields


def guest_part(part: str, value: Any) -> dict[str, bytes]:
    """The hash fields one guest part is stored in: its JSON; for ``sessions``, the sessions with their events left
    empty and each one's events in its own field (:data:`EVENTS_FIELD`); for ``assignments``, an experiment's entry
    in a field each (:data:`ASSIGNMENT_FIELD`)."""
    if part == "assignments" and isinstance(value, dict):
        return {ASSIGNMENT_FIELD + experiment: orjson.dumps(entry) for experiment, entry in value.items()}
    if part != "sessions" or not isinstance(value, list):
        return {part: orjson.dumps(value)}
    fields: dict[str, bytes] = {}
    moved: list[tuple[JSONObject, Any]] = []
    try:
        for session in value:
            ref = session.get("ref") if isinstance(session, dict) else None
            # A session without a ref of its own (an import's) keeps its events inline: nothing to key them by.
            if not isinstance(ref, str):
                continue
            events = session.get("events")
            if not events:
                continue
            name = EVENTS_FIELD + ref
            if name in fields:
                continue  # a duplicate ref (hand-written data): the later session keeps its events inline
            fields[name] = events.raw if type(events) is StoredEvents else orjson.dumps(events)
            moved.append((session, events))
            session["events"] = ()  # written as []: the shape every reader of `sessions` expects
        # Swapped out and put back rather than copied: no new dict per session on every event's write.
        fields[part] = orjson.dumps(value)
        return fields
    finally:
        for session, events in moved:
            session["events"] = events
