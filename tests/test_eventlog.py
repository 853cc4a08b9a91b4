"""The event log's recovery consumer on real Redis: it applies what no request applied, exactly once, and
skips what requests did apply. Asserted through call counters, guest counters and the consumer group's
pending list — never through timing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from engine import keys
from engine.app import create_app
from engine.config import Settings
from engine.eventlog import GROUP, RedisEventLog
from engine.events import Event
from engine.ingest import Ingest
from engine.store.redis import RedisStore
from tests.conftest import PUBLIC, running_redis
from tests.listening import ManualClock, add, event, make_ingest

FAR_FUTURE_MS = 2**62
"""A recovery 'now' that makes every logged entry old enough to re-apply."""


@pytest.fixture
async def redis_ingest(redis_url: str, clock: ManualClock) -> AsyncIterator[Ingest]:
    store = RedisStore(redis_url)
    yield make_ingest(store, clock)
    await store.close()


class Counting:
    """An ``apply`` for recovery that counts what it was asked to re-apply."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.refs: list[str] = []

    async def __call__(self, e: Event) -> Any:
        self.refs.append(e.ref)
        return await self.ingest.apply(e)


async def pending(log: Any) -> int:
    total = 0
    for n in range(log.shards):
        total += (await log.client.xpending(keys.event_stream(n), GROUP))["pending"]
    return total


async def event_count(ingest: Ingest, ref: str) -> int:
    guest = (await ingest.profiles.read(ref)).guest
    return 0 if guest is None else int(guest["facts"]["event_count"])


async def test_an_event_whose_request_died_after_the_append_is_applied_once(
    redis_ingest: Ingest, clock: ManualClock
) -> None:
    e = add(clock, "sku-1", 10, ref="orphan")
    assert await redis_ingest.log.append(e)  # the process dies here: logged, never applied
    assert await event_count(redis_ingest, "b1") == 0
    apply = Counting(redis_ingest)
    assert await redis_ingest.log.recover(apply, FAR_FUTURE_MS, 0) == 1
    assert apply.refs == ["orphan"] and await event_count(redis_ingest, "b1") == 1
    # Acknowledged: later rounds do not see it again.
    assert await redis_ingest.log.recover(apply, FAR_FUTURE_MS, 0) == 0
    assert apply.refs == ["orphan"] and await pending(redis_ingest.log) == 0
    assert (await redis_ingest.profiles.read("b1")).guest["cart"]["items"][0]["quantity"] == 1  # type: ignore[index]


async def test_events_their_requests_applied_are_not_re_applied(redis_ingest: Ingest, clock: ManualClock) -> None:
    for i in range(20):
        await redis_ingest.record(event(clock, browser_id=f"b{i % 3}", ref=f"e{i}"))
    await redis_ingest.record_many([event(clock, browser_id=f"b{i % 4}", ref=f"batch{i}") for i in range(30)])
    apply = Counting(redis_ingest)
    assert await redis_ingest.log.recover(apply, FAR_FUTURE_MS, 0) == 0
    assert apply.refs == [] and await pending(redis_ingest.log) == 0


async def test_a_young_unapplied_entry_waits_for_its_request(redis_ingest: Ingest, clock: ManualClock) -> None:
    e = event(clock, ref="in-flight")
    await redis_ingest.log.append(e)
    apply = Counting(redis_ingest)
    # Younger than the grace period: its request may still be applying it.
    assert await redis_ingest.log.recover(apply, 0, 0) == 0
    assert apply.refs == [] and await pending(redis_ingest.log) == 1
    # The request finishes and notes it; the next round acknowledges it without re-applying.
    await redis_ingest.apply(e)
    redis_ingest.log.applied((e,))
    assert await redis_ingest.log.recover(apply, FAR_FUTURE_MS, 0) == 0
    assert apply.refs == [] and await pending(redis_ingest.log) == 0 and await event_count(redis_ingest, "b1") == 1


async def test_a_peer_acknowledges_once_the_writers_notes_ride_on_its_next_append(
    redis_ingest: Ingest, redis_url: str, clock: ManualClock
) -> None:
    writer = redis_ingest.log
    assert isinstance(writer, RedisEventLog)
    peer_store = RedisStore(redis_url)
    peer = RedisEventLog(peer_store, writer.shards)
    peer._consumer = "peer"  # another process, with its own pending list
    by_shard: dict[int, list[str]] = {}
    for i in range(200):
        by_shard.setdefault(writer.shard(f"r{i}"), []).append(f"r{i}")
    try:
        apply = Counting(redis_ingest)
        for round_ in range(3):
            for n in range(writer.shards):
                await redis_ingest.record(event(clock, ref=by_shard[n][round_], browser_id=f"b{round_}"))
            # Each shard's latest note waits in the writer's memory for that shard's next append; every
            # earlier entry was marked applied by it, so the peer acknowledges all but those, young or not.
            assert await peer.recover(apply, 0, 0) == 0
            assert await pending(peer) == writer.shards
        await writer.flush_applied()  # what the writer's own housekeeping round does first
        assert await peer.recover(apply, FAR_FUTURE_MS, 0) == 0
        assert apply.refs == [] and await pending(peer) == 0
    finally:
        await peer_store.close()


async def test_a_retried_event_is_logged_once_and_applied_once(redis_ingest: Ingest, clock: ManualClock) -> None:
    e = event(clock, ref="again")
    first, second = await redis_ingest.record(e), await redis_ingest.record(e)
    assert not first.duplicate and second.duplicate
    client: aioredis.Redis = redis_ingest.log.client  # type: ignore[attr-defined]
    lengths = [await client.xlen(keys.event_stream(n)) for n in range(redis_ingest.log.shards)]  # type: ignore[attr-defined]
    assert sum(lengths) == 1 and await event_count(redis_ingest, "b1") == 1


def test_events_and_batches_get_503_when_redis_is_down(tmp_path: Path, settings: Settings) -> None:
    body = {"type": "VIEW", "channel": "WEB", "browser_id": "b1", "language": "EN", "currency": "EUR", "page": "p"}
    with running_redis(tmp_path) as (url, proc):
        with TestClient(
            create_app(settings, store=RedisStore(url, timeout_ms=200)), raise_server_exceptions=False
        ) as c:
            assert c.post("/v1/events", json=body, headers=PUBLIC).status_code == 201
            proc.kill()
            proc.wait(timeout=10)
            for sent in (body, {"events": [body, {**body, "browser_id": "b2"}]}):
                r = c.post("/v1/events", json=sent, headers=PUBLIC)
                assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
