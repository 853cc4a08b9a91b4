"""The Redis backend of :mod:`engine.profiles`: one guest = one hash plus its applied-token set, one slot.

A commit is one Lua script (``guest_commit.lua``) over the guest's two keys; identifier index entries and
the active-session index live in other slots and are written by separate, idempotent commands — the
protocols in :mod:`engine.identity` and :mod:`engine.ingest` are ordered so that a crash between them
leaves nothing a retry cannot finish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError

from engine import keys
from engine.errors import Unavailable
from engine.profiles import TOKENS_KEPT, Commit, Snapshot, Write
from engine.store.redis import (
    ASSIGNMENT_FIELD_BYTES,
    EVENTS_FIELD,
    EVENTS_FIELD_BYTES,
    GUEST_PARTS,
    RedisStore,
    guest_document,
    guest_part,
    load_script,
)
from engine.store.wire import pairs
from engine.types import JSONObject

ABANDONED_MAXLEN = 100_000


class RedisProfiles:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client: Any = store.client
        self._commit = store.script("guest_commit.lua")
        self._release = self.client.register_script(load_script("identifier_release.lua"))

    async def read(self, ref: str, *, closed_events: bool = True) -> Snapshot:
        try:
            fields = await self.store.hot("HGETALL", keys.guest(ref))
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc
        return _snapshot(pairs(fields), closed_events)

    async def read_many(self, refs: Sequence[str], *, closed_events: bool = True) -> list[Snapshot]:
        if len(refs) == 1:
            return [await self.read(refs[0], closed_events=closed_events)]
        batch = self.store.batch()
        for ref in refs:
            batch.command("HGETALL", keys.guest(ref))
        try:
            replies = await batch.execute()
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc
        return [_snapshot(pairs(fields), closed_events) for fields in replies]

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
        checked = () if token is None else (token,)
        return await self._commit_one(ref, _commit_args(guest, rev, checked, now_ms, carried, stored))

    async def commit_many(self, writes: Sequence[Write]) -> list[Commit]:
        active_ms = {w.ref: w.active_ms for w in writes if w.active_ms is not None}
        if len(writes) == 1 and not active_ms:
            w = writes[0]
            return [await self._commit_one(w.ref, _commit_args(w.guest, w.rev, w.tokens, w.now_ms, (), w.stored))]
        # One round trip: the index entry rides with the commits (a round trip per session-opening event
        # saved), sent first so a crash between the two can leave a spare entry, never a missing one.
        batch = self.store.batch()
        if active_ms:
            scored: list[Any] = []
            for ref, ms in active_ms.items():
                scored += [ms, ref]
            batch.command("ZADD", keys.ACTIVE_SESSIONS, *scored)
        for w in writes:
            batch.script(
                self._commit, [*_commit_keys(w.ref)], _commit_args(w.guest, w.rev, w.tokens, w.now_ms, (), w.stored)
            )
        try:
            replies = await batch.execute()
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc
        return [_outcome(r) for r in replies[1 if active_ms else 0 :]]

    async def _commit_one(self, ref: str, args: list[Any]) -> Commit:
        try:
            result = await self.store.hot_script(self._commit, [*_commit_keys(ref)], args)
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc
        return _outcome(result)

    async def applied(self, ref: str, tokens: Sequence[str]) -> set[str]:
        scores = await self._call("zmscore", keys.guest_applied(ref), list(tokens))
        return {t for t, score in zip(tokens, scores, strict=True) if score is not None}

    async def tokens(self, ref: str) -> list[str]:
        return [t.decode() for t in await self._call("zrange", keys.guest_applied(ref), 0, -1)]

    async def delete(self, refs: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            # Safe against a writer holding an old read: its revision (≥ 1) no longer matches the absent
            # hash's 0, so its compare-and-set fails and it re-reads an empty guest.
            pipe.delete(keys.guest(ref), keys.guest_applied(ref))
            pipe.zrem(keys.ACTIVE_SESSIONS, ref)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc

    async def owner(self, provider: str, identifier: str) -> str | None:
        raw = await self._call("get", keys.identifier(provider, identifier))
        return raw.decode() if raw is not None else None

    async def claim(self, provider: str, identifier: str, ref: str) -> str:
        key = keys.identifier(provider, identifier)
        if await self._call("set", key, ref, nx=True):
            return ref
        owner = await self._call("get", key)
        return owner.decode() if owner is not None else await self.claim(provider, identifier, ref)

    async def point(self, provider: str, identifier: str, ref: str) -> None:
        await self._call("set", keys.identifier(provider, identifier), ref)

    async def release(self, provider: str, identifier: str, ref: str) -> None:
        try:
            await self._release(keys=[keys.identifier(provider, identifier)], args=[ref])
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc

    async def mark_active(self, ref: str, last_ms: int) -> None:
        await self._call("zadd", keys.ACTIVE_SESSIONS, {ref: last_ms})

    async def mark_inactive(self, ref: str) -> None:
        await self._call("zrem", keys.ACTIVE_SESSIONS, ref)

    async def idle(self, before_ms: int, count: int) -> list[str]:
        raw = await self._call("zrangebyscore", keys.ACTIVE_SESSIONS, "-inf", f"({before_ms}", start=0, num=count)
        return [r.decode() for r in raw]

    async def emit_abandoned(self, records: list[JSONObject]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            pipe.xadd(keys.ABANDONED, {"r": orjson.dumps(record)}, maxlen=ABANDONED_MAXLEN, approximate=True)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"abandoned-cart stream unavailable: {exc}") from exc

    async def abandoned(self, count: int) -> list[JSONObject]:
        entries = await self._call("xrevrange", keys.ABANDONED, count=count)
        return [orjson.loads(fields[b"r"]) for _, fields in reversed(entries)]

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, name)(*args, **kwargs)
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc


def _snapshot(fields: dict[bytes, bytes], closed_events: bool = True) -> Snapshot:
    rev = int(fields.get(b"rev", b"0"))
    guest = guest_document(fields, session_events=True if closed_events else "lazy")
    if guest is None:
        return Snapshot(None, rev)
    stored = {name: fields[field] for name, field in _STORED_FIELDS if field in fields}
    for field, value in fields.items():
        if field.startswith(EVENTS_FIELD_BYTES) or field.startswith(ASSIGNMENT_FIELD_BYTES):
            stored[field.decode()] = value
    return Snapshot(guest, rev, stored)


_STORED_FIELDS = tuple((name, name.encode()) for name in ("profile", *GUEST_PARTS))


def _commit_keys(ref: str) -> tuple[str, str]:
    return keys.guest(ref), keys.guest_applied(ref)


def _commit_args(
    guest: JSONObject,
    rev: int,
    checked: Sequence[str],
    now_ms: int,
    carried: Sequence[str],
    stored: Mapping[str, bytes] | None,
) -> list[Any]:
    args: list[Any] = [rev, now_ms, TOKENS_KEPT, len(checked), len(carried), *checked, *carried]
    was = stored or {}
    # Only the parts that differ from the read: the rev check makes the rest still what was read. (An event
    # rewrote every part before, orders and assignments included, and each commit merged the assignments
    # in Lua, two JSON decodes and an encode.)
    profile = orjson.dumps({k: v for k, v in guest.items() if k not in GUEST_PARTS})
    if was.get("profile") != profile:
        args += ["profile", profile]
    written: set[str] = set()
    for part in GUEST_PARTS:
        for field, data in guest_part(part, guest.get(part, {} if part == "assignments" else [])).items():
            written.add(field)
            if was.get(field) != data:
                args += [field, data]
    for field in was:
        # Only events fields go: a document never drops an experiment's assignment.
        if field.startswith(EVENTS_FIELD) and field not in written:
            args += [field, b""]  # the session is gone or kept no events: guest_commit.lua deletes the field
    if "assignments" in was:
        # A map from before the per-experiment fields: its entries were read into the document and written above as
        # fields of their own; guest_commit.lua folds in what it holds now, then deletes it.
        args += ["assignments", b""]
    return args


def _outcome(result: Any) -> Commit:
    code = int(result)
    return Commit.DUPLICATE if code == -1 else Commit.CONFLICT if code == -2 else Commit.OK
