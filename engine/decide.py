"""Making a decision: fetch the guest (one round trip) → evaluate the compiled plan → record.

Shared by every front door that asks for a decision (the native decide API, Sitecore-compatible
personalize calls, OFREP flags), so they all behave alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from engine import batching
from engine.errors import BadRequest, Unavailable
from engine.ids import timed_id
from engine.plan import Plan, Result, ResultTooLarge
from engine.runtime import Runtime
from engine.store import DecisionRecord, GuestLookup, Store, empty_guest
from engine.types import JSONObject


@dataclass(slots=True)
class Decision:
    decision_id: str
    plan: Plan
    result: Result
    guest_ref: str | None
    degraded: bool
    guest: JSONObject
    """The guest as read for this decision; a shadow evaluation reuses it instead of reading again."""
    outputs_json: bytes
    """``result.outputs`` serialised once, by the size check: the response and the decision log embed these
    bytes (``orjson.Fragment``) rather than serialising the outputs twice more."""

    def as_json(self, *, explain: bool) -> JSONObject:
        out: JSONObject = {
            "decision_id": self.decision_id,
            "model": {"key": self.plan.key, "version": self.plan.version},
            "outputs": orjson.Fragment(self.outputs_json),
        }
        if self.result.errors:
            out["errors"] = self.result.errors
        if self.degraded:
            out["degraded"] = True
        if explain:
            out["trace"] = self.result.trace_json()
        return out


def parse_lookup(raw: Any, pointer: str = "/guest") -> GuestLookup:
    """The request's guest: ``{browser_id}``, ``{guest_ref}`` or ``{identifiers: {provider, id}}``."""
    if raw is None:
        return GuestLookup()
    if not isinstance(raw, dict):
        raise BadRequest("must be an object naming the guest", pointer=pointer)
    for field in ("browser_id", "guest_ref"):
        value = raw.get(field)
        if value is not None:
            if not isinstance(value, str) or not value or len(value) > 128:
                raise BadRequest(
                    f"'{field}' must be a non-empty string of at most 128 characters", pointer=f"{pointer}/{field}"
                )
            return GuestLookup(**{field: value})
    ident = raw.get("identifiers")
    if ident is not None:
        if isinstance(ident, list) and ident:
            ident = ident[0]
        if (
            not isinstance(ident, dict)
            or not isinstance(ident.get("provider"), str)
            or not isinstance(ident.get("id"), str)
        ):
            raise BadRequest("'identifiers' must be {provider, id} strings", pointer=f"{pointer}/identifiers")
        return GuestLookup(provider=ident["provider"], identifier=ident["id"])
    raise BadRequest("name the guest by 'browser_id', 'guest_ref' or 'identifiers'", pointer=pointer)


async def fetch_guest(store: Store, lookup: GuestLookup, needs: GuestNeeds | None = None) -> tuple[JSONObject, bool]:
    """The guest document (what ``needs`` says of it, else all) and whether we are degraded (store down: answer
    from defaults, say so)."""
    try:
        if needs is None:
            guest = await store.guest_load(lookup)
        else:
            guest = await store.guest_load(lookup, session_events=needs.session_events, experiments=needs.experiments)
    except Unavailable:
        return empty_guest(lookup.direct_ref), True
    return (guest if guest is not None else empty_guest(lookup.direct_ref)), False


async def evaluate(rt: Runtime, plan: Plan, guest: JSONObject, context: JSONObject) -> Result:
    batcher = rt.services.get(batching.SERVICE)
    if batcher is not None:  # the app's workers: evaluated with the decisions ready at the same time
        result: Result = await batcher.evaluate(plan, guest, context)
        return result
    return await plan.evaluate_one(guest, context, rt.settings.deadline_ms)


