"""The experiment ledger on a real Redis: a reward that outruns its exposure is parked, never dropped."""

from __future__ import annotations

import time

from engine.ledger import Exposure, RedisLedger
from engine.store.redis import RedisStore


async def test_reward_before_exposure_is_parked_then_counted_once(redis_url: str) -> None:
    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    try:
        # Process B receives the reward while process A still holds the exposure in its flush buffer.
        assert (await ledger.claim("exp", "d1", now_ms, 1.0))[0] == "parked"
        assert (await ledger.claim("exp", "d1", now_ms, 1.0))[0] == "parked"  # a retry parks nothing more
        assert (await ledger.claim("exp", "nobody", now_ms))[0] == "unknown"  # no value: nothing to keep
        await ledger.expose([Exposure("exp", "a", "0", "d1", "d1", None, now_ms, 3600, False)])
        (tally,) = await ledger.totals("exp", ("a",))
        assert (tally.exposures, tally.rewarded) == (1, 1)
        assert (await ledger.claim("exp", "d1", now_ms, 1.0))[0] == "duplicate"
        # An ordinary reward after its exposure is counted directly.
        await ledger.expose([Exposure("exp", "a", "0", "d2", "d2", None, now_ms, 3600, False)])
        assert (await ledger.claim("exp", "d2", now_ms, 1.0))[0] == "counted"
    finally:
        await store.close()


async def test_an_event_commit_racing_an_exposure_keeps_the_guests_assignment(redis_url: str) -> None:
    """Regression: an event read the guest, the exposure flusher wrote its assignment, then the event's
    commit rewrote ``assignments`` from its stale read — the goal event that followed found no assignment
    and its reward was lost (tests/test_experiments_api.py, flaky once the exposure writes got faster)."""
    from engine.profiles_redis import RedisProfiles

    store = RedisStore(redis_url)
    ledger, profiles = RedisLedger(store), RedisProfiles(store)
    now_ms = int(time.time() * 1000)
    try:
        for ref, seen_before in (("new-guest", False), ("known-guest", True)):
            if seen_before:
                await profiles.commit(
                    ref, {"ref": ref, "sessions": [], "assignments": {}}, 0, token=None, now_ms=now_ms
                )
            snap = await profiles.read(ref)  # the event's read …
            await ledger.expose([Exposure("exp", "b", "0", "d-" + ref, "d-" + ref, ref, now_ms, 3600, False)])
            guest = {"ref": ref, "sessions": [{"id": "s1"}], "assignments": {"older": {"arm": "a"}}}
            await profiles.commit(ref, guest, snap.rev, token="event-1", now_ms=now_ms)  # … then its commit
            after = await profiles.read(ref)
            assert after.guest is not None and after.guest["sessions"] == [{"id": "s1"}]
            assert after.guest["assignments"]["exp"]["arm"] == "b", ref
            assert after.guest["assignments"]["older"] == {"arm": "a"}  # the writer's own entries stay too
    finally:
        await store.close()


