"""``offers``: the model's offer catalogue as a knowledge source — filter, rank, take the top N.

The catalogue is the model's top-level ``offers`` list (id, name, attributes, eligibility, validity
dates). Each offer's eligibility is compiled once; per request the node walks the catalogue with the
offer bound as ``offer`` and returns the surviving offers as plain objects.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from engine.errors import Problem
from engine.feel import Expression
from engine.nodes.base import CompileContext, Node, TraceEntry, known_keys, references
from engine.types import JSONObject, Scope

KIND = "offers"
LOCAL_NAME = "offer"
_UNBOUND = object()


@dataclass(frozen=True, slots=True)
class Offer:
    payload: JSONObject
    """What the node outputs for this offer: id, name and attributes flattened."""
    eligibility: Expression | None
    valid_from_s: float | None
    valid_to_s: float | None


@dataclass(frozen=True, slots=True)
class OffersNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    catalogue: tuple[Offer, ...]
    filter: Expression | None
    rank: Expression | None
    descending: bool
    limit: int | None

    def evaluate(self, scope: Scope, trace: TraceEntry) -> list[JSONObject]:
        now_s = _now_s(scope)
        kept: list[tuple[Any, int, JSONObject]] = []
        # ``offer`` is bound in the request's own scope dict (created per evaluation, and this loop never
        # awaits), then unbound: a wrapping Mapping made every name lookup a Python call, and the catalogue
        # loop is most of a decision's evaluation time (benchmarks/RESULTS.md).
        bound = cast(dict[str, Any], scope)
        saved = bound.get(LOCAL_NAME, _UNBOUND)
        try:
            for i, offer in enumerate(self.catalogue):
                if offer.valid_from_s is not None and now_s < offer.valid_from_s:
                    continue
                if offer.valid_to_s is not None and now_s >= offer.valid_to_s:
                    continue
                bound[LOCAL_NAME] = offer.payload
                if offer.eligibility is not None and offer.eligibility(bound) is not True:
                    continue
                if self.filter is not None and self.filter(bound) is not True:
                    continue
                kept.append((self.rank(bound) if self.rank is not None else None, i, offer.payload))
        finally:
            if saved is _UNBOUND:
                bound.pop(LOCAL_NAME, None)
            else:
                bound[LOCAL_NAME] = saved
        if self.rank is not None:
            # Unrankable offers (null score) sort last whatever the direction; ties keep catalogue order.
            ranked = [k for k in kept if k[0] is not None]
            ranked.sort(key=lambda k: k[0], reverse=self.descending)
            kept = ranked + [k for k in kept if k[0] is None]
        out = [payload for _, _, payload in kept[: self.limit]]
        trace.matched = [str(o.get("id")) for o in out]
        return out


def _now_s(scope: Scope) -> float:
    """The request's clock: ``context.now`` (ISO) when a test pins it, else the wall clock."""
    ctx = scope.get("context")
    if isinstance(ctx, Mapping) and isinstance(ctx.get("now"), str):
        parsed = _instant_s(ctx["now"])
        if parsed is not None:
            return parsed
    return time.time()


def _instant_s(text: str) -> float | None:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp()
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def compile_catalogue(model: JSONObject, ctx: CompileContext) -> tuple[Offer, ...]:
    names = ctx.names | {LOCAL_NAME}
    local = CompileContext(names, ctx.model, ctx.problems, ctx.services)
    offers: list[Offer] = []
    raw = model.get("offers", [])
    if not isinstance(raw, list):
        ctx.problems.append(Problem("/offers", "must be a list of offers"))
        return ()
    seen: set[str] = set()
    for i, o in enumerate(raw):
        p = f"/offers/{i}"
        if not isinstance(o, dict) or not isinstance(o.get("id"), str):
            ctx.problems.append(Problem(f"{p}/id", "an offer needs a string 'id'"))
            continue
        if o["id"] in seen:
            ctx.problems.append(Problem(f"{p}/id", f"duplicate offer id '{o['id']}'"))
        seen.add(o["id"])
        window: list[float | None] = []
        for field in ("valid_from", "valid_to"):
            value = o.get(field)
            instant = _instant_s(value) if isinstance(value, str) else None
            if value is not None and instant is None:
                ctx.problems.append(Problem(f"{p}/{field}", "must be an ISO 8601 date or date-time"))
            window.append(instant)
        eligibility = local.expression(o["eligibility"], f"{p}/eligibility") if "eligibility" in o else None
        payload = {"id": o["id"], "name": o.get("name", o["id"]), **o.get("attributes", {})}
        offers.append(Offer(payload, eligibility, window[0], window[1]))
    return tuple(offers)


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    known_keys(defn, ("filter", "rank", "order", "limit"), pointer, ctx)
    local = CompileContext(ctx.names | {LOCAL_NAME}, ctx.model, ctx.problems, ctx.services)
    flt = local.expression(defn["filter"], f"{pointer}/filter") if "filter" in defn else None
    rank = local.expression(defn["rank"], f"{pointer}/rank") if "rank" in defn else None
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    order = defn.get("order", "desc")
    if order not in ("asc", "desc"):
        ctx.problems.append(Problem(f"{pointer}/order", "must be 'asc' or 'desc'"))
    limit = defn.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        ctx.problems.append(Problem(f"{pointer}/limit", "must be a positive integer"))
        limit = None
    catalogue = compile_catalogue(ctx.model, ctx)
    deps = references(flt, rank, gate, *(o.eligibility for o in catalogue)) - {LOCAL_NAME}
    return OffersNode(defn["id"], KIND, deps, gate, catalogue, flt, rank, order == "desc", limit)
