"""The store contract, run against both backends (embedded and a real Redis)."""

from __future__ import annotations

import orjson
import pytest

from engine.errors import Conflict, NotFound
from engine.store import DecisionRecord, GuestLookup, Store, empty_guest


@pytest.fixture
async def st(store: Store):  # type: ignore[no-untyped-def]
    yield store
    await store.close()


async def test_versions_and_lifecycle_invariants(st: Store) -> None:
    assert await st.model_add_version("m", {"definition": {"a": 1}}, "d1") == (1, True)
    assert await st.model_add_version("m", {"definition": {"a": 2}}, "d2") == (2, True)
    assert await st.model_add_version("m", {"definition": {"a": 1}}, "d1") == (1, False)
    p = await st.model_set_state("m", 1, "production")
    assert (p.production, p.test, p.history) == (1, None, (1,))
    p = await st.model_set_state("m", 2, "test")
    assert p.test == 2
    p = await st.model_set_state("m", 2, "production")
    assert (p.production, p.test, p.history) == (2, None, (1, 2))
    assert [v["state"] for v in await st.model_list_versions("m")] == ["archived", "production"]
    with pytest.raises(Conflict):
        await st.model_set_state("m", 2, "archived")
    with pytest.raises(NotFound):
        await st.model_set_state("m", 9, "production")
    doc = await st.model_get_version("m", 1)
    assert doc is not None and doc["definition"] == {"a": 1} and doc["state"] == "archived"
    assert await st.model_keys() == ["m"]


async def test_guest_lookups_and_retired_redirect(st: Store) -> None:
    survivor = empty_guest("known")
    survivor.update(type="customer", identifiers=[{"provider": "email", "id": "a@b.c"}], facts={"order_count": 3})
    await st.guest_save("known", survivor)
    retired = empty_guest("anon")
    retired.update(type="retired", survivor="known")
    await st.guest_save("anon", retired)

    by_ref = await st.guest_load(GuestLookup(guest_ref="known"))
    assert by_ref is not None and by_ref["facts"] == {"order_count": 3}
    via_retired = await st.guest_load(GuestLookup(browser_id="anon"))
    assert via_retired is not None and via_retired["ref"] == "known"
    by_email = await st.guest_load(GuestLookup(provider="email", identifier="a@b.c"))
    assert by_email is not None and by_email["ref"] == "known"
    assert await st.guest_load(GuestLookup(browser_id="nobody")) is None
    assert await st.guest_load(GuestLookup(provider="email", identifier="x@y.z")) is None


async def test_decision_log_newest_first(st: Store) -> None:
    recs = [DecisionRecord(f"d{i}", "m", 1, "g", {"i": i}, False, i) for i in range(5)]
    await st.decisions_record(recs)
    recent = await st.decisions_recent(3)
    assert [r["decision_id"] for r in recent] == ["d4", "d3", "d2"]
    assert recent[0]["outputs"] == {"i": 4}


async def test_decision_log_takes_pre_serialised_outputs(st: Store) -> None:
    # decide hands the log the bytes it already made for the response, as an orjson.Fragment.
    await st.decisions_record([DecisionRecord("f1", "m", 1, "g", orjson.Fragment(b'{"a":[1,"x"]}'), False, 1)])
    assert (await st.decisions_recent(1))[0]["outputs"] == {"a": [1, "x"]}


async def test_resources(st: Store) -> None:
    await st.resource_put("connection", "b", {"key": "b", "n": 2})
    await st.resource_put("connection", "a", {"key": "a", "n": 1})
    await st.resource_put("experiment", "a", {"key": "a", "other": True})
    assert await st.resource_get("connection", "a") == {"key": "a", "n": 1}
    assert [d["key"] for d in await st.resource_list("connection")] == ["a", "b"]
    assert await st.resource_delete("connection", "a") is True
    assert await st.resource_delete("connection", "a") is False
    assert await st.resource_get("connection", "a") is None
    assert await st.resource_get("experiment", "a") == {"key": "a", "other": True}