async def test_a_batch_writes_its_guests_assignments_as_fields_in_one_call_in_order(redis_url: str) -> None:
    """A flush records every guest's assignment as a field of its own (``as:<experiment>``), with one script call
    (per 64 guests): a guest's entries apply in the order served, so a bandit's last exposure is the last touch and
    a fixed split keeps the guest's first."""
    import orjson
    import redis as sync_redis

    from engine import keys
    from engine.ledger import ASSIGN_BATCH

    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    client = sync_redis.Redis.from_url(redis_url)
    now_ms = int(time.time() * 1000)

    def calls(command: str) -> int:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))

    try:
        await ledger.expose([Exposure("fx", "kept", "1", "g0", "seed", "g0", now_ms, 3600, True)])
        batch = [
            Exposure("bx", "ab"[i % 2], "1.0", f"d{i}", f"d{i}", f"g{i % 5}", now_ms + i, 3600, False)
            for i in range(20)
        ]
        batch += [
            Exposure("fx", arm, "1", g, f"s-{g}-{arm}", g, now_ms, 3600, True) for g in ("g0", "g1") for arm in "xy"
        ]
        anonymous = [x._replace(experiment="a" + x.experiment, guest_ref=None) for x in batch]
        before = calls("evalsha"), calls("hsetnx")
        await ledger.expose(anonymous)
        middle = calls("evalsha"), calls("hsetnx")
        await ledger.expose(batch)
        assert calls("evalsha") - middle[0] == middle[0] - before[0] + 1  # one call for all 24 assignments
        assert calls("hsetnx") - middle[1] == 4 + (middle[1] - before[1])  # the fixed split's four: a field set each
        for g in range(5):
            last = max(i for i in range(20) if i % 5 == g)
            expected = {
                "arm": "ab"[last % 2],
                "epoch": "1.0",
                "unit": f"d{last}",
                "per": "decision",
                "at_ms": now_ms + last,
            }
            assert await ledger.assignment(f"g{g}", "bx") == expected
            assert orjson.loads(client.hget(keys.guest(f"g{g}"), "as:bx") or b"null") == expected
            assert not client.hexists(keys.guest(f"g{g}"), "assignments")  # no map of them all any more
        assert ((await ledger.assignment("g0", "fx")) or {}).get("arm") == "kept"  # written before: kept
        assert ((await ledger.assignment("g1", "fx")) or {}).get("arm") == "x"  # the first of the batch: kept
        # More guests than one call takes: several calls, every guest written.
        many = [
            Exposure("bx", "a", "1.0", f"m{i}", f"m{i}", f"m{i}", now_ms, 3600, False) for i in range(ASSIGN_BATCH + 5)
        ]
        await ledger.expose(many)
        assert all([await ledger.assignment(x.guest_ref or "", "bx") for x in many])
    finally:
        client.close()
        await store.close()


async def test_a_map_of_assignments_from_before_the_fields_is_read_under_them_and_folded_in(redis_url: str) -> None:
    """A rolling deploy: processes from before the per-experiment fields kept a guest's assignments in one JSON map
    (``assignments``). Readers see its entries under the fields (a field wins); the guest's next event commit moves
    them into fields, with any an old process added to the map since the read, and deletes the map."""
    import orjson
    import redis as sync_redis

    from engine import keys
    from engine.profiles_redis import RedisProfiles
    from engine.store import GuestLookup

    store = RedisStore(redis_url)
    ledger, profiles = RedisLedger(store), RedisProfiles(store)
    client = sync_redis.Redis.from_url(redis_url)
    key = keys.guest("legacy")
    old = {"arm": "a", "epoch": "1", "unit": "legacy", "per": "guest", "at_ms": 1}
    try:
        client.hset(key, mapping={
            "profile": orjson.dumps({"ref": "legacy"}), "rev": 3,
            "assignments": orjson.dumps({"old": old, "both": {"arm": "from-map"}}),
            "as:both": orjson.dumps({"arm": "from-field"}),
        })  # fmt: skip
        expected = {"old": old, "both": {"arm": "from-field"}}
        assert ((await store.guest_load(GuestLookup(guest_ref="legacy"))) or {}).get("assignments") == expected
        assert await ledger.assignment("legacy", "old") == old
        assert await ledger.assignment("legacy", "both") == {"arm": "from-field"}
        snap = await profiles.read("legacy")
        assert snap.guest is not None and snap.guest["assignments"] == expected
        # An old process adds an entry to the map between the event's read and its commit.
        client.hset(key, "assignments", orjson.dumps({"old": old, "both": {"arm": "from-map"}, "late": {"arm": "l"}}))
        snap.guest["attributes"] = {"seen": True}
        assert (
            await profiles.commit("legacy", snap.guest, snap.rev, token="e1", now_ms=1, stored=snap.stored)
        ).name == "OK"
        raw = {k.decode(): orjson.loads(v) for k, v in client.hgetall(key).items() if k.startswith(b"as:")}
        assert raw == {"as:old": old, "as:both": {"arm": "from-field"}, "as:late": {"arm": "l"}}
        assert not client.hexists(key, "assignments")
        after = await profiles.read("legacy")
        assert after.guest is not None and after.guest["attributes"] == {"seen": True}
        assert after.guest["assignments"] == {**expected, "late": {"arm": "l"}}
    finally:
        client.close()
        await store.close()


