"""The experiment ledger on a real Redis: a reward that outruns its exposure is parked, never dropped."""

from __future__ import annotations

import time

from engine.ledger import Exposure, RedisLedger
from engine.store.redis import RedisStore


async def test_reward_before_exposure_is_parked_then_counted_once(redis_url: str) -> None:
    store = RedisStore(redis_url)
    ledger = RedisLedger(store.client)
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
