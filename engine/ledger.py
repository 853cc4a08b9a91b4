"""Where experiment counters live: per-arm tallies by epoch, epoch weights, attribution units.

Two backends, like the store: :class:`RedisLedger` (shared by every engine process; atomic scripts in
``store/lua/experiment_*.lua``) and :class:`MemoryLedger` (the embedded store's process). Reads that feed
the request path (tallies for the allocation) happen on the refresher's schedule, never per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson
from redis.exceptions import RedisError

from engine import keys
from engine.bandit import Tally
from engine.errors import Unavailable
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
        return {"arm": self.arm, "epoch": self.epoch, "unit": self.unit, "at_ms": self.at_ms}


TallyMap = dict[str, dict[str, Tally]]
"""epoch → arm → tally."""


PARK_TTL_MS = 60_000
"""How long a reward may wait for its exposure to be written (exposures flush within milliseconds)."""


def _reward_counts(value: float | None) -> list[float]:
    """Tally increments (rewarded, sum, sum of squares) for a reward, or none."""
    return [0, 0, 0] if value is None else [1, value, value * value]


class Ledger(Protocol):
    async def expose(self, batch: list[Exposure]) -> None: ...

    async def claim(self, experiment: str, unit: str, now_ms: int, value: float | None = None) -> tuple[str, str, str]:
        """Mark a unit rewarded once: ``(counted|duplicate|late|unknown|parked, arm, epoch)``.

        With a ``value``, a reward for a unit not written yet is parked and counted when it opens."""
        ...

    async def add_reward(self, experiment: str, arm: str, epoch: str, value: float) -> None: ...

    async def unit_of(self, experiment: str, decision_id: str) -> str: ...

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
        self._tally = store.script("experiment_tally.lua")
        self._claim = store.script("experiment_claim.lua")
        self._assign = store.script("experiment_assign.lua")

    async def expose(self, batch: list[Exposure]) -> None:
        try:
            first = self.store.batch()
            for x in batch:
                deadline_ms = x.at_ms + x.window_s * 1000
                # A fixed-split guest's unit outlives one window: a returning guest is not a new exposure.
                ttl_s = x.window_s + (90 * 86400 if x.keep_assignment else 3600)
                unit_keys = [keys.experiment_unit(x.experiment, x.unit), keys.experiment_parked(x.experiment, x.unit)]
                first.script(self._expose, unit_keys, [x.arm, x.epoch, x.at_ms, deadline_ms, ttl_s])
            opened = await first.execute()
            then = self.store.batch()
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
            for x in batch:
                if x.unit != x.decision_id:
                    then.command("SET", keys.experiment_decision(x.experiment, x.decision_id), x.unit, "EX", x.window_s)
                if x.guest_ref:
                    then.script(
                        self._assign,
                        [keys.guest(x.guest_ref)],
                        [x.experiment, orjson.dumps(x.assignment()), "1" if x.keep_assignment else "0"],
                    )
            await then.execute()
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc

    async def claim(self, experiment: str, unit: str, now_ms: int, value: float | None = None) -> tuple[str, str, str]:
        unit_keys = [keys.experiment_unit(experiment, unit), keys.experiment_parked(experiment, unit)]
        try:
            status, arm, epoch = await self.store.hot_script(
                self._claim, unit_keys, [now_ms, "" if value is None else repr(value), PARK_TTL_MS]
            )
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

    async def unit_of(self, experiment: str, decision_id: str) -> str:
        try:
            raw = await self.client.get(keys.experiment_decision(experiment, decision_id))
        except RedisError as exc:
            raise Unavailable(f"experiment ledger unavailable: {exc}") from exc
        return raw.decode() if raw is not None else decision_id

    async def assignment(self, guest_ref: str, experiment: str) -> JSONObject | None:
        try:
            raw = await self.client.hget(keys.guest(guest_ref), "assignments")
        except RedisError as exc:
            raise Unavailable(f"guest store unavailable: {exc}") from exc
        entry = orjson.loads(raw).get(experiment) if raw else None
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
        self.aliases: dict[tuple[str, str], str] = {}

    def _add(self, experiment: str, arm: str, epoch: str, counts: dict[str, float]) -> None:
        fields = self.tallies.setdefault((experiment, arm), {})
        for name, value in counts.items():
            if value:
                fields[name] = fields.get(name, 0) + value
                fields[f"{name}@{epoch}"] = fields.get(f"{name}@{epoch}", 0) + value

    async def expose(self, batch: list[Exposure]) -> None:
        for x in batch:
            if (x.experiment, x.unit) not in self.units:
                self.units[(x.experiment, x.unit)] = {
                    "arm": x.arm,
                    "epoch": x.epoch,
                    "deadline_ms": x.at_ms + x.window_s * 1000,
                    "rewarded": False,
                }
                self._add(x.experiment, x.arm, x.epoch, {"n": 1})
            if x.unit != x.decision_id:
                self.aliases[(x.experiment, x.decision_id)] = x.unit
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

    async def claim(self, experiment: str, unit: str, now_ms: int, value: float | None = None) -> tuple[str, str, str]:
        # One process owns the embedded ledger and rewards flush its exposures first: nothing to park.
        u = self.units.get((experiment, unit))
        if u is None:
            return "unknown", "", ""
        if u["rewarded"]:
            return "duplicate", u["arm"], u["epoch"]
        if now_ms > u["deadline_ms"]:
            return "late", u["arm"], u["epoch"]
        u["rewarded"] = True
        return "counted", u["arm"], u["epoch"]

    async def add_reward(self, experiment: str, arm: str, epoch: str, value: float) -> None:
        self._add(experiment, arm, epoch, {"c": 1, "s": value, "q": value * value})

    async def unit_of(self, experiment: str, decision_id: str) -> str:
        return self.aliases.get((experiment, decision_id), decision_id)

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