async def test_a_decision_reads_the_assignments_of_its_experiments_or_all(redis_url: str) -> None:
    """The decide read asks for the assignment fields of the experiments a model chooses in (plus the map from
    before the fields); a model that may read the guest's whole ``assignments`` reads them all."""
    import orjson
    import redis as sync_redis

    from engine import keys
    from engine.store import GuestLookup

    store = RedisStore(redis_url)
    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.hset(keys.guest("reads"), mapping={
            "profile": orjson.dumps({"ref": "reads"}), "assignments": orjson.dumps({"m": {"arm": "map"}}),
            **{f"as:{e}": orjson.dumps({"arm": e}) for e in ("x", "y", "z")},
        })  # fmt: skip
        lookup = GuestLookup(guest_ref="reads")
        some = await store.guest_load(lookup, session_events=False, experiments=("x", "z", "absent"))
        assert (some or {}).get("assignments") == {"m": {"arm": "map"}, "x": {"arm": "x"}, "z": {"arm": "z"}}
        every = await store.guest_load(lookup, session_events=False, experiments=None)
        assert set((every or {}).get("assignments", {})) == {"m", "x", "y", "z"}
        none = await store.guest_load(lookup, session_events=False, experiments=())
        assert (none or {}).get("assignments") == {"m": {"arm": "map"}}
    finally:
        client.close()
        await store.close()


async def test_a_batch_adds_up_per_arm_and_epoch(redis_url: str) -> None:
    # A flush sums new exposures per (arm, epoch) into one tally call; the totals must be what one call per
    # exposure gave: repeats of a unit count once, a parked reward is counted with its exposure.
    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    try:
        assert (await ledger.claim("sum", "u3", now_ms, 2.5))[0] == "parked"
        units = [("a", "0", "u1"), ("a", "0", "u2"), ("b", "0", "u3"), ("a", "1", "u4"), ("a", "0", "u1")]
        await ledger.expose([Exposure("sum", arm, epoch, u, u, None, now_ms, 3600, False) for arm, epoch, u in units])
        a, b = await ledger.totals("sum", ("a", "b"))
        assert (a.exposures, a.rewarded, b.exposures, b.rewarded, b.reward_sum) == (3, 0, 1, 1, 2.5)
        by_epoch = await ledger.by_epoch("sum", ("a", "b"))
        assert [by_epoch[e][arm].exposures for e, arm in (("0", "a"), ("1", "a"), ("0", "b"))] == [2, 1, 1]
    finally:
        await store.close()


# --- decisions' units filed by minute -------------------------------------------------------------------------


def _bandit(decision_id: str, at_ms: int, arm: str = "a", window_s: int = 3600) -> Exposure:
    return Exposure("mx", arm, "1.0", decision_id, decision_id, None, at_ms, window_s, False)


async def test_a_decisions_unit_is_a_field_of_its_minutes_hash(redis_url: str) -> None:
    import redis as sync_redis

    from engine.ids import timed_id
    from engine.ledger import MINUTE_MS, filed

    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    ids = [timed_id(now_ms - 5) for _ in range(40)]
    try:
        await ledger.expose([_bandit(d, now_ms - 5, arm="ab"[i % 2]) for i, d in enumerate(ids)])
        a, b = await ledger.totals("mx", ("a", "b"))
        assert (a.exposures, b.exposures) == (20, 20)
        client = sync_redis.Redis.from_url(redis_url)
        unit_keys = [k.decode() for k in client.keys("arb:*") if b"tally" not in k]
        # No key per decision: forty units went into the minute's shards.
        assert unit_keys and len(unit_keys) <= 8 and all(k.startswith("arb:{xm:mx:") for k in unit_keys)
        assert sum(client.hlen(k) for k in unit_keys) == 40
        place = filed("mx", ids[0], now_ms)
        assert place is not None and place.key in unit_keys and client.hexists(place.key, place.field)
        # It lives for its window and grace, and not much more.
        ttl_ms = client.pttl(place.key)
        assert 3600_000 + 3600_000 < ttl_ms <= 3600_000 + 3600_000 + MINUTE_MS
        client.close()

        statuses = [(await ledger.claim("mx", d, now_ms, 1.0, per_decision=True))[0] for d in ids[:3]]
        assert statuses == ["counted"] * 3
        assert (await ledger.claim("mx", ids[0], now_ms, 1.0, per_decision=True))[0] == "duplicate"
        assert await ledger.claim("mx", ids[3], now_ms + 3600_000 + 1, 1.0, per_decision=True) == ("late", "b", "1.0")
        a, b = await ledger.totals("mx", ("a", "b"))
        assert (a.rewarded, b.rewarded) == (0, 0)  # claims mark units; add_reward counts (rewards.reward_unit)
    finally:
        await store.close()


