"""Where experiment counters live: per-arm tallies by epoch, epoch weights, attribution units.

Two backends, like the store: :class:`RedisLedger` (shared by every engine process; atomic scripts in
``store/lua/experiment_*.lua``) and :class:`MemoryLedger` (the embedded store's process). Reads that feed
the request path (tallies for the allocation) happen on the refresher's schedule, never per request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson
from redis.exceptions import RedisError

from engine import keys
from engine.bandit import Tally
from engine.errors import Unavailable
from engine.ids import time_of
from engine.store.redis import ASSIGNMENT_FIELD
from engine.types import JSONObject

if TYPE_CHECKING:
    from engine.store.redis import RedisStore


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
    at_ms = time_of(decision_id)
    if at_ms is None or not now_ms - MAX_UNIT_AGE_MS <= at_ms <= now_ms + CLOCK_SKEW_MS:
        return None
    key = keys.experiment_minute(experiment, at_ms // MINUTE_MS, int(decision_id[-1], 16) % MINUTE_SHARDS)
    return Filed(key, bytes.fromhex(decision_id), at_ms)


def _reward_counts(value: float | None) -> list[float]:
    """Tally increments (rewarded, sum, sum of squares) for a reward, or none."""
    return [0, 0, 0] if value is None else [1, value, value * value]


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

    async def expose(self, batch: list[Exposure]) -> None:
        try:
            opened, aliases, parked_for_guests = await self._open_units(batch)
            then = self.store.batch()
            # A reward that reached another process before a split's decision was written was parked under the
            # decision; it belongs to the guest's unit, opened just now (rare: claimed one at a time).
            for x, value in parked_for_guests:
                status, arm, epoch = await self.claim(x.experiment, x.unit, int(time.time() * 1000), value)
                if status == "counted":
                    then.script(
                        self._tally, [keys.experiment_tally(x.experiment, arm)], [epoch, 0, *_reward_counts(value)]
                    )
            # New exposures of one arm and epoch add up to one tally call (a bandit arm takes most of a batch);
            # a parked reward, rare, carries its own counts.
            added: dict[tuple[str, str, str], int] = {}
            for x, (new, parked) in zip(batch, opened, strict=True):
                if new and parked:
                    counts = [x.epoch, 1, *_reward_counts(float(parked))]
                    then.script(self._tally, [keys.experiment_tally(x.experiment, x.arm)], counts)
                elif new:
                    added[x.experiment, x.arm, x.epoch] = added.get((x.experiment, x.arm, x.epoch), 0) + 1
            for (experiment, arm, epoch), n in added.items():
                then.script(self._tally, [keys.experiment_tally(experiment, arm)], [epoch, n, *_reward_counts(None)])
            for x in aliases:
                then.command("SET", keys.experiment_decision(x.experiment, x.decision_id), x.unit, "EX", x.window_s)
            assigned = [x for x in batch if x.guest_ref]
            for group in self.store.slot_groups([keys.guest(x.guest_ref or "") for x in assigned], ASSIGN_BATCH):
                args: list[Any] = []
                for i in group.indices:
                    x = assigned[i]
                    entry = orjson.dumps(x.assignment())
                    args += (ASSIGNMENT_FIELD + x.experiment, entry, "1" if x.keep_assignment else "0")
                then.script(self._assign, group.keys, args)
            await then.execute()
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc

    async def _open_units(
        self, batch: list[Exposure]
    ) -> tuple[list[tuple[int, bytes]], list[Exposure], list[tuple[Exposure, float]]]:
        """Open every exposure's unit in one round trip: per exposure, whether its unit is new and the reward
        parked for it; the exposures whose decision still needs an alias key of its own; and rewards parked under
        a split's decision, for its guest's unit."""
        first = self.store.batch()
        where: list[tuple[str, int] | int] = []
        """Per exposure: where its reply is: a minute call's and the pair's place in it, or its own call's index."""
        minutes: dict[str, list[Any]] = {}
        """Minute hash → its call's arguments: TTL (ms), then decision id and entry pairs."""
        aliases: list[Exposure] = []
        pointers: list[tuple[Exposure, str, int]] = []
        """Exposures whose decision points at its guest's unit from a minute hash, and where in its reply."""
        for x in batch:
            unit = filed(x.experiment, x.decision_id, x.at_ms)
            if unit is not None:
                # The hash lives until the window of its minute's last decision closes, and its grace.
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
            first.script(self._expose, unit_keys, [x.arm, x.epoch, x.at_ms, deadline_ms, ttl_s])
        own = len(first)
        groups = self.store.slot_groups(list(minutes), MINUTE_KEYS_PER_CALL)
        for group in groups:
            argv: list[Any] = []
            for minute in group.keys:
                args = minutes[minute]
                argv += (args[0], (len(args) - 1) // 2, *args[1:])
            first.script(self._expose_minute, group.keys, argv)
        replies = await first.execute()
        by_minute: dict[str, list[Any]] = {}
        for group, reply in zip(groups, replies[own:], strict=True):
            start = 0
            for minute in group.keys:
                end = start + len(minutes[minute]) - 1  # two replies per pair, as many as the pairs' arguments
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
        parked_for_guests = [(x, float(by_minute[k][i + 1])) for x, k, i in pointers if by_minute[k][i + 1]]
        return opened, aliases, parked_for_guests

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
