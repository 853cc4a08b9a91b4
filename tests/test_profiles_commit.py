"""A guest's compare-and-set writes only the parts that changed since its read (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from engine import keys
from engine.ingest import Ingest
from engine.profiles import Commit
from engine.profiles_redis import _commit_args
from engine.store.redis import EVENTS_FIELD, RedisStore
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


@pytest.fixture
async def ingest(redis_url: str, clock: ManualClock) -> AsyncIterator[Ingest]:
    store = RedisStore(redis_url)
    yield make_ingest(store, clock)
    await store.close()


async def test_a_commit_of_a_read_writes_only_the_parts_that_changed(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(add(clock, "sku-1", 20.0))
    snap = await ingest.profiles.read("b1")
    assert snap.guest is not None

    def written(stored: Any) -> list[str]:
        return written_parts(_commit_args(snap.guest, snap.rev, ("t",), clock(), (), stored))  # type: ignore[arg-type]

    assert written(snap.stored) == []
    snap.guest["cart"]["items"][0]["quantity"] = 2
    assert written(snap.stored) == ["cart"]
    snap.guest["facts"]["seen"] = True
    assert written(snap.stored) == ["profile", "cart"]
    # Without the read's stored form every part is written (each session's events in a field of their own).
    moved = EVENTS_FIELD + snap.guest["sessions"][0]["ref"]
    # A guest in no experiment has no assignment field; one in an experiment a field for it (``as:<experiment>``).
    assert written(None) == ["profile", moved, "sessions", "orders", "cart"]
    snap.guest["assignments"] = {"exp": {"arm": "a"}}
    assert written(None) == ["profile", moved, "sessions", "orders", "cart", "as:exp"]


async def test_a_commit_without_the_reads_stored_form_writes_every_part(
    ingest: Ingest, clock: ManualClock, redis_url: str
) -> None:
    await ingest.record(event(clock))
    put_field(redis_url, "b1", "orders", b"[ ]")  # the same JSON spelt otherwise: only a rewrite changes it
    snap = await ingest.profiles.read("b1")
    assert snap.guest is not None
    assert await ingest.profiles.commit("b1", snap.guest, snap.rev, token="t1", now_ms=clock()) is Commit.OK
    assert stored_field(redis_url, "b1", "orders") == b"[]"


async def test_a_commit_that_changes_nothing_still_takes_its_revision_and_token(
    ingest: Ingest, clock: ManualClock
) -> None:
    await ingest.record(event(clock))
    profiles = ingest.profiles
    snap = await profiles.read("b1")
    assert snap.guest is not None and snap.stored is not None
    assert await profiles.commit("b1", snap.guest, snap.rev, token="t1", now_ms=clock(), stored=snap.stored) is (
        Commit.OK
    )
    after = await profiles.read("b1")
    assert after.guest is not None
    assert after.rev == snap.rev + 1 and after.stored == snap.stored
    # Its token was recorded: the same operation again is a duplicate, not a second write.
    again = await profiles.commit("b1", after.guest, after.rev, token="t1", now_ms=clock(), stored=after.stored)
    assert again is Commit.DUPLICATE
    # And a writer still holding the first read loses the compare-and-set.
    stale = await profiles.commit("b1", snap.guest, snap.rev, token="t2", now_ms=clock(), stored=snap.stored)
    assert stale is Commit.CONFLICT