async def test_a_reward_before_its_decisions_exposure_is_parked_in_the_minute(redis_url: str) -> None:
    from engine.ids import timed_id

    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    early, other, old = timed_id(now_ms), timed_id(now_ms), timed_id(now_ms - 120_000)
    try:
        assert (await ledger.claim("mx", early, now_ms, 2.0, per_decision=True))[0] == "parked"
        assert (await ledger.claim("mx", early, now_ms, 2.0, per_decision=True))[0] == "parked"  # a retry
        assert (await ledger.claim("mx", other, now_ms, per_decision=True))[0] == "unknown"  # no value to keep
        # A decision two minutes old whose unit is not open never will be: nothing parked for it.
        assert (await ledger.claim("mx", old, now_ms, 2.0, per_decision=True))[0] == "unknown"
        await ledger.expose([_bandit(early, now_ms), _bandit(other, now_ms)])
        (tally,) = await ledger.totals("mx", ("a",))
        assert (tally.exposures, tally.rewarded, tally.reward_sum) == (2, 1, 2.0)
        assert (await ledger.claim("mx", early, now_ms, 2.0, per_decision=True))[0] == "duplicate"
        assert (await ledger.claim("mx", other, now_ms, 1.0, per_decision=True))[0] == "counted"
        # An exposure delivered twice opens its unit once.
        await ledger.expose([_bandit(other, now_ms)])
        (tally,) = await ledger.totals("mx", ("a",))
        assert tally.exposures == 2
    finally:
        await store.close()


async def test_one_call_opens_the_units_of_every_minute_shard_a_flush_touches(redis_url: str) -> None:
    """On one server a flush opens its units with one script call whatever shards and minutes they fall in, and
    each exposure gets its own reply back: the rewards parked for some of them count with their own arm."""
    import redis as sync_redis

    from engine.ids import timed_id
    from engine.ledger import MINUTE_MS, filed

    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    client = sync_redis.Redis.from_url(redis_url)
    now_ms = int(time.time() * 1000)
    ids = [timed_id(now_ms - (MINUTE_MS if i % 3 == 0 else 0)) for i in range(48)]
    shards = {p.key for p in (filed("ms", d, now_ms) for d in ids) if p is not None}
    try:
        assert len(shards) > 8  # several shards of two minutes
        parked = ids[5::7]
        for d in parked:
            assert (await ledger.claim("ms", d, now_ms, 3.0, per_decision=True))[0] == "parked"
        calls = int(client.info("commandstats")["cmdstat_evalsha"]["calls"])
        batch = [Exposure("ms", "ab"[i % 2], "1.0", d, d, None, now_ms, 3600, False) for i, d in enumerate(ids)]
        await ledger.expose(batch)
        tallies = len({x.arm for x in batch}) + len(parked)  # one per arm and epoch, one per parked reward
        assert int(client.info("commandstats")["cmdstat_evalsha"]["calls"]) - calls == 1 + tallies
        a, b = await ledger.totals("ms", ("a", "b"))
        rewarded_b = sum(1 for d in parked if ids.index(d) % 2)
        assert (a.exposures, b.exposures) == (24, 24)
        assert (a.rewarded, b.rewarded) == (len(parked) - rewarded_b, rewarded_b)
        assert [(await ledger.claim("ms", d, now_ms, 1.0, per_decision=True))[0] for d in ids[:7]] == [
            "duplicate" if d in parked else "counted" for d in ids[:7]
        ]
    finally:
        client.close()
        await store.close()


