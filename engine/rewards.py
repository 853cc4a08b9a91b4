"""Rewards: matching a conversion to the exposure that caused it, and counting it exactly once.

The unit a reward is attributed to is the decision (bandits: every decision is a fresh draw) or, in a
fixed split, the guest (one guest, one assignment, one outcome — so A/B tests compare independent units).
A unit accepts one reward within its attribution window; a repeated or late reward is reported, not
counted. Units never rewarded count as the experiment's ``default_reward`` (see ``Tally.with_default``).

Two ways in:
- :func:`reward_decision` — the explicit reward call, ``POST /v1/experiments/{key}/rewards``;
- :func:`on_event` — **the hook for the events feature**: call ``await on_event(rt, guest_ref, event)`` for
  every applied event (after identity merges, with the surviving guest's ref). Events whose ``type`` is an
  experiment's goal are attributed, last touch, to the guest's entry in the guest document's
  ``assignments`` map (which merges carry to the survivor). Idempotent: replaying an event finds its unit
  already rewarded.
"""

from __future__ import annotations

import time
from typing import Any

from engine.errors import BadRequest
from engine.experiments import Experiment
from engine.lab import Lab
from engine.runtime import Runtime
from engine.types import JSONObject

REVENUE_FIELDS = ("value", "order.total", "order.totalPrice", "order.total_price")
"""Where a revenue goal without a declared ``value`` path looks for the amount in an event."""


def reward_value(exp: Experiment, value: Any, pointer: str = "/value") -> float:
    """The reward to count: a conversion is 1 unless stated otherwise; revenue needs an amount."""
    if isinstance(value, bool) or (value is not None and not isinstance(value, int | float)):
        raise BadRequest("'value' must be a number", pointer=pointer)
    if exp.goal_type == "binary":
        if value is None:
            return 1.0
        if value not in (0, 1):
            raise BadRequest("a conversion goal's reward is 0 or 1", pointer=pointer)
        return float(value)
    if value is None:
        raise BadRequest("a revenue goal's reward needs a numeric 'value'", pointer=pointer)
    return float(value)


async def reward_unit(
    lab: Lab, exp: Experiment, unit: str, value: float, *, per_decision: bool, now_ms: int | None = None
) -> JSONObject:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    await lab.flush()  # a reward right after its decision must find the exposure written
    status, arm, epoch = await lab.ledger.claim(exp.key, unit, now_ms, value, per_decision=per_decision)
    if status == "counted":
        await lab.ledger.add_reward(exp.key, arm, epoch, value)
    return {"experiment": exp.key, "status": status, "arm": arm or None, "epoch": epoch or None}


async def reward_decision(lab: Lab, exp: Experiment, decision_id: str, value: Any) -> JSONObject:
    amount = reward_value(exp, value)
    unit, per_decision = await lab.ledger.unit_of(exp.key, decision_id)
    return {"decision_id": decision_id, **await reward_unit(lab, exp, unit, amount, per_decision=per_decision)}


def _field(event: JSONObject, path: tuple[str, ...] | str) -> Any:
    value: Any = event
    for part in path.split(".") if isinstance(path, str) else path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def event_value(exp: Experiment, event: JSONObject) -> float | None:
    if exp.goal_type == "binary":
        return 1.0
    paths = (exp.goal_value_path,) if exp.goal_value_path else REVENUE_FIELDS
    for path in paths:
        value = _field(event, path)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                continue
    return None


async def on_event(rt: Runtime, guest_ref: str, event: JSONObject) -> list[JSONObject]:
    """Attribute ``event`` to the experiments whose goal it is; returns what was counted (for tracing).

    Cheap for events that are nobody's goal: a dictionary scan, no I/O.
    """
    lab = rt.services.get("experiments")
    if not isinstance(lab, Lab):
        return []
    etype = event.get("type")
    goals = [e for e in lab.experiments.values() if e.goal_event == etype and e.status != "draft"]
    out = []
    for exp in goals:
        entry = await lab.ledger.assignment(guest_ref, exp.key)
        if entry is None:
            await lab.flush()
            entry = await lab.ledger.assignment(guest_ref, exp.key)
        if entry is None or not isinstance(entry.get("unit"), str):
            continue
        value = event_value(exp, event)
        if value is None:
            out.append({"experiment": exp.key, "status": "no-value", "arm": entry.get("arm")})
            continue
        # Entries from before ``per`` was written name a guest's unit or a unit with a key of its own.
        out.append(await reward_unit(lab, exp, entry["unit"], value, per_decision=entry.get("per") == "decision"))
    return out
