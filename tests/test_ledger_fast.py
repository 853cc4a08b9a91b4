"""The ledger's exposure writes against the general path they replaced: byte for byte the same keys, fields, values
and TTLs (a rolling deploy runs both against one Redis).

``_reference_expose`` is the general path as it was before the flush was planned per batch (``filed`` per
exposure, ``orjson.dumps(x.assignment())`` per guest, ``slot_groups`` for every call): each case runs it on one
Redis database and :meth:`RedisLedger.expose` on another, then compares every key.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest
import redis as sync_redis

from engine import keys
from engine.ids import new_id, time_of, timed_id
from engine.ledger import (
    ASSIGN_BATCH,
    GUEST_UNIT_TTL_S,
    MAX_UNIT_AGE_MS,
    MINUTE_KEYS_PER_CALL,
    MINUTE_MS,
    UNIT_GRACE_S,
    Exposure,
    RedisLedger,
    _arm,
    _reward_counts,
    filed,
)
from engine.store.redis import ASSIGNMENT_FIELD, RedisStore

SEED = random.randrange(2**32)


async def _reference_open(ledger: RedisLedger, batch: list[Exposure]) -> tuple[Any, ...]:
    store = ledger.store
    first = store.batch()
    where: list[tuple[str, int] | int] = []
    minutes: dict[str, list[Any]] = {}
    aliases: list[Exposure] = []
    pointers: list[tuple[Exposure, str, int]] = []
    for x in batch:
        unit = filed(x.experiment, x.decision_id, x.at_ms)
        if unit is not None:
            ttl_ms = (unit.at_ms // MINUTE_MS + 1) * MINUTE_MS - x.at_ms + (x.window_s + UNIT_GRACE_S) * 1000
            args = minutes.setdefault(unit.key, [ttl_ms])
            args[0] = max(args[0], ttl_ms)
            if x.unit == x.decision_id:
                where.append((unit.key, len(args) - 1))
                args += (unit.field, f"0|{x.window_s}|{x.epoch}|{x.arm}")
                continue
            pointers.append((x, unit.key, len(args) - 1))
            args += (unit.field, "@" + x.unit)
        elif x.unit != x.decision_id:
            aliases.append(x)
        deadline_ms = x.at_ms + x.window_s * 1000
        ttl_s = x.window_s + (GUEST_UNIT_TTL_S if x.keep_assignment else UNIT_GRACE_S)
        unit_keys = [keys.experiment_unit(x.experiment, x.unit), keys.experiment_parked(x.experiment, x.unit)]
        where.append(len(first))
        first.script(ledger._expose, unit_keys, [x.arm, x.epoch, x.at_ms, deadline_ms, ttl_s])
    own = len(first)
    groups = store.slot_groups(list(minutes), MINUTE_KEYS_PER_CALL)
    for group in groups:
        argv: list[Any] = []
        for minute in group.keys:
            args = minutes[minute]
            argv += (args[0], (len(args) - 1) // 2, *args[1:])
        first.script(ledger._expose_minute, group.keys, argv)
    replies = await first.execute()
    by_minute: dict[str, list[Any]] = {}
    for group, reply in zip(groups, replies[own:], strict=True):
        start = 0
        for minute in group.keys:
            end = start + len(minutes[minute]) - 1
            by_minute[minute] = reply[start:end]
            start = end
    opened = []
    for at in where:
        if isinstance(at, int):
            new, parked = replies[at]
        else:
            reply = by_minute[at[0]]
            new, parked = reply[at[1]], reply[at[1] + 1]
        opened.append((new, parked))
    return opened, aliases, pointers, by_minute


async def _reference_expose(ledger: RedisLedger, batch: list[Exposure]) -> None:
    store = ledger.store
    opened, aliases, pointers, by_minute = await _reference_open(ledger, batch)
    then = store.batch()
    for x, k, i in pointers:
        if by_minute[k][i + 1]:
            value = float(by_minute[k][i + 1])
            status, arm, epoch = await ledger.claim(x.experiment, x.unit, int(time.time() * 1000), value)
            if status == "counted":
                then.script(ledger._tally, [keys.experiment_tally(x.experiment, arm)], [epoch, 0, 1, value, value**2])
    added: dict[tuple[str, str, str], int] = {}
    for x, (new, parked) in zip(batch, opened, strict=True):
        if new and parked:
            counts = [x.epoch, 1, *_reward_counts(float(parked))]
            then.script(ledger._tally, [keys.experiment_tally(x.experiment, x.arm)], counts)
        elif new:
            added[x.experiment, x.arm, x.epoch] = added.get((x.experiment, x.arm, x.epoch), 0) + 1
    for (experiment, arm, epoch), n in added.items():
        then.script(ledger._tally, [keys.experiment_tally(experiment, arm)], [epoch, n, 0, 0, 0])
    for x in aliases:
        then.command("SET", keys.experiment_decision(x.experiment, x.decision_id), x.unit, "EX", x.window_s)
    assigned = [x for x in batch if x.guest_ref]
    for group in store.slot_groups([keys.guest(x.guest_ref or "") for x in assigned], ASSIGN_BATCH):
        args = []
        for i in group.indices:
            x = assigned[i]
            args += (ASSIGNMENT_FIELD + x.experiment, orjson.dumps(x.assignment()), "1" if x.keep_assignment else "0")
        then.script(ledger._assign, group.keys, args)
    await then.execute()


def _contents(client: sync_redis.Redis) -> dict[bytes, tuple[Any, int]]:
    """Every key: its value and its TTL (ms, -1 for none)."""
    out: dict[bytes, tuple[Any, int]] = {}
    for key in client.keys("*"):
        kind = client.type(key)
        value = client.hgetall(key) if kind == b"hash" else client.get(key)
        out[key] = (value, client.pttl(key))
    return out


def _assert_same(new: dict[bytes, tuple[Any, int]], old: dict[bytes, tuple[Any, int]]) -> None:
    assert sorted(new) == sorted(old)
    for key, (value, ttl_ms) in new.items():
        assert value == old[key][0], key
        # Both wrote the same TTL; they ran a moment apart.
        assert (ttl_ms == -1) == (old[key][1] == -1) and abs(ttl_ms - old[key][1]) < 2000, (key, ttl_ms, old[key][1])


async def _both(redis_url: str, batch: list[Exposure], claims: list[tuple[str, str, bool]]) -> None:
    """Expose ``batch`` through both paths (after the same ``claims``: rewards parked ahead of it) and compare."""
    contents = []
    for db, reference in ((0, False), (1, True)):
        url = redis_url.rsplit("/", 1)[0] + f"/{db}"
        store = RedisStore(url)
        ledger = RedisLedger(store)
        now_ms = int(time.time() * 1000)
        try:
            for experiment, unit, per_decision in claims:
                status = await ledger.claim(experiment, unit, now_ms, 2.5, per_decision=per_decision)
                assert status[0] == "parked"
            for _ in range(2):  # again: nothing opens twice, a bandit's assignment is the last touch
                await (_reference_expose(ledger, batch) if reference else ledger.expose(batch))
        finally:
            await store.close()
        client = sync_redis.Redis.from_url(url)
        contents.append(_contents(client))
        client.flushdb()
        client.close()
    _assert_same(*contents)


async def test_a_mixed_batch_stores_what_the_general_path_stores(redis_url: str) -> None:
    now_ms = int(time.time() * 1000)
    minute_ago = now_ms - MINUTE_MS
    odd_arm = 'b%s "100%" \\ é \u2603 \x01'
    ids = [timed_id(now_ms) for _ in range(24)] + [timed_id(minute_ago) for _ in range(8)]
    random_hex = new_id()
    assert time_of(random_hex) is None or random_hex[12] == "7"
    upper = timed_id(now_ms).upper()
    stale = timed_id(now_ms - MAX_UNIT_AGE_MS - 1000)
    batch = [Exposure("bx", "ab"[i % 2], "1.4", d, d, None, now_ms, 3600, False) for i, d in enumerate(ids[:12])]
    batch += [Exposure("bx", odd_arm, "1.5", d, d, f"g-{i}", now_ms + i, 3600, False) for i, d in enumerate(ids[12:20])]
    # A fixed split: the guest is the unit, the decision points at it from its minute; one guest twice.
    batch += [Exposure("fx", "b", "3", g, d, g, now_ms, 7200, True) for g, d in zip("abca", ids[20:24], strict=True)]
    batch += [Exposure("fx", "a", "3", d, d, None, minute_ago, 7200, True) for d in ids[24:28]]  # no guest
    batch += [Exposure("bx", "a", "1.4", d, d, "g-0", minute_ago + 7, 86400, False) for d in ids[28:]]
    # Ids that are not recent timed ids: a unit key of their own, and an alias where the unit is a guest.
    for d in (random_hex, upper, stale, "legacy-1", "7" * 32):
        batch.append(Exposure("bx", "a", "1.4", d, d, "g-1", now_ms, 3600, False))
        batch.append(Exposure("fx", "b", "3", "s-9", d, "s-9", now_ms, 7200, True))
    claims = [("bx", ids[1], True), ("bx", ids[14], True), ("fx", ids[21], True), ("fx", "s-9", False)]
    claims += [("bx", "legacy-1", False), ("fx", "s-2", False)]
    await _both(redis_url, batch, claims)


async def test_many_guests_and_minutes_store_what_the_general_path_stores(redis_url: str) -> None:
    """More guests than one assignment call takes, and more minute hashes than one opening call takes."""
    rng = random.Random(SEED)
    now_ms = int(time.time() * 1000)
    batch = []
    for i in range(300):
        at_ms = now_ms - rng.randrange(5) * MINUTE_MS - rng.randrange(1000)
        d = timed_id(at_ms)
        guest = f"g-{rng.randrange(90)}"
        if rng.random() < 0.5:
            batch.append(Exposure(f"e{i % 3}", rng.choice("abc"), "2.7", d, d, guest, at_ms, 1800 * (1 + i % 2), False))
        else:
            batch.append(Exposure("split", rng.choice("ab"), "2", guest, d, guest, at_ms, 3600, True))
    await _both(redis_url, batch, [])


def test_a_flush_files_a_decision_exactly_where_filed_does() -> None:
    """The plan's inline test of a timed id against :func:`filed`, on ids either side of every rule."""
    rng = random.Random(SEED)
    now_ms = int(time.time() * 1000)
    ids = [timed_id(now_ms - rng.randrange(10**9)) for _ in range(200)] + [new_id() for _ in range(200)]
    ids += [timed_id(now_ms - MAX_UNIT_AGE_MS - 1), timed_id(now_ms + 5 * 60_000 + 1), timed_id(now_ms + 5 * 60_000)]
    for d in list(ids[:50]):
        for at in (12, 16, 0, 31):
            for c in "0123456789abcdefABCDEF g":
                ids.append(d[:at] + c + d[at + 1 :])
        ids += [d.upper(), d[:-1], d + "0", " " + d[1:], d[:31] + "\u00e9"]
    ledger = RedisLedger.__new__(RedisLedger)
    ledger._arms = {}
    for d in ids:
        plan = ledger._plan([Exposure("fx", "a", "1", d, d, None, now_ms, 3600, False)])
        place = filed("fx", d, now_ms)
        if place is None:
            assert not plan.minutes and len(plan.units) == 1, d
        else:
            ((key, _, _, pairs, _),) = plan.minutes.values()
            assert (key, pairs[0]) == (place.key, place.field), d
    print("seed", SEED)