async def test_a_split_decision_points_at_its_guests_unit(redis_url: str) -> None:
    from engine.ids import timed_id

    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    # A guest ref that happens to be a timed id is still a guest: only ``per_decision`` sends a claim to a minute.
    guest = timed_id(now_ms)
    first, second = timed_id(now_ms), timed_id(now_ms)
    try:
        split = [Exposure("ab", "b", "3", guest, d, guest, now_ms, 3600, True) for d in (first, second)]
        await ledger.expose(split)
        (tally,) = await ledger.totals("ab", ("b",))
        assert tally.exposures == 1  # one guest, one unit
        assert await ledger.unit_of("ab", second) == (guest, False)
        assert await ledger.unit_of("ab", timed_id(now_ms)) != (guest, False)  # an unknown decision is its own
        assert (await ledger.claim("ab", guest, now_ms, 1.0))[0] == "counted"
        assert (await ledger.claim("ab", guest, now_ms, 1.0))[0] == "duplicate"
        assert (await ledger.assignment(guest, "ab") or {}).get("per") == "guest"
    finally:
        await store.close()


async def test_units_of_decision_ids_from_before_timed_ids_are_still_found(redis_url: str) -> None:
    """Upgrading while an experiment runs: decisions served by the old version have random ids and units with a
    key of their own (``arb:{xu:…}``); their rewards must still count."""
    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    legacy = "5f0c4e7d2a9b4c1e8f3a6b2d9c0e1f47"  # random hex, not a recent timed id
    try:
        await ledger.expose([_bandit(legacy, now_ms)])
        assert await ledger.unit_of("mx", legacy) == (legacy, True)
        assert (await ledger.claim("mx", legacy, now_ms, 1.0, per_decision=True))[0] == "counted"
        assert (await ledger.claim("mx", legacy, now_ms, 1.0))[0] == "duplicate"  # an old assignment entry's way
    finally:
        await store.close()


async def test_the_embedded_ledger_forgets_units_past_their_window() -> None:
    from engine.ledger import GUEST_UNIT_TTL_S, UNIT_GRACE_S, MemoryLedger
    from engine.store.memory import MemoryStore

    ledger = MemoryLedger(MemoryStore())
    now_ms = int(time.time() * 1000)
    await ledger.expose(
        [_bandit("d-old", now_ms, window_s=60), Exposure("ab", "a", "1", "g", "d-g", None, now_ms, 60, True)]
    )
    assert (await ledger.claim("mx", "d-old", now_ms + 61_000, 1.0))[0] == "late"
    later_ms = now_ms + (60 + UNIT_GRACE_S) * 1000 + 1
    assert (await ledger.claim("mx", "d-old", later_ms, 1.0))[0] == "unknown"
    # A later exposure sweeps what expired (a unit a day old, the guest's unit is kept for months).
    await ledger.expose([_bandit("d-new", later_ms + 60_000)])
    assert ("mx", "d-old") not in ledger.units and ("ab", "g") in ledger.units
    assert ledger.units[("ab", "g")]["expires_ms"] == now_ms + (60 + GUEST_UNIT_TTL_S) * 1000


async def test_a_reward_before_a_split_decisions_exposure_counts_for_its_guest(redis_url: str) -> None:
    """The reward reaches another process before the serving process wrote the exposure: it cannot know yet that
    the decision's unit is its guest, so it parks it under the decision; the exposure counts it for the guest."""
    from engine.ids import timed_id

    store = RedisStore(redis_url)
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    decision = timed_id(now_ms)
    try:
        unit, per_decision = await ledger.unit_of("ab", decision)
        assert (unit, per_decision) == (decision, True)  # nothing written yet: the decision is all it knows
        assert (await ledger.claim("ab", unit, now_ms, 1.0, per_decision=per_decision))[0] == "parked"
        await ledger.expose([Exposure("ab", "b", "3", "guest-7", decision, "guest-7", now_ms, 3600, True)])
        (tally,) = await ledger.totals("ab", ("b",))
        assert (tally.exposures, tally.rewarded, tally.reward_sum) == (1, 1, 1.0)
        # Delivered again, the reward now finds the guest's unit, already rewarded.
        unit, per_decision = await ledger.unit_of("ab", decision)
        assert (unit, per_decision) == ("guest-7", False)
        assert (await ledger.claim("ab", unit, now_ms, 1.0, per_decision=per_decision))[0] == "duplicate"
        # The exposure written again (a retried flush) counts nothing more.
        await ledger.expose([Exposure("ab", "b", "3", "guest-7", decision, "guest-7", now_ms, 3600, True)])
        (tally,) = await ledger.totals("ab", ("b",))
        assert (tally.exposures, tally.rewarded) == (1, 1)
    finally:
        await store.close()
