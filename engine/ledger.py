"""Where experiment counters live: per-arm tallies by epoch, epoch weights, attribution units.

Two backends, like the store: :class:`RedisLedger` (shared by every engine process; atomic scripts in
``store/lua/experiment_*.lua``) and :class:`MemoryLedger` (the embedded store's process). Reads that feed
the request path (tallies for the allocation) happen on the refresher's schedule, never per request.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from itertools import chain, compress
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from engine import keys
from engine.bandit import Tally
from engine.errors import Unavailable
from engine.ids import timed_bytes
from engine.store.redis import ASSIGNMENT_FIELD, KeyGroup
from engine.types import JSONObject

if TYPE_CHECKING:
    from engine.store.redis import Batch, RedisStore


class Exposure(NamedTuple):
    """One served arm, queued for the ledger (a tuple: made per decision, in C)."""

    experiment: str
    arm: str
    epoch: str
    unit: str
    """What a reward is attributed to: the decision id, or the guest ref in a fixed split."""
    decision_id: str
    guest_ref: str | None
    at_ms: int
    window_s: int
    keep_assignment: bool
    """Fixed splits keep the guest's first assignment; bandits record the latest (last-touch)."""

    def assignment(self) -> JSONObject:
        # ``per`` says where the unit is filed (entries from before it was written are guests' or legacy units).
        per = "decision" if self.unit == self.decision_id else "guest"
        return {"arm": self.arm, "epoch": self.epoch, "unit": self.unit, "per": per, "at_ms": self.at_ms}


TallyMap = dict[str, dict[str, Tally]]
"""epoch → arm → tally."""


PARK_TTL_MS = 60_000
"""How long a reward may wait for its exposure to be written (exposures flush within milliseconds)."""
GUEST_UNIT_TTL_S = 90 * 86400
"""A fixed-split guest's unit outlives one window: a returning guest is not a new exposure."""
UNIT_GRACE_S = 3600
"""How long a decision's unit outlives its window, so a reward just past the deadline is told ``late``."""

ASSIGN_BATCH = 64
"""Guests per assignment script call (a field set each): one call rather than a command per exposure, whose packing
and reply cost the worker more than the script costs Redis; short enough (~0.1 ms) not to hold up the commands
queued behind it."""

MINUTE_KEYS_PER_CALL = 16
"""Minute hashes per unit-opening script call: every shard a flush touches, on one server (two minutes' worth)."""

# A bandit's attribution units grow with traffic, one per decision, kept for the attribution window (a week by
# default). A key of its own per unit cost 262 B of Redis memory; a field in a hash of the decisions of one minute
# costs 44 B at 10 decisions/s and 105 B at 1,000/s (benchmarks/RESULTS.md, session 10). A decision id is a timed
# id, so a reward finds the minute from the id alone.
MINUTE_MS = 60_000
MINUTE_SHARDS = 8
"""Hashes per experiment and minute: a busy bandit's writes spread over cluster slots, and each hash stays small
enough to expire without stalling Redis (~7,500 fields at 1,000 decisions/s)."""
CLOCK_SKEW_MS = 5 * 60_000
MAX_UNIT_AGE_MS = (400 * 86400 + UNIT_GRACE_S) * 1000
"""The longest attribution window a unit can have, and its grace."""


class Filed(NamedTuple):
    """Where a decision's unit is filed: its minute's hash, its field there (the id's 16 bytes: half the memory of
    its hex), and the decision's time."""

    key: str
    field: bytes
    at_ms: int


