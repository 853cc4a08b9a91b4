"""The auto-pipelined connection (engine/store/wire.py) against a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from engine.store.wire import FAILURES_TO_OPEN, CircuitOpen, Lua, Wire, pairs
from tests.conftest import running_redis


@pytest.fixture
async def wire(redis_url: str):  # type: ignore[no-untyped-def]
    w = Wire.from_url(redis_url, timeout_ms=1000)
    assert w is not None
    yield w
    await w.close()


async def test_replies_keep_their_types(wire: Wire) -> None:
    assert await wire.call("SET", "k", "v") == b"OK"
    assert await wire.call("GET", "k") == b"v"
    assert await wire.call("GET", "absent") is None
    assert await wire.call("INCRBY", "n", 41) == 41
    await wire.call("HSET", "h", "a", "1", "b", b"\x00\xff")
    assert pairs(await wire.call("HGETALL", "h")) == {b"a": b"1", b"b": b"\x00\xff"}
    assert pairs(await wire.call("HGETALL", "absent")) == {}


async def test_concurrent_callers_each_get_their_own_reply(wire: Wire) -> None:
    # Issued in one loop iteration, so they share writes; FIFO matching must still hand each caller the
    # reply to its own command.
    keys = [f"key:{i}" for i in range(500)]
    await wire.call_many([("SET", k, k.upper()) for k in keys])
    replies = await asyncio.gather(*(wire.call("GET", k) for k in keys))
    assert replies == [k.upper().encode() for k in keys]
    counts = await asyncio.gather(*(wire.call("INCR", "counter") for _ in range(300)))
    assert sorted(counts) == list(range(1, 301))


async def test_batches_and_single_commands_interleaved_each_get_their_own_replies(wire: Wire) -> None:
    # A batch waits on one future for all its replies; singles issued around it in the same loop iteration
    # share the write, and the replies must still split at the right places.
    await wire.call_many([("SET", f"b:{i}", i) for i in range(50)])
    batch = [("GET", f"b:{i}") for i in range(50)]
    got = await asyncio.gather(
        wire.call("GET", "b:7"),
        wire.call_many(batch),
        wire.call("GET", "b:9"),
        wire.call_many(batch[:3]),
        wire.call_many([]),
    )
    assert got == [b"7", [str(i).encode() for i in range(50)], b"9", [b"0", b"1", b"2"], []]


async def test_a_cancelled_batch_does_not_shift_replies(redis_url: str, wire: Wire) -> None:
    await wire.call("SET", "after", "right")
    pauser = redis.Redis.from_url(redis_url)
    try:
        pauser.execute_command("CLIENT", "PAUSE", 200, "ALL")
        slow = asyncio.ensure_future(wire.call_many([("GET", "absent"), ("INCR", "n"), ("GET", "absent")]))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert await wire.call_many([("GET", "after"), ("GET", "n")]) == [b"right", b"1"]
    finally:
        pauser.close()


async def test_error_replies_raise_and_leave_the_connection_aligned(wire: Wire) -> None:
    await wire.call("SET", "s", "text")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await wire.call("HGETALL", "s")
    with pytest.raises(ResponseError, match="not an integer"):
        await wire.call_many([("SET", "a", "1"), ("INCR", "s"), ("SET", "b", "2")])
    assert await wire.call_many([("GET", "a"), ("GET", "b"), ("GET", "s")]) == [b"1", b"2", b"text"]


async def test_large_replies_arriving_in_pieces(wire: Wire) -> None:
    big = b"x" * 3_000_000
    await wire.call("SET", "big", big)
    got = await asyncio.gather(wire.call("GET", "big"), wire.call("STRLEN", "big"), wire.call("GET", "big"))
    assert got == [big, len(big), big]


async def test_a_cancelled_caller_does_not_shift_replies(redis_url: str, wire: Wire) -> None:
    await wire.call("SET", "after", "right")
    pauser = redis.Redis.from_url(redis_url)
    try:
        pauser.execute_command("CLIENT", "PAUSE", 200, "ALL")
        slow = asyncio.ensure_future(wire.call("GET", "absent"))
        await asyncio.sleep(0.05)
        slow.cancel()
        assert await wire.call("GET", "after") == b"right"
    finally:
        pauser.close()


async def test_a_reply_later_than_the_timeout_fails_in_flight_commands_then_reconnects(redis_url: str) -> None:
    wire = Wire.from_url(redis_url, timeout_ms=100)
    assert wire is not None
    pauser = redis.Redis.from_url(redis_url)
    try:
        await wire.call("SET", "k", "v")
        pauser.execute_command("CLIENT", "PAUSE", 400, "ALL")
        results = await asyncio.gather(wire.call("GET", "k"), wire.call("GET", "k"), return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results), results
        pauser.execute_command("CLIENT", "UNPAUSE")
        assert await wire.call("GET", "k") == b"v"
    finally:
        pauser.close()
        await wire.close()


async def test_scripts_load_with_their_first_call_on_each_connection(redis_url: str) -> None:
    lua = Lua.of("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert lua.sha == hashlib.sha1(lua.source).hexdigest()
    first = Wire.from_url(redis_url, timeout_ms=1000)
    assert first is not None
    await first.call("SCRIPT", "FLUSH")
    assert await first.call_many([("SET", "c", 1), (lua, ["c"], [5]), (lua, ["c"], [1])]) == [b"OK", 6, 7]
    assert await first.call("SCRIPT", "EXISTS", lua.sha) == [1]
    await first.close()
    # A new connection (a restarted or failed-over Redis has an empty script cache) loads it again.
    flusher = redis.Redis.from_url(redis_url)
    flusher.script_flush()
    flusher.close()
    second = Wire.from_url(redis_url, timeout_ms=1000)
    assert second is not None
    try:
        assert await second.script(lua, ["c"], [3]) == 10
    finally:
        await second.close()


async def test_a_batch_that_does_not_pack_sends_nothing_and_leaves_its_scripts_unloaded(wire: Wire) -> None:
    lua = Lua.of("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await wire.call("SCRIPT", "FLUSH")
    with pytest.raises(TypeError):
        await wire.call_many([(lua, ["c"], [5]), ("SET", "k", None)])  # type: ignore[list-item]
    assert await wire.call("GET", "c") is None
    assert await wire.script(lua, ["c"], [5]) == 5  # loaded now, with its first call that was sent


async def test_a_probe_that_does_not_pack_lets_the_next_caller_probe(wire: Wire) -> None:
    """Regression: packing ran outside the breaker's guard in a batch, so a half-open probe that raised there kept
    the probe slot, and every later call was refused as if the circuit were open, for good."""
    for _ in range(FAILURES_TO_OPEN):
        wire.breaker.failure(now_s=0.0)  # opened long ago: the cool-down is over
    assert wire.breaker.state() == "half-open"
    with pytest.raises(TypeError):
        await wire.call_many([("SET", "k", None)])  # type: ignore[list-item]
    assert await wire.call_many([("SET", "k", "v")]) == [b"OK"]  # the next caller probes, and closes it
    assert wire.breaker.state() == "closed"


async def test_selects_the_database_of_its_url(redis_url: str) -> None:
    wire = Wire.from_url(redis_url.rsplit("/", 1)[0] + "/3", timeout_ms=1000)
    assert wire is not None
    try:
        await wire.call("SET", "in-db-3", "yes")
    finally:
        await wire.close()
    other = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    try:
        assert other.get("in-db-3") == b"yes"
        assert redis.Redis.from_url(redis_url).get("in-db-3") is None
    finally:
        other.close()


def test_cluster_and_tls_urls_are_left_to_redis_py() -> None:
    assert Wire.from_url("redis+cluster://127.0.0.1:7000", timeout_ms=250) is None
    assert Wire.from_url("rediss://cache.example.com:6380/0", timeout_ms=250) is None


async def test_a_hung_server_opens_the_circuit_then_one_probe_closes_it(redis_url: str) -> None:
    """Calls to a Redis that does not answer each waited the whole timeout; after a few, they fail at once until a
    probe finds it answering again."""
    wire = Wire.from_url(redis_url, timeout_ms=100)
    assert wire is not None
    wire.breaker.cooldown_s = 0.2
    pauser = redis.Redis.from_url(redis_url)
    try:
        await wire.call("SET", "k", "v")
        pauser.execute_command("CLIENT", "PAUSE", 2_000, "ALL")
        for _ in range(FAILURES_TO_OPEN):
            with pytest.raises(TimeoutError):
                await wire.call("GET", "k")
        assert wire.breaker.state() == "open"
        for _ in range(20):  # refused without a write: no connection is even tried
            with pytest.raises(CircuitOpen):
                await wire.call("GET", "k")
            with pytest.raises(CircuitOpen):
                await wire.call_many([("GET", "k")])
        await asyncio.sleep(0.25)
        with pytest.raises(TimeoutError):  # the probe, still hung: open again
            await wire.call("GET", "k")
        assert wire.breaker.state() == "open"
        pauser.execute_command("CLIENT", "UNPAUSE")
        await asyncio.sleep(0.25)
        assert await wire.call("GET", "k") == b"v"  # the probe answers: closed
        assert wire.breaker.state() == "closed" and wire.breaker.failures == 0
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()
        await wire.close()


async def test_a_dead_server_refuses_fast_and_a_restarted_one_is_reconnected(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with running_redis(tmp_path / "a") as (url, proc):
        wire = Wire.from_url(url, timeout_ms=500)
        assert wire is not None
        await wire.call("SET", "k", "v")
        proc.kill()
        proc.wait()
        with pytest.raises(ConnectionError):
            await wire.call("GET", "k")
        with pytest.raises(ConnectionError):
            await wire.call("GET", "k")  # reconnecting to nothing: refused, not hung
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    (tmp_path / "b").mkdir()
    restarted = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path / "b")
    )
    try:
        for _ in range(200):
            try:
                assert await wire.call("SET", "k", "again") == b"OK"
                break
            except ConnectionError:
                await asyncio.sleep(0.02)
        assert await wire.call("GET", "k") == b"again"
    finally:
        await wire.close()
        restarted.terminate()
        await restarted.wait()


def test_runs_on_uvloop_as_the_server_does(redis_url: str) -> None:
    # uvloop's transports are not asyncio.Transport subclasses; the server always runs on uvloop.
    import uvloop

    async def main() -> list[bytes | None]:
        wire = Wire.from_url(redis_url, timeout_ms=1000)
        assert wire is not None
        try:
            await wire.call("SET", "u", "loop")
            return list(await asyncio.gather(*(wire.call("GET", "u") for _ in range(50))))
        finally:
            await wire.close()

    assert uvloop.run(main()) == [b"loop"] * 50


async def test_authenticates_with_the_password_of_its_url(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(tmp_path),
        "--requirepass",
        "s3cret",
    )
    try:
        good = Wire.from_url(f"redis://:s3cret@127.0.0.1:{port}/0", timeout_ms=1000)
        bad = Wire.from_url(f"redis://:wrong@127.0.0.1:{port}/0", timeout_ms=1000)
        assert good is not None and bad is not None
        for _ in range(200):
            try:
                assert await good.call("PING") == b"PONG"
                break
            except ConnectionError:
                await asyncio.sleep(0.02)
        with pytest.raises(ConnectionError, match="setup"):
            await bad.call("PING")
        await good.close()
    finally:
        server.terminate()
        await server.wait()


async def test_batches_without_a_wire_run_through_redis_py_and_reload_lost_scripts(redis_url: str) -> None:
    """The transport a Redis Cluster uses (no wire): the same replies, and a script cache emptied by a
    restart or failover is loaded again instead of failing every batch."""
    from engine.store.redis import RedisStore

    store = RedisStore(redis_url)
    store.wire = None
    script = store.script("experiment_tally.lua")
    try:
        for _ in range(2):
            flusher = redis.Redis.from_url(redis_url)
            flusher.script_flush()
            flusher.close()
            batch = store.batch()
            batch.command("SET", "plain", "1")
            batch.script(script, ["tally"], ["0", 1, 0, 0, 0])
            replies = await batch.execute()
            assert replies[0] in (True, b"OK")
        fields = pairs(await store.hot("HGETALL", "tally"))
        assert fields[b"n"] == b"2" and fields[b"n@0"] == b"2"  # each batch counted once
    finally:
        await store.close()