async def decide(rt: Runtime, model_key: str, lookup: GuestLookup, context: JSONObject) -> tuple[Decision, Plan | None]:
    """Serve ``model_key`` for this guest. Returns the decision and the shadow plan to run after responding."""
    t0 = time.perf_counter()
    plan, shadow = await rt.registry.production(model_key)
    batcher = rt.services.get(batching.SERVICE)
    if batcher is not None:
        batcher.reading += 1  # a decision that may become ready in the same loop turn as another: company
    try:
        guest, degraded = await fetch_guest(rt.store, lookup, guest_needs(rt, plan, shadow))
    finally:
        if batcher is not None:
            batcher.reading -= 1
    result = await evaluate(rt, plan, guest, context)
    outputs_json = check_size(plan, result)
    now_ms = int(time.time() * 1000)
    decision_id = timed_id(now_ms)
    decision = Decision(decision_id, plan, result, guest.get("ref") or lookup.direct_ref, degraded, guest, outputs_json)
    served = record(decision, shadow=False, at_ms=now_ms)  # one clock: the record's time is its id's
    rt.recorder.record(served)
    for listener in rt.services.get("decision_listeners", ()):
        listener(served)  # e.g. experiments count the exposure; must not block
    rt.metrics.observe_decision(plan.key, time.perf_counter() - t0, result.trace)
    if degraded:
        rt.metrics.degraded.labels(plan.key).inc()
    return decision, shadow


class GuestNeeds(NamedTuple):
    """What of the guest a decision reads (:mod:`engine.guestreads`)."""

    session_events: bool
    """Whether the model (or the one shadowing it) or an experiment it chooses in may read the sessions' events."""
    experiments: tuple[str, ...] | None
    """The experiments whose assignments it reads: the fixed splits it chooses in, or None for all (a model or a
    targeting that may read the guest's ``assignments`` as a whole)."""


EVERYTHING = GuestNeeds(True, None)


def guest_needs(rt: Runtime, plan: Plan, shadow: Plan | None) -> GuestNeeds:
    """What this decision must read of the guest. An experiment this process does not know counts as reading
    everything."""
    lab = rt.services.get("experiments")
    experiments = lab.experiments if lab is not None else {}
    events = every_assignment = False
    kept: tuple[str, ...] = ()
    for p in (plan,) if shadow is None else (plan, shadow):
        events = events or p.reads_session_events
        every_assignment = every_assignment or p.reads_assignments
        for key in p.experiment_keys:
            exp = experiments.get(key)
            if exp is None:
                return EVERYTHING
            events = events or exp.reads_session_events
            every_assignment = every_assignment or exp.reads_assignments
            if exp.mode == "fixed" and key not in kept:
                kept += (key,)  # a fixed split keeps the arm its guest holds (a bandit draws per epoch)
    return GuestNeeds(events, None if every_assignment else kept)


async def run_shadow(rt: Runtime, shadow: Plan, decision: Decision, context: JSONObject) -> None:
    """Evaluate the model version in test on the same request; record its answer, serve nothing."""
    result = await evaluate(rt, shadow, decision.guest, context)
    shadow_decision = Decision(
        decision.decision_id,
        shadow,
        result,
        decision.guest_ref,
        decision.degraded,
        decision.guest,
        orjson.dumps(result.outputs),
    )
    rt.recorder.record(record(shadow_decision, shadow=True))


def record(decision: Decision, *, shadow: bool, at_ms: int | None = None) -> DecisionRecord:
    extra: JSONObject = {"errors": decision.result.errors} if decision.result.errors else {}
    arms = [e.output for e in decision.result.trace if e.kind == "experiment" and isinstance(e.output, dict)]
    if arms:
        # Logged with every decision so policies can be evaluated off-line; experiments are independent
        # draws, so the decision's propensity is the product.
        extra["experiments"] = arms
        extra["propensity"] = math.prod(a["propensity"] for a in arms)
    return DecisionRecord(
        decision.decision_id,
        decision.plan.key,
        decision.plan.version,
        decision.guest_ref,
        orjson.Fragment(decision.outputs_json),
        shadow,
        int(time.time() * 1000) if at_ms is None else at_ms,
        extra,
    )


def check_size(plan: Plan, result: Result) -> bytes:
    """``result.outputs`` as JSON, once it is known to fit the model's cap."""
    outputs_json = orjson.dumps(result.outputs)
    size = len(outputs_json)
    if size > plan.max_result_bytes:
        raise ResultTooLarge(
            f"the model's result is {size} bytes; the cap is {plan.max_result_bytes}", pointer="/outputs"
        )
    return outputs_json
