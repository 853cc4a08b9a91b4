"""Identity resolution and merges: promote, link, idempotency, crash recovery, and concurrency on real Redis."""

from __future__ import annotations

import asyncio
import random

from engine import identity
from engine.events import Event
from engine.ingest import Ingest, Receipt
from engine.store import GuestLookup, Store
from engine.store.redis import RedisStore
from tests.listening import ManualClock, add, event, make_ingest

EMAIL = {"provider": "email", "id": "ada@example.com"}


async def read(ingest: Ingest, ref: str) -> dict:  # type: ignore[type-arg]
    guest = (await ingest.profiles.read(ref)).guest
    assert guest is not None
    return guest


async def test_identity_without_a_known_guest_promotes_the_visitor(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(event(clock, browser_id="b1"))
    receipt = await ingest.record(event(clock, "IDENTITY", "b1", identifiers=[EMAIL], email="ada@example.com"))
    assert receipt.guest_ref == "b1"
    g = await read(ingest, "b1")
    assert g["type"] == "customer" and g["identifiers"] == [EMAIL] and g["attributes"]["email"] == "ada@example.com"
    assert await ingest.profiles.owner("email", "ada@example.com") == "b1"


async def test_second_browser_merges_into_the_known_guest(ingest: Ingest, clock: ManualClock, store: Store) -> None:
    await ingest.record(event(clock, "IDENTITY", "b1", identifiers=[EMAIL]))
    await ingest.record(add(clock, "sku-1", 10, browser_id="b2"))
    (await ingest.profiles.read("b2"))  # b2 exists as a visitor with a cart
    receipt = await ingest.record(event(clock, "IDENTITY", "b2", identifiers=[EMAIL]))
    assert receipt.guest_ref == "b1"
    survivor = await read(ingest, "b1")
    assert survivor["cart"]["items"][0]["item_id"] == "sku-1" and survivor["aliases"] == ["b2"]
    assert survivor["facts"]["event_count"] == 3
    retired = await read(ingest, "b2")
    assert retired["type"] == "retired" and retired["survivor"] == "b1" and retired["folded"]
    assert "sessions" not in retired or retired["sessions"] == []
    # The old browser id now resolves to the survivor, for events and for decisions.
    assert (await ingest.record(event(clock, browser_id="b2"))).guest_ref == "b1"
    loaded = await store.guest_load(GuestLookup(browser_id="b2"))
    assert loaded is not None and loaded["ref"] == "b1"


async def test_assignments_move_and_the_survivor_wins_a_clash(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(event(clock, "IDENTITY", "b1", identifiers=[EMAIL]))
    await ingest.record(event(clock, browser_id="b2"))
    for ref, assignments in (("b1", {"exp-a": "control"}), ("b2", {"exp-a": "variant", "exp-b": "x"})):
        snap = await ingest.profiles.read(ref)
        assert snap.guest is not None
        snap.guest["assignments"] = assignments
        await ingest.profiles.commit(ref, snap.guest, snap.rev, token=None, now_ms=clock())
    await identity.merge(ingest.profiles, "b2", "b1", clock(), ingest.limits)
    assert (await read(ingest, "b1"))["assignments"] == {"exp-a": "control", "exp-b": "x"}


async def test_a_merge_is_idempotent_and_recovers_from_a_crash_after_retiring(
    ingest: Ingest, clock: ManualClock
) -> None:
    await ingest.record(event(clock, "IDENTITY", "b1", identifiers=[EMAIL]))
    await ingest.record(add(clock, "sku-1", 10, browser_id="b2"))
    # Step 1 only, as if the process died right after retiring b2.
    snap = await ingest.profiles.read("b2")
    assert snap.guest is not None
    snap.guest.update(type="retired", survivor="b1", merge_id="merge:b2")
    await ingest.profiles.commit("b2", snap.guest, snap.rev, token=None, now_ms=clock())
    assert (await read(ingest, "b1"))["cart"]["items"] == []
    # The next event for b2 finishes the fold, then lands on the survivor.
    assert (await ingest.record(event(clock, browser_id="b2"))).guest_ref == "b1"
    survivor = await read(ingest, "b1")
    assert [i["item_id"] for i in survivor["cart"]["items"]] == ["sku-1"]
    before = survivor["facts"]["event_count"]
    for _ in range(3):
        await identity.merge(ingest.profiles, "b2", "b1", clock(), ingest.limits)
        await identity.fold(ingest.profiles, "b2", clock(), ingest.limits)
    assert (await read(ingest, "b1"))["facts"]["event_count"] == before


async def test_an_event_retried_after_its_guest_merged_is_not_applied_twice(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(event(clock, "IDENTITY", "b1", identifiers=[EMAIL]))
    await ingest.profiles.read("b2")
    e = add(clock, "sku-1", 10, browser_id="b2", ref="once")
    await ingest.apply(e)
    await ingest.record(event(clock, "IDENTITY", "b2", identifiers=[EMAIL]))
    ref, applied = await ingest.apply(e)
    assert ref == "b1" and not applied
    assert (await read(ingest, "b1"))["cart"]["items"][0]["quantity"] == 1


async def test_concurrent_events_during_merges_lose_nothing_and_duplicate_no_one(
    redis_url: str, clock: ManualClock
) -> None:
    """Many browsers of one person send events while identifying, all at once, against a real Redis."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = RedisStore(redis_url)
    ingest = make_ingest(store, clock)
    browsers = [f"browser-{i}" for i in range(12)]
    events = []
    for b in browsers:
        events += [event(clock, browser_id=b, page=f"p{i}") for i in range(15)]
        events.append(event(clock, "IDENTITY", b, identifiers=[EMAIL]))
    rng.shuffle(events)
    try:
        # 64 in flight at once: the Redis pool's default cap is 100 connections.
        gate = asyncio.Semaphore(64)

        async def send(e: Event) -> Receipt:
            async with gate:
                return await ingest.record(e)

        receipts = await asyncio.gather(*(send(e) for e in events))
        owner = await ingest.profiles.owner("email", "ada@example.com")
        assert owner is not None, f"seed={seed}"
        assert {r.guest_ref for r in receipts if r.guest_ref != owner} <= set(browsers), f"seed={seed}"
        # Every browser now resolves to the single owner, and every event is on it exactly once.
        for b in browsers:
            assert await identity.resolve(ingest.profiles, b, clock(), ingest.limits) == owner, f"seed={seed}"
        survivor = await read(ingest, owner)
        refs = [e["ref"] for s in survivor["sessions"] for e in s["events"]]
        assert sorted(refs) == sorted(e.ref for e in events), f"seed={seed}"
        assert survivor["facts"]["event_count"] == len(events), f"seed={seed}"
        assert set(survivor["aliases"]) == set(browsers) - {owner}, f"seed={seed}"
        customers = [b for b in browsers if (await read(ingest, b))["type"] != "retired"]
        assert customers == [owner], f"seed={seed}"
    finally:
        await store.close()
