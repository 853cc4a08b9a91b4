"""Batches: one read and one compare-and-set per guest for all its events, in order, idempotent per event ref."""

from __future__ import annotations

import asyncio
import random

from engine import identity
from engine.ingest import Ingest
from engine.store.redis import RedisStore
from tests.listening import ManualClock, add, event, make_ingest

EMAIL = {"provider": "email", "id": "ada@example.com"}


async def guest(ingest: Ingest, ref: str) -> dict:  # type: ignore[type-arg]
    g = (await ingest.profiles.read(ref)).guest
    assert g is not None
    return g


def session_refs(g: dict) -> list[str]:  # type: ignore[type-arg]
    return [e["ref"] for s in g["sessions"] for e in s["events"]]


async def test_a_browsers_events_in_a_batch_apply_in_order(ingest: Ingest, clock: ManualClock) -> None:
    batch = [
        add(clock, "sku-1", 3, 1, ref="a1"),
        event(clock, browser_id="b2", ref="x1"),
        add(clock, "sku-1", 3, 4, ref="a2"),  # replaces the line: order matters
        event(clock, "CLEAR_CART", ref="a3"),
        add(clock, "sku-2", 5, 1, ref="a4"),
    ]
    receipts = await ingest.record_many(batch)
    assert [(r.guest_ref, r.duplicate) for r in receipts] == [("b1", False), ("b2", False)] + [("b1", False)] * 3
    g = await guest(ingest, "b1")
    assert session_refs(g) == ["a1", "a2", "a3", "a4"] and g["facts"]["event_count"] == 4
    assert [(i["item_id"], i["quantity"]) for i in g["cart"]["items"]] == [("sku-2", 1)]
    assert session_refs(await guest(ingest, "b2")) == ["x1"]


async def test_a_retried_batch_is_not_applied_twice(ingest: Ingest, clock: ManualClock) -> None:
    batch = [add(clock, "sku-1", 3, ref="r1"), event(clock, ref="r2"), event(clock, browser_id="b2", ref="r3")]
    await ingest.record_many(batch)
    again = await ingest.record_many(batch)
    assert all(r.duplicate for r in again)
    g = await guest(ingest, "b1")
    assert session_refs(g) == ["r1", "r2"] and g["facts"]["event_count"] == 2 and g["cart"]["value"] == 3
    assert (await guest(ingest, "b2"))["facts"]["event_count"] == 1


async def test_a_partly_applied_batch_applies_only_the_rest(ingest: Ingest, clock: ManualClock) -> None:
    # The request died after applying the middle event alone (or recovery got to it first).
    batch = [event(clock, ref="p1"), event(clock, ref="p2"), event(clock, ref="p3"), event(clock, ref="p2")]
    await ingest.apply(batch[1])
    receipts = await ingest.record_many(batch)
    assert [r.duplicate for r in receipts] == [False, True, False, True]
    g = await guest(ingest, "b1")
    assert session_refs(g) == ["p2", "p1", "p3"] and g["facts"]["event_count"] == 3


async def test_an_identity_event_in_a_batch_merges_and_later_events_follow(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(event(clock, "IDENTITY", "b1", identifiers=[EMAIL], ref="i0"))
    batch = [
        add(clock, "sku-1", 10, browser_id="b2", ref="m1"),
        event(clock, browser_id="b3", ref="o1"),
        event(clock, "IDENTITY", "b2", identifiers=[EMAIL], ref="m2"),
        event(clock, browser_id="b2", ref="m3"),
    ]
    receipts = await ingest.record_many(batch)
    assert [r.guest_ref for r in receipts] == ["b2", "b3", "b1", "b1"]
    survivor = await guest(ingest, "b1")
    assert sorted(session_refs(survivor)) == ["i0", "m1", "m2", "m3"] and survivor["facts"]["event_count"] == 4
    assert survivor["cart"]["items"][0]["item_id"] == "sku-1"
    # The batch path follows the merge for a browser with no IDENTITY of its own in the batch, too.
    receipts = await ingest.record_many([event(clock, browser_id="b2", ref="m4"), event(clock, browser_id="b3")])
    assert receipts[0].guest_ref == "b1" and (await guest(ingest, "b1"))["facts"]["event_count"] == 5


async def test_a_batch_opens_sessions_on_the_sweepers_index(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record_many([event(clock, browser_id="b1"), event(clock, browser_id="b2"), event(clock)])
    assert sorted(await ingest.profiles.idle(clock() + 1, 10)) == ["b1", "b2"]


async def test_concurrent_batches_and_single_events_lose_nothing(redis_url: str, clock: ManualClock) -> None:
    """Overlapping batches and single events on a few guests, all at once, against a real Redis."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = RedisStore(redis_url)
    ingest = make_ingest(store, clock)
    browsers = [f"b{i}" for i in range(6)]
    events = [event(clock, browser_id=rng.choice(browsers), page=f"p{i}") for i in range(300)]
    chunks, i = [], 0
    while i < len(events):
        size = rng.choice([1, 1, 5, 20])
        chunks.append(events[i : i + size])
        i += size
    try:
        gate = asyncio.Semaphore(32)

        async def send(chunk: list) -> None:  # type: ignore[type-arg]
            async with gate:
                await (ingest.record(chunk[0]) if len(chunk) == 1 else ingest.record_many(chunk))

        # Each chunk twice, concurrently: a retried batch racing its first attempt.
        await asyncio.gather(*(send(c) for c in chunks + chunks))
        for b in browsers:
            mine = [e.ref for e in events if e.browser_id == b]
            g = await guest(ingest, b)
            assert sorted(session_refs(g)) == sorted(mine), f"seed={seed}"
            assert g["facts"]["event_count"] == len(mine), f"seed={seed}"
            assert await identity.resolve(ingest.profiles, b, clock(), ingest.limits) == b
    finally:
        await store.close()
