"""A guest's compare-and-set writes only the parts that changed since its read (real Redis)."""

from __future__ import annotations

from typing import Any

import redis

from engine import keys
from engine.profiles import Commit
from engine.profiles_redis import _commit_args
from engine.store.redis import GUEST_PARTS, RedisStore
from tests.listening import ManualClock, add, event, make_ingest


def stored_field(redis_url: str, ref: str, field: str) -> bytes | None:
    client = redis.Redis.from_url(redis_url)
    try:
        return client.hget(keys.guest(ref), field)  # type: ignore[return-value]
    finally:
        client.close()


def put_field(redis_url: str, ref: str, field: str, value: bytes) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(keys.guest(ref), field, value)
    finally:
        client.close()


def written_parts(args: list[Any]) -> list[str]:
    """The field names a guest_commit.lua call writes: its header is 5 values plus the tokens it carries."""
    start = 5 + int(args[3]) + int(args[4])
    return [name if isinstance(name, str) else name.decode() for name in args[start::2]]


async def test_a_commit_of_a_read_writes_only_the_parts_that_changed(redis_url: str) -> None:
    clock = ManualClock()
    store = RedisStore(redis_url)
    ingest = make_ingest(store, clock)
    try:
        await ingest.record(add(clock, "sku-1", 20.0))
        snap = await ingest.profiles.read("b1")
        assert snap.guest is not None
        assert written_parts(_commit_args(snap.guest, snap.rev, ("t",), clock(), (), snap.stored)) == []
        snap.guest["cart"]["items"][0]["quantity"] = 2
        assert written_parts(_commit_args(snap.guest, snap.rev, ("t",), clock(), (), snap.stored)) == ["cart"]
        snap.guest["facts"]["seen"] = True
        assert written_parts(_commit_args(snap.guest, snap.rev, ("t",), clock(), (), snap.stored)) == [
            "profile",
            "cart",
        ]
        # Without the read's stored form every part is written.
        assert written_parts(_commit_args(snap.guest, snap.rev, ("t",), clock(), (), None)) == [
            "profile",
            *GUEST_PARTS,
        ]
    finally:
        await store.close()


async def test_a_commit_without_a_read_writes_every_part(redis_url: str) -> None:
    clock = ManualClock()
    store = RedisStore(redis_url)
    ingest = make_ingest(store, clock)
    try:
        await ingest.record(event(clock))
        put_field(redis_url, "b1", "orders", b"[ ]")
        snap = await ingest.profiles.read("b1")
        assert snap.guest is not None
        outcome = await ingest.profiles.commit("b1", snap.guest, snap.rev, token="t1", now_ms=clock())
        assert outcome is Commit.OK
        assert stored_field(redis_url, "b1", "orders") == b"[]"
    finally:
        await store.close()


async def test_a_commit_that_changes_nothing_still_takes_its_revision_and_token(redis_url: str) -> None:
    clock = ManualClock()
    store = RedisStore(redis_url)
    ingest = make_ingest(store, clock)
    try:
        await ingest.record(event(clock))
        snap = await ingest.profiles.read("b1")
        assert snap.guest is not None and snap.stored is not None
        profiles = ingest.profiles
        assert await profiles.commit("b1", snap.guest, snap.rev, token="t1", now_ms=clock(), stored=snap.stored) is (
            Commit.OK
        )
        after = await profiles.read("b1")
        assert after.rev == snap.rev + 1
        assert after.stored == snap.stored
        # Its token was recorded: the same operation again is a duplicate, not a second write.
        again = await profiles.commit("b1", after.guest, after.rev, token="t1", now_ms=clock(), stored=after.stored)  # type: ignore[arg-type]
        assert again is Commit.DUPLICATE
        # And a writer still holding the first read loses the compare-and-set.
        stale = await profiles.commit("b1", snap.guest, snap.rev, token="t2", now_ms=clock(), stored=snap.stored)
        assert stale is Commit.CONFLICT
    finally:
        await store.close()