@pytest.mark.parametrize("per", ["decision", "guest"])
def test_an_assignment_entry_is_what_orjson_writes(per: str) -> None:
    """The entry built from the arm's pieces is byte for byte ``orjson.dumps(x.assignment())``."""
    rng = random.Random(SEED)
    alphabet = 'ab%"\\/\x00\x1f\x7f é\u2028\u2603\U0001f600{}:,7'
    now_ms = int(time.time() * 1000)
    ledger = RedisLedger.__new__(RedisLedger)
    ledger._arms = {}
    for _ in range(300):
        arm, epoch, guest = ("".join(rng.choices(alphabet, k=rng.randrange(6))) for _ in range(3))
        d = timed_id(now_ms) if rng.random() < 0.7 else "".join(rng.choices(alphabet, k=8))
        unit = d if per == "decision" else guest or "g"
        at_ms = rng.choice([now_ms, 0, -5, 2**53])
        x = Exposure("e%", arm, epoch, unit, d, guest or "g", at_ms, 60, per == "guest")
        plan = ledger._plan([x])
        assert plan.guest_args[1] in (orjson.dumps(x.assignment()), orjson.dumps(x.assignment()).decode()), x
        assert orjson.dumps(x.assignment()) == (
            plan.guest_args[1] if isinstance(plan.guest_args[1], bytes) else plan.guest_args[1].encode()
        )
    a = _arm("e", "a%d", "1", 60)
    assert b"%%d" in a.per_decision and a.entry == "0|60|1|a%d"
    print("seed", SEED)
