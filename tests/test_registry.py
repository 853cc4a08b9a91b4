"""The registry's caches: a publish in one process reaches another without waiting for the TTL."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from engine.registry import Registry
from engine.store.redis import RedisStore


def model(n: int) -> bytes:
    return orjson.dumps({"nodes": [{"id": "answer", "kind": "output", "value": {"v": str(n)}}]})


async def test_peer_publish_invalidates_cached_pointer(redis_url: str) -> None:
    a, b = RedisStore(redis_url), RedisStore(redis_url)
    # A TTL far longer than the test: only the change notice can explain b seeing the new version.
    ra, rb = Registry(a, pointer_ttl_s=60), Registry(b, pointer_ttl_s=60)
    follower = asyncio.create_task(rb.follow_changes())
    try:
        for n in range(2):
            await ra.upload("m", model(n), "application/json")
        await ra.set_state("m", 1, "production")
        assert (await rb.production("m"))[0].version == 1
        await asyncio.sleep(0.05)  # let the subscriber attach before the change it must see
        await ra.set_state("m", 2, "production")
        for _ in range(200):
            if (await rb.production("m"))[0].version == 2:
                break
            await asyncio.sleep(0.01)
        assert (await rb.production("m"))[0].version == 2
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await a.close()
        await b.close()


async def test_without_change_notices_a_peer_sees_a_publish_within_the_ttl(redis_url: str) -> None:
    # No follow_changes: the TTL is the backstop, and the plans a decision resolved expire with it.
    a, b = RedisStore(redis_url), RedisStore(redis_url)
    ra, rb = Registry(a, pointer_ttl_s=60), Registry(b, pointer_ttl_s=0.2)
    try:
        for n in range(3):
            await ra.upload("t", model(n), "application/json")
        await ra.set_state("t", 1, "production")
        await ra.set_state("t", 2, "test")
        plan, shadow = await rb.production("t")
        assert (plan.version, shadow and shadow.version) == (1, 2)
        assert await rb.production("t") == (plan, shadow)  # served from the cache: the same compiled plans
        await ra.set_state("t", 3, "production")
        assert (await rb.production("t"))[0].version == 1  # within the TTL, b has not looked yet
        await asyncio.sleep(0.25)
        plan, shadow = await rb.production("t")
        assert (plan.version, shadow and shadow.version) == (3, 2)
        rb.forget("t")  # as a change notice does
        await ra.set_state("t", 2, "production")
        assert (await rb.production("t"))[0].version == 2
    finally:
        await a.close()
        await b.close()


async def test_concurrent_publishes_keep_one_production(redis_url: str) -> None:
    store = RedisStore(redis_url)
    reg = Registry(store)
    try:
        for n in range(6):
            await reg.upload("m", model(n), "application/json")
        await asyncio.gather(*(reg.set_state("m", v, "production") for v in range(1, 7)))
        versions = await store.model_list_versions("m")
        states = [v["state"] for v in versions]
        assert states.count("production") == 1
        pointers = await store.model_pointers("m")
        assert pointers is not None and states[pointers.production - 1] == "production"  # type: ignore[operator]
        assert sorted(pointers.history) == [1, 2, 3, 4, 5, 6]
    finally:
        await store.close()
