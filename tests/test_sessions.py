"""Sessions, carts, orders and abandoned carts — on both stores, with a manual clock (no sleeps)."""

from __future__ import annotations

from engine.identity import fold_documents
from engine.ingest import Ingest
from engine.sessions import Limits
from engine.store import GuestLookup, Store
from tests.listening import MINUTE_MS, ManualClock, add, event, make_ingest


async def guest(ingest: Ingest, ref: str = "b1") -> dict:  # type: ignore[type-arg]
    snap = await ingest.profiles.read(ref)
    assert snap.guest is not None
    return snap.guest


async def test_events_in_one_session_until_the_inactivity_timeout(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(event(clock, page="home"))
    clock.advance(19 * MINUTE_MS)
    await ingest.record(event(clock, page="shoes"))
    clock.advance(21 * MINUTE_MS)
    await ingest.record(event(clock, page="hats"))
    g = await guest(ingest)
    assert [s["status"] for s in g["sessions"]] == ["closed", "open"]
    assert [e["page"] for e in g["sessions"][0]["events"]] == ["home", "shoes"]
    assert g["facts"]["session_count"] == 2 and g["facts"]["last_seen_ms"] == clock.now_ms


async def test_sessions_are_per_channel_and_point_of_sale(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(event(clock))
    await ingest.record(event(clock, channel="APP"))
    await ingest.record(event(clock, pos="outlet"))
    g = await guest(ingest)
    assert [(s["channel"], s["pos"]) for s in g["sessions"]] == [("WEB", "shop"), ("APP", "shop"), ("WEB", "outlet")]


async def test_cart_lines_replace_by_item_and_clear(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(add(clock, "sku-1", 10.0, 1))
    await ingest.record(add(clock, "sku-2", 5.5, 2))
    await ingest.record(add(clock, "sku-1", 10.0, 3))
    g = await guest(ingest)
    assert [(i["item_id"], i["quantity"]) for i in g["cart"]["items"]] == [("sku-2", 2), ("sku-1", 3)]
    assert g["cart"]["value"] == 41.0 and g["facts"]["cart_value"] == 41.0
    await ingest.record(event(clock, "CLEAR_CART"))
    assert (await guest(ingest))["cart"] == {"items": [], "value": 0}


async def test_checkout_turns_the_cart_into_one_order(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(add(clock, "sku-1", 20, 2))
    await ingest.record(event(clock, "CONFIRM"))
    await ingest.record(event(clock, "CHECKOUT"))
    g = await guest(ingest)
    assert len(g["orders"]) == 1 and g["orders"][0]["status"] == "checked_out" and g["orders"][0]["value"] == 40
    assert g["cart"]["items"] == [] and g["facts"]["order_count"] == 1 and g["facts"]["lifetime_value"] == 40
    clock.advance(30 * MINUTE_MS)
    await ingest.record(event(clock))
    assert (await guest(ingest))["sessions"][0]["status"] == "closed"  # ordered: not abandoned
    assert await ingest.profiles.abandoned(10) == []


async def test_idle_session_with_a_cart_is_abandoned_once(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(add(clock, "sku-9", 99.0))
    clock.advance(10 * MINUTE_MS)
    assert await ingest.sweep() == 0  # not idle yet
    clock.advance(11 * MINUTE_MS)
    assert await ingest.sweep() == 1
    g = await guest(ingest)
    assert g["sessions"][0]["status"] == "abandoned" and g["sessions"][0]["cart_value"] == 99.0
    [record] = await ingest.profiles.abandoned(10)
    assert record["guest_ref"] == "b1" and record["value"] == 99.0 and record["items"][0]["item_id"] == "sku-9"
    clock.advance(60 * MINUTE_MS)
    assert await ingest.sweep() == 0  # nothing left to close, nothing emitted twice
    assert len(await ingest.profiles.abandoned(10)) == 1


async def test_a_late_event_closes_the_old_session_as_abandoned(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(add(clock, "sku-1", 5))
    clock.advance(45 * MINUTE_MS)
    await ingest.record(event(clock))
    assert [s["status"] for s in (await guest(ingest))["sessions"]] == ["abandoned", "open"]
    assert len(await ingest.profiles.abandoned(10)) == 1


async def test_clear_cart_means_no_abandonment(ingest: Ingest, clock: ManualClock) -> None:
    await ingest.record(add(clock, "sku-1", 5))
    await ingest.record(event(clock, "CLEAR_CART"))
    clock.advance(25 * MINUTE_MS)
    await ingest.sweep()
    assert (await guest(ingest))["sessions"][0]["status"] == "closed"
    assert await ingest.profiles.abandoned(10) == []


async def test_history_is_bounded(store: Store, clock: ManualClock) -> None:
    ingest = make_ingest(store, clock, Limits(max_sessions=3, max_events_per_session=4, max_orders=2))
    for _ in range(5):
        for _ in range(6):
            await ingest.record(event(clock))
        await ingest.record(add(clock, "x", 1))
        await ingest.record(event(clock, "ORDER_CHECKOUT"))
        clock.advance(30 * MINUTE_MS)
    g = await guest(ingest)
    assert len(g["sessions"]) == 3 and all(len(s["events"]) == 4 for s in g["sessions"])
    assert g["sessions"][-1]["event_count"] == 8
    assert len(g["orders"]) == 2 and g["facts"]["order_count"] == 5 and g["facts"]["lifetime_value"] == 5
    await store.close()


async def test_closed_sessions_keep_only_their_newest_events_within_the_budget(
    store: Store, clock: ManualClock
) -> None:
    ingest = make_ingest(store, clock, Limits(max_events_per_session=4, max_closed_session_events=5))
    for n in range(4):
        for k in range(3):
            await ingest.record(event(clock, page=f"s{n}-{k}"))
        clock.advance(30 * MINUTE_MS)
    g = await guest(ingest)
    assert [s["status"] for s in g["sessions"]] == ["closed", "closed", "closed", "open"]
    pages = [[e["page"] for e in s["events"]] for s in g["sessions"]]
    # The open session is not in the budget; the closed ones keep the 5 newest of their 9 events.
    assert pages == [[], ["s1-1", "s1-2"], ["s2-0", "s2-1", "s2-2"], ["s3-0", "s3-1", "s3-2"]]
    assert [s["event_count"] for s in g["sessions"]] == [3, 3, 3, 3]
    assert g["facts"]["event_count"] == 12
    # The sweeper closing the last session applies the same budget.
    await ingest.sweep()
    g = await guest(ingest)
    pages = [[e["page"] for e in s["events"]] for s in g["sessions"]]
    assert pages == [[], [], ["s2-1", "s2-2"], ["s3-0", "s3-1", "s3-2"]]
    await store.close()


def test_a_merge_keeps_the_closed_history_within_the_budget() -> None:
    def closed(ref: str, started_ms: int, n: int) -> dict:  # type: ignore[type-arg]
        events = [{"ref": f"{ref}-{i}", "type": "VIEW", "at_ms": started_ms + i} for i in range(n)]
        return {"ref": ref, "status": "closed", "started_ms": started_ms, "last_ms": started_ms + n, "events": events}

    mine = {"ref": "a", "type": "customer", "sessions": [closed("a1", 100, 4)], "facts": {}}
    theirs = {"ref": "b", "type": "visitor", "sessions": [closed("b1", 50, 4), closed("b2", 200, 4)], "facts": {}}
    folded = fold_documents(mine, theirs, Limits(max_closed_session_events=6))
    assert [s["ref"] for s in folded["sessions"]] == ["b1", "a1", "b2"]
    assert [len(s["events"]) for s in folded["sessions"]] == [0, 2, 4]
    assert [e["ref"] for e in folded["sessions"][1]["events"]] == ["a1-2", "a1-3"]
    assert all(s["event_count"] == 4 for s in folded["sessions"])


async def test_a_repeated_event_ref_is_applied_once(ingest: Ingest, clock: ManualClock) -> None:
    first = await ingest.record(add(clock, "sku-1", 10, ref="evt-1"))
    again = await ingest.record(add(clock, "sku-1", 10, ref="evt-1"))
    assert not first.duplicate and again.duplicate
    g = await guest(ingest)
    assert g["facts"]["event_count"] == 1 and len(g["sessions"][0]["events"]) == 1


async def test_decide_reads_what_events_wrote(ingest: Ingest, clock: ManualClock, store: Store) -> None:
    await ingest.record(event(clock, ext={"product_id": "p-7", "category": "shoes"}))
    loaded = await store.guest_load(GuestLookup(browser_id="b1"))
    assert loaded is not None
    assert loaded["facts"]["last_viewed_products"] == ["p-7"] and loaded["facts"]["last_viewed_categories"] == ["shoes"]
