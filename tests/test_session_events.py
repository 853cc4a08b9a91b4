"""Session events live apart from the sessions in Redis, and decisions read them only when the model may.

Real Redis throughout; the decide tests also run on the embedded store, which always returns them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from engine import keys, sessions
from engine.decide import guest_needs
from engine.guestreads import reads_assignments, reads_session_events
from engine.ingest import Ingest
from engine.profiles_redis import _commit_args
from engine.sessions import Limits
from engine.store import GuestLookup, StoredEvents
from engine.store.redis import EVENTS_FIELD, RedisStore, guest_document
from tests.listening import ManualClock, add, event, make_ingest
from tests.test_profiles_commit import written_parts

ADMIN = {"Authorization": "Bearer test-admin"}
PUBLIC = {"X-API-Key": "test-public"}


def raw_fields(redis_url: str, ref: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode(): v for k, v in client.hgetall(keys.guest(ref)).items()}  # type: ignore[union-attr]
    finally:
        client.close()


def put_fields(redis_url: str, ref: str, fields: dict[str, bytes]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(keys.guest(ref), mapping=fields)  # type: ignore[arg-type]
    finally:
        client.close()


@pytest.fixture
async def redis_ingest(redis_url: str, clock: ManualClock) -> AsyncIterator[Ingest]:
    store = RedisStore(redis_url)
    yield make_ingest(store, clock)
    await store.close()


async def test_events_are_stored_apart_and_read_back_in_their_sessions(
    redis_ingest: Ingest, redis_url: str, clock: ManualClock
) -> None:
    sent = [event(clock, page=f"p{i}") for i in range(3)] + [add(clock, "sku-1", 9.5)]
    for e in sent:
        await redis_ingest.record(e)
        clock.advance(1000)
    fields = raw_fields(redis_url, "b1")
    stored_sessions = orjson.loads(fields["sessions"])
    # Left empty in place, not removed: the shape a process from before the split field reads and appends to.
    assert stored_sessions and all(s["events"] == [] for s in stored_sessions)
    moved = orjson.loads(fields[EVENTS_FIELD + stored_sessions[0]["ref"]])
    assert [e["ref"] for e in moved] == [e.ref for e in sent]

    guest = (await redis_ingest.profiles.read("b1")).guest
    assert guest is not None
    assert [e["ref"] for e in guest["sessions"][0]["events"]] == [e.ref for e in sent]


async def test_a_decision_can_read_the_guest_without_its_events(
    redis_ingest: Ingest, redis_url: str, clock: ManualClock
) -> None:
    for i in range(3):
        await redis_ingest.record(event(clock, page=f"p{i}"))
    store = RedisStore(redis_url)
    try:
        whole = await store.guest_load(GuestLookup(browser_id="b1"))
        light = await store.guest_load(GuestLookup(browser_id="b1"), session_events=False)
    finally:
        await store.close()
    assert whole is not None and light is not None
    assert len(whole["sessions"][0]["events"]) == 3
    assert light["sessions"][0]["events"] == []
    for session in whole["sessions"]:
        session["events"] = []
    assert light == whole


async def test_guests_stored_with_inline_events_read_the_same_and_are_split_on_their_next_write(
    redis_ingest: Ingest, redis_url: str, clock: ManualClock
) -> None:
    first = event(clock, page="home")
    await redis_ingest.record(first)
    whole = (await redis_ingest.profiles.read("b1")).guest
    assert whole is not None
    # Rewrite it as a process before the split stored it: events inline, no split field.
    put_fields(redis_url, "b1", {"sessions": orjson.dumps(whole["sessions"])})
    client = redis.Redis.from_url(redis_url)
    client.hdel(keys.guest("b1"), *[f for f in raw_fields(redis_url, "b1") if f.startswith(EVENTS_FIELD)])
    client.close()
    assert (await redis_ingest.profiles.read("b1")).guest == whole

    clock.advance(1000)
    second = event(clock, page="next")
    await redis_ingest.record(second)
    fields = raw_fields(redis_url, "b1")
    assert orjson.loads(fields["sessions"])[0]["events"] == []
    guest = (await redis_ingest.profiles.read("b1")).guest
    assert guest is not None
    assert [e["ref"] for e in guest["sessions"][0]["events"]] == [first.ref, second.ref]


async def test_events_an_older_process_appended_inline_follow_the_split_ones(redis_url: str) -> None:
    # A process that predates the split (a rolling deploy, a rollback) reads a session's empty inline list, appends
    # to it and leaves the split field as it was: its events are the newer ones.
    inline = {"ref": "s1", "status": "open", "events": [{"ref": "new"}]}
    put_fields(redis_url, "g1", {
        "profile": orjson.dumps({"ref": "g1"}),
        "sessions": orjson.dumps([inline]),
        EVENTS_FIELD + "s1": orjson.dumps([{"ref": "old"}]),
    })  # fmt: skip
    store = RedisStore(redis_url)
    try:
        guest = await store.guest_load(GuestLookup(guest_ref="g1"))
    finally:
        await store.close()
    assert guest is not None and guest["sessions"][0]["events"] == [{"ref": "old"}, {"ref": "new"}]


async def test_a_process_from_before_the_split_field_records_events_on_split_guests(
    redis_ingest: Ingest, redis_url: str, clock: ManualClock
) -> None:
    # What a rollback runs into: the older code reads only `sessions`, and takes an event for the open session.
    first = event(clock, page="home")
    await redis_ingest.record(first)
    older_view = guest_document(
        {k.encode(): v for k, v in raw_fields(redis_url, "b1").items() if not k.startswith(EVENTS_FIELD)}
    )
    assert older_view is not None and older_view["sessions"][0]["events"] == []
    clock.advance(1000)
    second = event(clock, page="next")
    outcome = sessions.apply_event(older_view, "b1", second, redis_ingest.limits)
    put_fields(redis_url, "b1", {"sessions": orjson.dumps(outcome.guest["sessions"])})  # as it wrote them
    guest = (await redis_ingest.profiles.read("b1")).guest
    assert guest is not None
    assert [e["ref"] for e in guest["sessions"][0]["events"]] == [first.ref, second.ref]
    # The next write by the current code moves them all apart again, in order.
    clock.advance(1000)
    third = event(clock, page="last")
    await redis_ingest.record(third)
    fields = raw_fields(redis_url, "b1")
    assert orjson.loads(fields["sessions"])[0]["events"] == []
    stored = orjson.loads(fields[EVENTS_FIELD + guest["sessions"][0]["ref"]])
    assert [e["ref"] for e in stored] == [first.ref, second.ref, third.ref]


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("sum(guest.sessions.pages)", False),
        ("guest.facts.order_count > 2 and guest.facts.sessions_30d < 4", False),
        ("guest . sessions . pages", False),
        ("count(guest.sessions[1].events)", True),
        ('guest.sessions[status = "open"]', True),
        ("for s in guest.sessions return s.pages", True),
        ("guest", True),
        ("{g: guest, n: g.facts.n}", True),
        ('get value(guest.sessions[1], "events")', True),
    ],
)
def test_which_feel_may_read_session_events(text: str, reads: bool) -> None:
    assert reads_session_events({"nodes": [{"id": "x", "kind": "expression", "expr": text}]}) is reads


def test_labels_test_cases_and_lua_are_not_what_a_model_reads() -> None:
    script = {"id": "s", "kind": "script", "source": "-- the guest's events", "inputs": ["guest.facts"],
              "description": "reads the guest"}  # fmt: skip
    model = {"name": "guest events", "description": "all about the guest", "nodes": [script],
             "tests": [{"name": "a guest", "input": {"guest": {"sessions": [{"events": []}]}}}]}  # fmt: skip
    assert reads_session_events(model) is False
    assert reads_session_events({**model, "nodes": [{**script, "inputs": ["guest"]}]}) is True
    assert reads_session_events({"targeting": "guest.facts.vip = true"}) is False
    assert reads_session_events({"targeting": "count(guest.sessions) > 3"}) is True


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("guest.facts.vip", False),
        ("guest . attributes . country", False),
        ("count(guest.sessions)", False),
        ('guest.assignments["x"].arm', True),
        ('get value(guest, "assignments")', True),
        ("guest", True),
        ("{g: guest, n: g.facts.n}", True),
    ],
)
def test_which_feel_may_read_the_guests_assignments(text: str, reads: bool) -> None:
    assert reads_assignments({"nodes": [{"id": "x", "kind": "expression", "expr": text}]}) is reads
    assert reads_assignments({"targeting": text}) is reads


MODEL_WITHOUT = {"nodes": [{"id": "answer", "kind": "output", "value": {"pages": "count(guest.sessions.ref)"}}]}
MODEL_WITH = {"nodes": [{"id": "answer", "kind": "output", "value": {"seen": "count(guest.sessions[1].events)"}}]}


@pytest.mark.parametrize(
    ("model", "expected", "reads"), [(MODEL_WITH, {"seen": 3}, True), (MODEL_WITHOUT, {"pages": 1}, False)]
)
def test_decisions_read_events_exactly_when_the_model_may(
    client: TestClient, model: dict[str, Any], expected: dict[str, Any], reads: bool
) -> None:
    assert client.put("/v1/models/m?publish=1", json=model, headers=ADMIN).status_code == 201
    for i in range(3):
        body = {"type": "VIEW", "channel": "WEB", "browser_id": "b1", "pos": "default", "language": "EN",
                "currency": "EUR", "page": f"p{i}"}  # fmt: skip
        assert client.post("/v1/events", json=body, headers=PUBLIC).status_code in (200, 201, 202)
    reply = client.post("/v1/decide/m", json={"guest": {"browser_id": "b1"}, "context": {}}, headers=PUBLIC)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"] == expected
    rt = client.app.state.rt  # type: ignore[attr-defined]
    plan, shadow = client.portal.call(rt.registry.production, "m")  # type: ignore[union-attr]
    assert guest_needs(rt, plan, shadow).session_events is reads


@pytest.mark.parametrize(
    ("targeting", "reads"), [("count(guest.sessions) > 0", True), ('context.channel = "WEB"', False)]
)
def test_an_experiments_targeting_decides_for_the_models_that_choose_in_it(
    client: TestClient, targeting: str, reads: bool
) -> None:
    experiment = {"status": "running", "arms": [{"id": "a"}, {"id": "b"}], "control": "a", "targeting": targeting}
    assert client.put("/v1/experiments/x", json=experiment, headers=ADMIN).status_code in (200, 201)
    model = {"nodes": [{"id": "hero", "kind": "experiment", "experiment": "x"},
                       {"id": "answer", "kind": "output", "value": {"arm": "hero.arm"}}]}  # fmt: skip
    assert client.put("/v1/models/m?publish=1", json=model, headers=ADMIN).status_code == 201
    rt = client.app.state.rt  # type: ignore[attr-defined]
    plan, shadow = client.portal.call(rt.registry.production, "m")  # type: ignore[union-attr]
    assert not plan.reads_session_events and plan.experiment_keys == ("x",)
    assert guest_needs(rt, plan, shadow).session_events is reads


@pytest.mark.parametrize(
    ("mode", "targeting", "answer", "experiments"),
    [
        ("fixed", 'context.channel = "WEB"', "hero.arm", ("x",)),
        ("bandit", 'context.channel = "WEB"', "hero.arm", ()),  # a bandit draws per epoch: nothing kept to read
        ("fixed", 'guest.assignments["y"].arm = "b"', "hero.arm", None),
        ("bandit", 'context.channel = "WEB"', 'guest.assignments["y"].arm', None),
    ],
)
def test_a_decision_reads_the_assignments_of_its_fixed_splits_unless_something_reads_them_all(
    client: TestClient, mode: str, targeting: str, answer: str, experiments: tuple[str, ...] | None
) -> None:
    experiment = {"status": "running", "arms": [{"id": "a"}, {"id": "b"}], "control": "a", "targeting": targeting,
                  "allocation": {"mode": mode}}  # fmt: skip
    assert client.put("/v1/experiments/x", json=experiment, headers=ADMIN).status_code in (200, 201)
    model = {"nodes": [{"id": "hero", "kind": "experiment", "experiment": "x"},
                       {"id": "answer", "kind": "output", "value": {"arm": answer}}]}  # fmt: skip
    assert client.put("/v1/models/m?publish=1", json=model, headers=ADMIN).status_code == 201
    rt = client.app.state.rt  # type: ignore[attr-defined]
    plan, shadow = client.portal.call(rt.registry.production, "m")  # type: ignore[union-attr]
    assert guest_needs(rt, plan, shadow).experiments == experiments


GAP_MS = 21 * 60 * 1000  # past the default 20-minute session timeout: the next event opens a new session


async def test_an_event_rewrites_its_own_sessions_events_and_leaves_closed_ones_as_stored(
    redis_ingest: Ingest, redis_url: str, clock: ManualClock
) -> None:
    for i in range(3):
        await redis_ingest.record(event(clock, page=f"a{i}"))
        clock.advance(1000)
    clock.advance(GAP_MS)
    await redis_ingest.record(event(clock, page="b0"))  # closes the first session, opens a second
    before = raw_fields(redis_url, "b1")
    first, second = (s["ref"] for s in orjson.loads(before["sessions"]))
    # An event's read leaves the closed session's events unparsed, and its commit writes them back as they were.
    snap = (await redis_ingest.profiles.read_many(["b1"], closed_events=False))[0]
    assert snap.guest is not None
    closed, open_ = snap.guest["sessions"]
    assert type(closed["events"]) is StoredEvents and closed["events"].raw == before[EVENTS_FIELD + first]
    assert [e["page"] for e in open_["events"]] == ["b0"]
    clock.advance(1000)
    nxt = event(clock, page="b1")
    sessions.apply_event(snap.guest, "b1", nxt, redis_ingest.limits)
    changed = written_parts(_commit_args(snap.guest, snap.rev, (nxt.ref,), clock(), (), snap.stored))
    assert EVENTS_FIELD + second in changed and EVENTS_FIELD + first not in changed
    # Through the ingest path: the closed session's field keeps its bytes, and every event reads back in order.
    await redis_ingest.record(nxt)
    after = raw_fields(redis_url, "b1")
    assert after[EVENTS_FIELD + first] == before[EVENTS_FIELD + first]
    guest = (await redis_ingest.profiles.read("b1")).guest
    assert guest is not None
    assert [[e["page"] for e in s["events"]] for s in guest["sessions"]] == [["a0", "a1", "a2"], ["b0", "b1"]]


async def test_a_session_that_keeps_no_events_loses_its_field(redis_url: str, clock: ManualClock) -> None:
    store = RedisStore(redis_url)
    try:
        ingest = make_ingest(store, clock, Limits(max_closed_session_events=2, max_sessions=2))
        for page in ("a0", "a1", "a2"):
            await ingest.record(event(clock, page=page))
            clock.advance(1000)
        for page in ("b0", "c0"):
            clock.advance(GAP_MS)
            await ingest.record(event(clock, page=page))  # each closes the last session (the budget trims)
        fields = raw_fields(redis_url, "b1")
        refs = [s["ref"] for s in orjson.loads(fields["sessions"])]
        assert len(refs) == 2  # the first session was dropped (max_sessions): its field with it
        assert sorted(f for f in fields if f.startswith(EVENTS_FIELD)) == sorted(EVENTS_FIELD + r for r in refs)
        guest = (await ingest.profiles.read("b1")).guest
        assert guest is not None
        assert [[e["page"] for e in s["events"]] for s in guest["sessions"]] == [["b0"], ["c0"]]
    finally:
        await store.close()


async def test_a_closed_session_trimmed_to_no_events_loses_its_field(redis_url: str, clock: ManualClock) -> None:
    store = RedisStore(redis_url)
    try:
        ingest = make_ingest(store, clock, Limits(max_closed_session_events=0))
        await ingest.record(event(clock, page="a0"))
        first = orjson.loads(raw_fields(redis_url, "b1")["sessions"])[0]["ref"]
        assert EVENTS_FIELD + first in raw_fields(redis_url, "b1")
        clock.advance(GAP_MS)
        await ingest.record(event(clock, page="b0"))  # closes the first; the budget keeps none of its events
        fields = raw_fields(redis_url, "b1")
        assert EVENTS_FIELD + first not in fields
        stored = orjson.loads(fields["sessions"])
        assert stored[0]["events"] == [] and stored[0]["event_count"] == 1  # the count stays, for models
    finally:
        await store.close()
