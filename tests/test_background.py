"""Background work on a real Redis: a flush of the decision log or of experiment exposures writes what was queued
when it was called, what arrives meanwhile waits for the next turn, and nothing queued is ever lost; experiment
and connection changes reach other processes by notice.

The stores and ledgers here are the real Redis ones; each write is only held at a gate, so a test can queue
more while a flush is in flight, and the batches are recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from engine import keys
from engine.connections import KIND as CONNECTIONS
from engine.connections import Directory
from engine.errors import ExternalCallFailed, Unavailable
from engine.experiments import compile_experiment
from engine.lab import Lab
from engine.ledger import Exposure, RedisLedger
from engine.metrics import Metrics
from engine.outage import RETRY_AFTER_S, Outage
from engine.recorder import Recorder
from engine.store import DecisionRecord
from engine.store.redis import RedisStore


class Gate:
    """Where a write waits while a test holds it (open unless a test closes it); ``batches``: the ids of each
    write that went through."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.entered = asyncio.Event()

    async def passing(self) -> None:
        self.entered.set()
        await self.open.wait()


class GatedStore(RedisStore):
    """The Redis store; each decision-log write passes a :class:`Gate`, and ``failures`` writes are refused
    first, as a sick Redis would refuse them."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = Gate()
        self.failures = 0

    async def decisions_record(self, records: list[DecisionRecord]) -> None:
        await self.gate.passing()
        if self.failures:
            self.failures -= 1
            raise Unavailable("decision log unavailable: refused by the test")
        self.gate.batches.append([r.decision_id for r in records])
        await super().decisions_record(records)


def _record(decision_id: str) -> DecisionRecord:
    return DecisionRecord(decision_id, "m", 1, "g", {"offer": decision_id}, False, int(time.time() * 1000))


async def _logged(store: RedisStore) -> list[str]:
    return [r["decision_id"] for r in reversed(await store.decisions_recent(100))]


@pytest.fixture
async def gated(redis_url: str):  # type: ignore[no-untyped-def]
    store = GatedStore(redis_url)
    yield store
    await store.close()


async def test_a_flush_writes_what_was_queued_when_it_was_called(gated: GatedStore) -> None:
    recorder = Recorder(gated, Metrics())
    for i in range(3):
        recorder.record(_record(f"a{i}"))
    gated.gate.open.clear()
    flushing = asyncio.ensure_future(recorder.flush())
    await gated.gate.entered.wait()
    recorder.record(_record("b0"))  # decisions served while the write is in flight
    recorder.record(_record("b1"))
    gated.gate.open.set()
    assert await flushing is True
    assert gated.gate.batches == [["a0", "a1", "a2"]]  # not chased by a second write of the two that came late
    assert await _logged(gated) == ["a0", "a1", "a2"]
    assert await recorder.flush() is True
    assert gated.gate.batches[-1] == ["b0", "b1"]
    assert await _logged(gated) == ["a0", "a1", "a2", "b0", "b1"]


async def test_a_refused_flush_keeps_its_records_in_order_and_stop_drains_them(gated: GatedStore) -> None:
    recorder = Recorder(gated, Metrics(), batch_size=4)
    for i in range(10):
        recorder.record(_record(f"r{i}"))
    gated.failures = 1
    assert await recorder.flush() is False
    assert await _logged(gated) == []
    recorder.record(_record("r10"))
    await recorder.stop()  # drains all of them, in batches of at most batch_size, in the order served
    assert gated.gate.batches == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r7"], ["r8", "r9", "r10"]]
    assert await _logged(gated) == [f"r{i}" for i in range(11)]


class CountingRecorder(Recorder):
    flushes = 0

    async def flush(self) -> bool:
        self.flushes += 1
        return await super().flush()


async def test_an_idle_recorder_sleeps_and_a_record_is_written_within_the_interval(gated: GatedStore) -> None:
    recorder = CountingRecorder(gated, Metrics(), flush_interval_ms=5)
    recorder.start()
    try:
        await asyncio.sleep(0.1)  # twenty intervals with nothing to write
        assert recorder.flushes == 0
        recorder.record(_record("lone"))
        await _until(lambda: _now(gated.gate.batches == [["lone"]]))
        flushes = recorder.flushes
        await asyncio.sleep(0.1)
        assert recorder.flushes == flushes  # asleep again
    finally:
        await recorder.stop()


async def test_a_full_batch_is_written_without_waiting_out_the_interval(gated: GatedStore) -> None:
    recorder = Recorder(gated, Metrics(), flush_interval_ms=10_000, batch_size=6)
    recorder.start()
    try:
        recorder.record(_record("f0"))
        await asyncio.sleep(0.02)  # the writer is waiting out its ten seconds for more
        for i in range(1, 6):
            recorder.record(_record(f"f{i}"))
        await _until(lambda: _now(gated.gate.batches == [[f"f{i}" for i in range(6)]]), timeout_s=2)
    finally:
        await recorder.stop()


class GatedLedger(RedisLedger):
    """The Redis ledger; each write passes a :class:`Gate`."""

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store)
        self.gate = Gate()

    async def expose(self, batch: list[Exposure]) -> None:
        await self.gate.passing()
        self.gate.batches.append([x.decision_id for x in batch])
        await super().expose(batch)


BANDIT: dict[str, Any] = {
    "status": "running",
    "arms": [{"id": "a"}, {"id": "b"}],
    "goal": {"event": "ORDER_CHECKOUT", "type": "binary"},
    "allocation": {"mode": "bandit"},
}


async def test_exposures_queued_during_a_ledger_write_wait_for_the_next_flush(redis_url: str) -> None:
    store = RedisStore(redis_url)
    lab = Lab(SimpleNamespace(store=store))  # type: ignore[arg-type]  # flushing needs only the store
    ledger = lab.ledger = GatedLedger(store)
    lab.experiments["hero"] = compile_experiment(BANDIT, "hero")

    def served(decision_id: str) -> None:
        arm = {"experiment": "hero", "arm": "a", "epoch": "1.0", "reason": "SPLIT", "propensity": 0.5}
        now_ms = int(time.time() * 1000)
        lab.observe(DecisionRecord(decision_id, "m", 1, None, {}, False, now_ms, {"experiments": [arm]}))

    try:
        for i in range(3):
            served(f"d{i}")
        ledger.gate.open.clear()
        flushing = asyncio.ensure_future(lab.flush())
        await ledger.gate.entered.wait()
        served("late")
        ledger.gate.open.set()
        await flushing
        assert ledger.gate.batches == [["d0", "d1", "d2"]]
        await lab.flush()  # a reader's flush (results, rewards) writes what was queued before it
        assert ledger.gate.batches[-1] == ["late"]
        (tally, _) = await ledger.totals("hero", ("a", "b"))
        assert tally.exposures == 4
    finally:
        await store.close()


async def test_an_experiment_written_by_one_process_reaches_another_without_waiting_for_its_refresh(
    redis_url: str,
) -> None:
    """Another process learns of a new (or deleted) experiment from a change notice; the timed refresh is an hour
    away here, so only the notice can deliver it."""
    stores = [RedisStore(redis_url), RedisStore(redis_url)]
    runtimes = [SimpleNamespace(store=s, rng=np.random.default_rng(7)) for s in stores]
    labs = [Lab(rt, refresh_s=3600) for rt in runtimes]  # type: ignore[arg-type]  # a lab needs store and rng
    try:
        for lab in labs:
            await lab.start()
        writer, reader = labs
        await _until(lambda: _subscribers(stores[0], keys.resource_channel("experiment"), len(labs)))
        await writer.put("hero", BANDIT)
        await _until(lambda: _now("hero" in reader.experiments))
        assert reader.get("hero").arm_ids == ("a", "b")
        await writer.delete("hero")
        await _until(lambda: _now("hero" not in reader.experiments))
    finally:
        for lab in labs:
            await lab.stop()
        for store in stores:
            await store.close()


async def test_a_connection_changed_by_one_process_leaves_anothers_cache_at_once(redis_url: str) -> None:
    """Another process's cached connection goes as soon as it is rewritten or deleted; its TTL is an hour here."""
    writer, reader = RedisStore(redis_url), RedisStore(redis_url)
    directory = Directory(reader, ttl_s=3600)
    follower = asyncio.ensure_future(directory.follow_changes())
    try:
        await writer.resource_put(CONNECTIONS, "shop", {"base_url": "https://a.example.com"})
        assert (await directory.get("shop")).base_url == "https://a.example.com"  # cached from here on
        await _until(lambda: _subscribers(writer, keys.resource_channel(CONNECTIONS), 1))
        await writer.resource_put(CONNECTIONS, "shop", {"base_url": "https://b.example.com"})
        await _until(lambda: _base_url_is(directory, "https://b.example.com"))
        await writer.resource_delete(CONNECTIONS, "shop")
        await _until(lambda: _base_url_is(directory, None))
    finally:
        follower.cancel()
        await asyncio.wait({follower})
        await writer.close()
        await reader.close()


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "not delivered in time"
        await asyncio.sleep(0.01)


