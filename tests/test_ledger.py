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