def filed(experiment: str, decision_id: str, now_ms: int) -> Filed | None:
    """Where a decision's unit is filed, or ``None`` for a decision id that is not a recent timed id (one minted
    before ids were timed is random hex: its unit is a key of its own)."""
    timed = timed_bytes(decision_id)
    if timed is None or not now_ms - MAX_UNIT_AGE_MS <= timed[1] <= now_ms + CLOCK_SKEW_MS:
        return None
    field, at_ms = timed
    return Filed(keys.experiment_minute(experiment, at_ms // MINUTE_MS, _shard(field)), field, at_ms)


def _shard(field: bytes) -> int:
    """A decision's minute shard: its id's last hex digit's."""
    return (field[15] & 0xF) % MINUTE_SHARDS


def _reward_counts(value: float | None) -> list[float]:
    """Tally increments (rewarded, sum, sum of squares) for a reward, or none."""
    return [0, 0, 0] if value is None else [1, value, value * value]


@dataclass(frozen=True, slots=True, eq=False)
class _Arm:
    """What the exposures of one experiment arm, epoch and window have in common: built once, looked up per exposure
    (compared by identity: counting a flush's new exposures hashes one per exposure)."""

    experiment: str
    epoch: str
    tally_key: str
    entry: str
    """A new decision unit's entry in its minute's hash: ``0|<window_s>|<epoch>|<arm>``."""
    keep_ms: int
    """How long a minute's hash outlives a decision of this window: the window and its grace."""
    assignment_field: str
    json_head: str
    per_decision: bytes
    per_guest: bytes
    """The guest's assignment entry (:meth:`Exposure.assignment`) as orjson writes it, for a unit that is the
    decision or the guest: ``%b`` takes the unit's JSON, ``%d`` the decision's time."""


def _arm(experiment: str, arm: str, epoch: str, window_s: int) -> _Arm:
    # orjson writes a dict's values as it writes each alone: the entry is these pieces around the unit and the time.
    json_head = b'{"arm":' + orjson.dumps(arm) + b',"epoch":' + orjson.dumps(epoch) + b',"unit":'
    head = json_head.replace(b"%", b"%%") + b'%b,"per":'
    return _Arm(
        experiment,
        epoch,
        keys.experiment_tally(experiment, arm),
        f"0|{window_s}|{epoch}|{arm}",
        (window_s + UNIT_GRACE_S) * 1000,
        ASSIGNMENT_FIELD + experiment,
        json_head.decode(),
        head + b'"decision","at_ms":%d}',
        head + b'"guest","at_ms":%d}',
    )


ARMS_KEPT = 4096
"""Arms a ledger remembers across flushes (a few per running experiment and epoch); past it, it forgets them all."""


class _Plan:
    """One flush's writes, worked out before its first round trip: the units to open and whose each reply is."""

    __slots__ = ("aliases", "arms", "guest_args", "guest_keys", "minutes", "unit_owners", "units")

    def __init__(self) -> None:
        self.arms: list[_Arm] = []
        """Per exposure, in order."""
        self.minutes: dict[tuple[str, int, int], list[Any]] = {}
        """(experiment, minute, shard) → the hash's key, its minute's end (ms), how long past that it must live (the
        most of its exposures' window and grace, less their time: ms), its call's pairs of decision id and entry,
        and per pair the index of its exposure."""
        self.units: list[tuple[list[str], list[Any]]] = []
        """Units with a key of their own: the keys and arguments of their ``experiment_expose.lua`` calls."""
        self.unit_owners: list[int] = []
        self.aliases: list[Exposure] = []
        self.guest_keys: list[str] = []
        self.guest_args: list[Any] = []
        """Three per guest key: field, entry, keep."""

    def open_unit(self, x: Exposure, i: int) -> None:
        """A unit with a key of its own: a fixed split's guest's, or a decision's whose id is not a recent timed id."""
        deadline_ms = x.at_ms + x.window_s * 1000
        ttl_s = x.window_s + (GUEST_UNIT_TTL_S if x.keep_assignment else UNIT_GRACE_S)
        unit_keys = [keys.experiment_unit(x.experiment, x.unit), keys.experiment_parked(x.experiment, x.unit)]
        self.units.append((unit_keys, [x.arm, x.epoch, x.at_ms, deadline_ms, ttl_s]))
        self.unit_owners.append(i)


def _outcomes(
    plan: _Plan, batch: list[Exposure], minute_owners: list[list[int]], replies: list[Any]
) -> tuple[dict[tuple[str, str], int], list[tuple[int, float]], list[tuple[int, float]]]:
    """What the units' openings said: new exposures per tally key and epoch; new units that took up a parked reward;
    decisions pointing at their guest's unit with a reward parked under them, for that unit. The last two by
    exposure index, in the batch's order."""
    own = len(plan.units)
    streams = [(plan.unit_owners, list(chain.from_iterable(replies[:own])))]
    streams += zip(minute_owners, replies[own:], strict=True)
    fresh: Counter[_Arm] = Counter()
    parked_units: list[tuple[int, float]] = []
    parked_for_guests: list[tuple[int, float]] = []
    for owners, reply in streams:
        opened, parked = reply[0::2], reply[1::2]
        if not any(parked):  # the usual reply: count the new ones without a step per exposure
            fresh.update(map(plan.arms.__getitem__, compress(owners, opened)))
            continue
        for i, new, value in zip(owners, opened, parked, strict=True):
            if new and value:
                parked_units.append((i, float(value)))
            elif new:
                fresh[plan.arms[i]] += 1
            elif value and batch[i].unit != batch[i].decision_id:
                parked_for_guests.append((i, float(value)))
    added: dict[tuple[str, str], int] = {}
    for a, n in fresh.items():
        added[a.tally_key, a.epoch] = added.get((a.tally_key, a.epoch), 0) + n
    return added, sorted(parked_units), sorted(parked_for_guests)


class Ledger(Protocol):
    async def expose(self, batch: list[Exposure]) -> None: ...

    async def claim(
        self, experiment: str, unit: str, now_ms: int, value: float | None = None, *, per_decision: bool = False
    ) -> tuple[str, str, str]:
        """Mark a unit rewarded once: ``(counted|duplicate|late|unknown|parked, arm, epoch)``. ``per_decision``:
        the unit is a decision (a bandit's, or a split's without a guest), not a guest.

        With a ``value``, a reward for a unit not written yet is parked and counted when it opens."""
        ...

    async def add_reward(self, experiment: str, arm: str, epoch: str, value: float) -> None: ...

    async def unit_of(self, experiment: str, decision_id: str) -> tuple[str, bool]:
        """The unit a decision's reward goes to, and whether that unit is the decision itself."""
        ...

    async def assignment(self, guest_ref: str, experiment: str) -> JSONObject | None: ...

    async def totals(self, experiment: str, arms: tuple[str, ...]) -> list[Tally]: ...

    async def by_epoch(self, experiment: str, arms: tuple[str, ...]) -> TallyMap: ...

    async def epochs(self, experiment: str) -> dict[str, list[float]]: ...

    async def claim_epoch(self, experiment: str, epoch: str, weights: list[float]) -> list[float]:
        """The epoch's weights: ours if we are first, else the ones a peer wrote."""
        ...

    async def forget(self, experiment: str, arms: tuple[str, ...]) -> None: ...


def _parse_tally(fields: dict[str, float], suffix: str = "") -> Tally:
    return Tally(
        int(fields.get("n" + suffix, 0)),
        int(fields.get("c" + suffix, 0)),
        float(fields.get("s" + suffix, 0.0)),
        float(fields.get("q" + suffix, 0.0)),
    )


def _split_epochs(per_arm: dict[str, dict[str, float]]) -> TallyMap:
    epochs = {f.split("@", 1)[1] for fields in per_arm.values() for f in fields if "@" in f}
    return {e: {arm: _parse_tally(fields, "@" + e) for arm, fields in per_arm.items()} for e in sorted(epochs)}


class RedisLedger:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client = store.client
        self._expose = store.script("experiment_expose.lua")
        self._expose_minute = store.script("experiment_expose_minute.lua")
        self._tally = store.script("experiment_tally.lua")
        self._claim = store.script("experiment_claim.lua")
        self._claim_minute = store.script("experiment_claim_minute.lua")
        self._assign = store.script("experiment_assign.lua")
        self._arms: dict[tuple[str, str, str, int], _Arm] = {}
        self._one_server = not isinstance(store.client, RedisCluster)

    async def expose(self, batch: list[Exposure]) -> None:
        try:
            plan = self._plan(batch)
            first = self.store.batch()
            for unit_keys, args in plan.units:
                first.script(self._expose, unit_keys, args)
            owners = self._open_minutes(plan, first)
            replies = await first.execute()
            added, parked_units, parked_for_guests = _outcomes(plan, batch, owners, replies)
            then = self.store.batch()
            # A reward that reached another process before a split's decision was written was parked under the
            # decision; it belongs to the guest's unit, opened just now (rare: claimed one at a time).
            for i, value in parked_for_guests:
                x = batch[i]
                status, arm, epoch = await self.claim(x.experiment, x.unit, int(time.time() * 1000), value)
                if status == "counted":
                    then.script(
                        self._tally, [keys.experiment_tally(x.experiment, arm)], [epoch, 0, *_reward_counts(value)]
                    )
            # New exposures of one arm and epoch add up to one tally call (a bandit arm takes most of a batch);
            # a parked reward, rare, carries its own counts.
            for i, value in parked_units:
                a = plan.arms[i]
                then.script(self._tally, [a.tally_key], [a.epoch, 1, *_reward_counts(value)])
            for (tally_key, epoch), n in added.items():
                then.script(self._tally, [tally_key], [epoch, n, *_reward_counts(None)])
            for x in plan.aliases:
                then.command("SET", keys.experiment_decision(x.experiment, x.decision_id), x.unit, "EX", x.window_s)
            self._write_assignments(plan, then)
            await then.execute()
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc

    def _plan(self, batch: list[Exposure]) -> _Plan:
        """Where each exposure's unit and assignment go. This loop was most of a flush's CPU: what an arm's
        exposures share comes from ``self._arms``, and the minute filed into last is reused."""
        arms = self._arms
        if len(arms) > ARMS_KEPT:
            arms.clear()
        plan = _Plan()
        per_exposure, minutes, guest_keys, guest_args = plan.arms, plan.minutes, plan.guest_keys, plan.guest_args
        dumps, guest = orjson.dumps, keys.guest
        minute = minute_start_ms = minute_end_ms = 0  # the minute filed into last: most of a batch's ids fall in it
        for i, x in enumerate(batch):
            experiment, arm, epoch, unit, decision_id, guest_ref, at_ms, window_s, keep = x
            a = arms.get((experiment, arm, epoch, window_s))
            if a is None:
                a = arms[experiment, arm, epoch, window_s] = _arm(experiment, arm, epoch, window_s)
            per_exposure.append(a)
            own = unit == decision_id
            timed = timed_bytes(decision_id)
            if timed is not None and -MAX_UNIT_AGE_MS <= timed[1] - at_ms <= CLOCK_SKEW_MS:
                field, id_ms = timed
                if not minute_start_ms <= id_ms < minute_end_ms:
                    minute = id_ms // MINUTE_MS
                    minute_start_ms, minute_end_ms = minute * MINUTE_MS, (minute + 1) * MINUTE_MS
                slot = (experiment, minute, _shard(field))
                # The hash lives until the window of its minute's last decision closes, and its grace.
                outlives_ms = a.keep_ms - at_ms
                m = minutes.get(slot)
                if m is None:
                    m = minutes[slot] = [keys.experiment_minute(*slot), minute_end_ms, outlives_ms, [], []]
                elif outlives_ms > m[2]:
                    m[2] = outlives_ms
                m[3] += (field, a.entry if own else "@" + unit)
                m[4].append(i)
                if not own:
                    plan.open_unit(x, i)
            else:
                plan.open_unit(x, i)
                if not own:
                    plan.aliases.append(x)
            if guest_ref:
                guest_keys.append(guest(guest_ref))
                entry: str | bytes
                if type(at_ms) is not int:  # a bool or a float, which %d would print otherwise than orjson
                    entry = dumps(x.assignment())
                elif own and timed is not None:  # a timed id needs no escaping: a format, not orjson or a bytes one
                    entry = f'{a.json_head}"{unit}","per":"decision","at_ms":{at_ms}}}'
                else:
                    entry = (a.per_decision if own else a.per_guest) % (dumps(unit), at_ms)
                guest_args += (a.assignment_field, entry, "1" if keep else "0")
        return plan

    def _open_minutes(self, plan: _Plan, first: Batch) -> list[list[int]]:
        """Add the minute hashes' calls (one per ``MINUTE_KEYS_PER_CALL`` hashes of one slot); per call, the index
        of the exposure of each pair, in the order of its reply."""
        minutes = list(plan.minutes.items())
        owners = []
        for group in self._groups([m[0] for _, m in minutes], MINUTE_KEYS_PER_CALL):
            argv: list[Any] = []
            call_owners: list[int] = []
            for i in group.indices:
                _, (_, minute_end_ms, outlives_ms, pairs, exposures) = minutes[i]
                ttl_ms = minute_end_ms + outlives_ms
                argv += (ttl_ms, len(exposures), *pairs)
                call_owners += exposures
            first.script(self._expose_minute, group.keys, argv)
            owners.append(call_owners)
        return owners

    def _write_assignments(self, plan: _Plan, then: Batch) -> None:
        guest_keys, args = plan.guest_keys, plan.guest_args
        if self._one_server:  # consecutive guests, as ``slot_groups`` would group them, without its per-key work
            for start in range(0, len(guest_keys), ASSIGN_BATCH):
                end = start + ASSIGN_BATCH
                then.script(self._assign, guest_keys[start:end], args[3 * start : 3 * end])
            return
        for group in self.store.slot_groups(guest_keys, ASSIGN_BATCH):
            then.script(self._assign, group.keys, [a for i in group.indices for a in args[3 * i : 3 * i + 3]])

    def _groups(self, keys: list[str], most: int) -> list[KeyGroup]:
        if self._one_server and len(keys) <= most:
            return [KeyGroup(keys, list(range(len(keys))))]
        return self.store.slot_groups(keys, most)

    async def claim(
        self, experiment: str, unit: str, now_ms: int, value: float | None = None, *, per_decision: bool = False
    ) -> tuple[str, str, str]:
        amount = "" if value is None else repr(value)
        place = filed(experiment, unit, now_ms) if per_decision else None
        try:
            if place is not None:
                args = [place.field, now_ms - place.at_ms, amount, PARK_TTL_MS]
                status, arm, epoch = await self.store.hot_script(self._claim_minute, [place.key], args)
            else:
                unit_keys = [keys.experiment_unit(experiment, unit), keys.experiment_parked(experiment, unit)]
                status, arm, epoch = await self.store.hot_script(self._claim, unit_keys, [now_ms, amount, PARK_TTL_MS])
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        return status.decode(), arm.decode(), epoch.decode()

    async def add_reward(self, experiment: str, arm: str, epoch: str, value: float) -> None:
        try:
            await self.store.hot_script(
                self._tally, [keys.experiment_tally(experiment, arm)], [epoch, 0, 1, value, value * value]
            )
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc

    async def unit_of(self, experiment: str, decision_id: str) -> tuple[str, bool]:
        place = filed(experiment, decision_id, int(time.time() * 1000))
        try:
            if place is not None:
                entry = await self.client.hget(place.key, place.field)
                if entry is not None and entry[:1] == b"@":
                    return entry[1:].decode(), False
                return decision_id, True
            raw = await self.client.get(keys.experiment_decision(experiment, decision_id))
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        return (raw.decode(), False) if raw is not None else (decision_id, True)

    async def assignment(self, guest_ref: str, experiment: str) -> JSONObject | None:
        try:
            field, legacy = await self.client.hmget(keys.guest(guest_ref), ASSIGNMENT_FIELD + experiment, "assignments")
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc
        if field is not None:
            entry = orjson.loads(field)
        else:  # a map written by a process from before the per-experiment fields
            entry = orjson.loads(legacy).get(experiment) if legacy else None
        return entry if isinstance(entry, dict) else None

    async def _hashes(self, experiment: str, arms: tuple[str, ...]) -> dict[str, dict[str, float]]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for arm in arms:
                pipe.hgetall(keys.experiment_tally(experiment, arm))
            raw = await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        return {arm: {k.decode(): float(v) for k, v in h.items()} for arm, h in zip(arms, raw, strict=True)}

    async def totals(self, experiment: str, arms: tuple[str, ...]) -> list[Tally]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for arm in arms:
                pipe.hmget(keys.experiment_tally(experiment, arm), "n", "c", "s", "q")
            raw = await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        return [Tally(int(n or 0), int(c or 0), float(s or 0), float(q or 0)) for n, c, s, q in raw]

    async def by_epoch(self, experiment: str, arms: tuple[str, ...]) -> TallyMap:
        return _split_epochs(await self._hashes(experiment, arms))

    async def epochs(self, experiment: str) -> dict[str, list[float]]:
        try:
            raw = await self.client.hgetall(keys.experiment_epochs(experiment))
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def claim_epoch(self, experiment: str, epoch: str, weights: list[float]) -> list[float]:
        key = keys.experiment_epochs(experiment)
        try:
            pipe = self.client.pipeline(transaction=True)
            # HSETNX: the first process to reach a new epoch fixes its weights for every process.
            pipe.hsetnx(key, epoch, orjson.dumps(weights))
            pipe.hget(key, epoch)
            _, raw = await pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        stored: list[float] = orjson.loads(raw)
        return stored

    async def forget(self, experiment: str, arms: tuple[str, ...]) -> None:
        try:
            await self.client.delete(keys.experiment_epochs(experiment))
            for arm in arms:
                await self.client.delete(keys.experiment_tally(experiment, arm))
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc


class MemoryLedger:
    """The embedded backend. No awaits between read and write, so each method is atomic on one loop."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.tallies: dict[tuple[str, str], dict[str, float]] = {}
        self.weights: dict[str, dict[str, list[float]]] = {}
        self.units: dict[tuple[str, str], JSONObject] = {}
        self.aliases: dict[tuple[str, str], tuple[str, int]] = {}
        """(experiment, decision id) → its guest's unit, and when the alias expires (ms)."""
        self._sweep_at_ms = 0

    def _add(self, experiment: str, arm: str, epoch: str, counts: dict[str, float]) -> None:
        fields = self.tallies.setdefault((experiment, arm), {})
        for name, value in counts.items():
            if value:
                fields[name] = fields.get(name, 0) + value
                fields[f"{name}@{epoch}"] = fields.get(f"{name}@{epoch}", 0) + value

    def _sweep(self, now_ms: int) -> None:
        # Units expire as Redis's do; without this a long-running embedded process kept every decision's unit.
        if now_ms < self._sweep_at_ms:
            return
        self._sweep_at_ms = now_ms + MINUTE_MS
        self.units = {k: u for k, u in self.units.items() if u["expires_ms"] > now_ms}
        self.aliases = {k: a for k, a in self.aliases.items() if a[1] > now_ms}

    async def expose(self, batch: list[Exposure]) -> None:
        for x in batch:
            self._sweep(x.at_ms)
            if (x.experiment, x.unit) not in self.units:
                ttl_s = x.window_s + (GUEST_UNIT_TTL_S if x.keep_assignment else UNIT_GRACE_S)
                self.units[(x.experiment, x.unit)] = {
                    "arm": x.arm,
                    "epoch": x.epoch,
                    "deadline_ms": x.at_ms + x.window_s * 1000,
                    "expires_ms": x.at_ms + ttl_s * 1000,
                    "rewarded": False,
                }
                self._add(x.experiment, x.arm, x.epoch, {"n": 1})
            if x.unit != x.decision_id:
                self.aliases[(x.experiment, x.decision_id)] = (x.unit, x.at_ms + x.window_s * 1000)
            if x.guest_ref:
                # The guest document holds the assignment when the guest exists (merges move it); a guest
                # with no document yet keeps it here until one exists.
                guest = self.store._guests.get(x.guest_ref)  # noqa: SLF001 — the embedded store's own document
                if guest is not None:
                    target = guest.setdefault("assignments", {})
                else:
                    target = self.store.extra.setdefault("assignments", {}).setdefault(x.guest_ref, {})
                if not (x.keep_assignment and x.experiment in target):
                    target[x.experiment] = x.assignment()

    async def claim(
        self, experiment: str, unit: str, now_ms: int, value: float | None = None, *, per_decision: bool = False
    ) -> tuple[str, str, str]:
        # One process owns the embedded ledger and rewards flush its exposures first: nothing to park.
        u = self.units.get((experiment, unit))
        if u is None or u["expires_ms"] <= now_ms:
            return "unknown", "", ""
        if u["rewarded"]:
            return "duplicate", u["arm"], u["epoch"]
        if now_ms > u["deadline_ms"]:
            return "late", u["arm"], u["epoch"]
        u["rewarded"] = True
        return "counted", u["arm"], u["epoch"]

    async def add_reward(self, experiment: str, arm: str, epoch: str, value: float) -> None:
        self._add(experiment, arm, epoch, {"c": 1, "s": value, "q": value * value})

    async def unit_of(self, experiment: str, decision_id: str) -> tuple[str, bool]:
        alias = self.aliases.get((experiment, decision_id))
        if alias is None or alias[1] <= time.time() * 1000:
            return decision_id, True
        return alias[0], False

    async def assignment(self, guest_ref: str, experiment: str) -> JSONObject | None:
        guest = self.store._guests.get(guest_ref)  # noqa: SLF001
        if guest is not None and experiment in guest.get("assignments", {}):
            entry: JSONObject = guest["assignments"][experiment]
            return entry
        found: JSONObject | None = self.store.extra.get("assignments", {}).get(guest_ref, {}).get(experiment)
        return found

    async def totals(self, experiment: str, arms: tuple[str, ...]) -> list[Tally]:
        return [_parse_tally(self.tallies.get((experiment, arm), {})) for arm in arms]

    async def by_epoch(self, experiment: str, arms: tuple[str, ...]) -> TallyMap:
        return _split_epochs({arm: dict(self.tallies.get((experiment, arm), {})) for arm in arms})

    async def epochs(self, experiment: str) -> dict[str, list[float]]:
        return dict(self.weights.get(experiment, {}))

    async def claim_epoch(self, experiment: str, epoch: str, weights: list[float]) -> list[float]:
        return self.weights.setdefault(experiment, {}).setdefault(epoch, weights)

    async def forget(self, experiment: str, arms: tuple[str, ...]) -> None:
        self.weights.pop(experiment, None)
        for arm in arms:
            self.tallies.pop((experiment, arm), None)


def open_ledger(store: Any) -> Ledger:
    if getattr(store, "name", None) == "redis":
        return RedisLedger(store)
    return MemoryLedger(store)