async def _now(value: bool) -> bool:
    return value


async def _subscribers(store: RedisStore, channel: str, expected: int) -> bool:
    """Whether ``expected`` followers listen: a notice published before they subscribe reaches nobody."""
    ((_, n),) = await store.client.pubsub_numsub(channel)
    return int(n) == expected


async def _base_url_is(directory: Directory, expected: str | None) -> bool:
    try:
        return (await directory.get("shop")).base_url == expected
    except ExternalCallFailed:
        return expected is None


async def test_while_redis_refuses_writes_the_recorder_retries_at_its_pace_and_logs_once(
    gated: GatedStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A backlog of full batches used to send the loop straight back to a refused write: it spun the event loop
    and logged a warning per turn for as long as Redis was down."""
    recorder = CountingRecorder(gated, Metrics(), flush_interval_ms=5, batch_size=4)
    gated.failures = 1_000_000
    for i in range(10):
        recorder.record(_record(f"r{i}"))
    recorder.start()
    try:
        with caplog.at_level("WARNING", logger="arbiter.recorder"):
            await asyncio.sleep(RETRY_AFTER_S * 2.5)
            refused = recorder.flushes
            # one try at once, then one per RETRY_AFTER_S (2-3 in 2.5 intervals, whatever the timer's rounding)
            assert 2 <= refused <= 4, refused
            assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
            gated.failures = 0
            await _until(lambda: _now(len(gated.gate.batches) == 3))
        assert "works again, after" in caplog.records[-1].message
        assert await _logged(gated) == [f"r{i}" for i in range(10)]  # nothing lost, in order
    finally:
        await recorder.stop()


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(logging.getLogger("arbiter.test"), "writing things")
    with caplog.at_level("WARNING", logger="arbiter.test"):
        outage.ended()  # nothing had failed: nothing to say
        for _ in range(5):
            outage.failed("Redis did not answer")
        outage.ended()
        outage.ended()
        outage.failed("refused")
    assert [r.message for r in caplog.records] == [
        "writing things failed; retrying until it works (logged again when it does): Redis did not answer",
        "writing things works again, after 5 failed tries",
        "writing things failed; retrying until it works (logged again when it does): refused",
    ]
