"""OpenFeature Remote Evaluation Protocol (OFREP v1): experiments and decision models read as flags.

- ``POST /ofrep/v1/evaluate/flags/{key}`` with ``{"context": {"targetingKey": …, …}}``: an experiment's
  arm (``variant`` = arm id, ``value`` = the arm's payload, or its id when it has none), or a decision
  model's output (``value`` = the outputs);
- ``POST /ofrep/v1/evaluate/flags``: every experiment for the context, with an ``ETag``; a matching
  ``If-None-Match`` gets ``304``.

Errors use OFREP's shape ``{key, errorCode, errorDetails}`` (400, or 404 for ``FLAG_NOT_FOUND``), not
problem+json, because OpenFeature providers parse them. The ``targetingKey`` names the guest (guest ref or
browser id). Every evaluation that shows an arm is a served decision: it gets a ``decision_id`` (in the
metadata, for reward calls), its propensity is logged, and its exposure is counted.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api.bodies import read_body
from engine.api.responses import json_response
from engine.auth import require_public
from engine.decide import decide, fetch_guest
from engine.errors import ArbiterError, NotFound
from engine.ids import timed_id
from engine.lab import Lab
from engine.runtime import Runtime, runtime
from engine.store import DecisionRecord, GuestLookup
from engine.types import JSONObject


class FlagError(Exception):
    def __init__(self, code: str, details: str, status: int = 400) -> None:
        super().__init__(details)
        self.code, self.details, self.status = code, details, status


def _error(key: str | None, exc: FlagError) -> Response:
    body: JSONObject = {"errorCode": exc.code, "errorDetails": exc.details}
    if key is not None:
        body = {"key": key, **body}
    return json_response(body, exc.status)


async def _context(request: Request, rt: Runtime) -> JSONObject:
    raw = await read_body(request, rt.settings.max_body_bytes)
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise FlagError("PARSE_ERROR", f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise FlagError("PARSE_ERROR", "the request body must be a JSON object")
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise FlagError("INVALID_CONTEXT", "'context' must be an object")
    tk = context.get("targetingKey")
    if tk is not None and (not isinstance(tk, str) or not tk or len(tk) > 128):
        raise FlagError("INVALID_CONTEXT", "'targetingKey' must be a non-empty string of at most 128 characters")
    return context


def _serve(rt: Runtime, lab: Lab, key: str, guest: JSONObject, context: JSONObject, pos: str) -> JSONObject:
    exp = lab.get(key)
    attrs = {k: v for k, v in context.items() if k != "targetingKey"}
    attrs.setdefault("pos", pos)
    choice = lab.choose(key, guest, attrs)
    now_ms = int(time.time() * 1000)
    decision_id = timed_id(now_ms)
    out = choice.as_output()
    extra = {"experiments": [out], "propensity": choice.propensity, "via": "ofrep"}
    record = DecisionRecord(decision_id, f"flag:{key}", exp.revision, guest.get("ref"), out, False, now_ms, extra)
    rt.recorder.record(record)
    lab.observe(record)
    metadata = {
        "experiment": key,
        "revision": exp.revision,
        "epoch": choice.epoch,
        "propensity": choice.propensity,
        "decision_id": decision_id,
    }
    value = choice.payload if choice.payload is not None else choice.arm
    return {"key": key, "value": value, "variant": choice.arm, "reason": choice.reason, "metadata": metadata}


async def _evaluate(rt: Runtime, key: str, context: JSONObject, pos: str) -> JSONObject:
    lab = rt.services.get("experiments")
    tk = context.get("targetingKey")
    if isinstance(lab, Lab) and key in lab.experiments:
        if tk is None:
            raise FlagError("TARGETING_KEY_MISSING", "an experiment flag needs 'targetingKey' (the guest ref)")
        guest, _ = await fetch_guest(rt.store, GuestLookup(guest_ref=tk))
        return _serve(rt, lab, key, guest, context, pos)
    try:
        await rt.registry.production(key)
    except NotFound as exc:
        raise FlagError("FLAG_NOT_FOUND", f"no experiment or decision model '{key}'", 404) from exc
    attrs = {k: v for k, v in context.items() if k != "targetingKey"}
    attrs.setdefault("pos", pos)
    decision, _ = await decide(rt, key, GuestLookup(guest_ref=tk) if tk else GuestLookup(), attrs)
    outputs = decision.result.outputs
    metadata: dict[str, Any] = {"model": key, "version": decision.plan.version, "decision_id": decision.decision_id}
    variant, reason = f"v{decision.plan.version}", "TARGETING_MATCH"
    arms = [e.output for e in decision.result.trace if e.kind == "experiment" and isinstance(e.output, dict)]
    if len(arms) == 1 and arms[0].get("arm") is not None:
        variant, reason = arms[0]["arm"], arms[0]["reason"]
        metadata.update(experiment=arms[0]["experiment"], propensity=arms[0]["propensity"])
    if decision.result.errors:
        reason = "ERROR" if outputs is None else reason
    return {"key": key, "value": outputs, "variant": variant, "reason": reason, "metadata": metadata}


async def evaluate_flag(request: Request) -> Response:
    rt = runtime(request)
    pos = require_public(request, rt.settings)
    key = request.path_params["key"]
    try:
        return json_response(await _evaluate(rt, key, await _context(request, rt), pos))
    except FlagError as exc:
        return _error(key, exc)
    except ArbiterError as exc:
        if exc.status in (401, 403):
            raise
        return _error(key, FlagError("GENERAL", exc.detail, 500 if exc.status >= 500 else 400))


async def evaluate_flags(request: Request) -> Response:
    rt = runtime(request)
    pos = require_public(request, rt.settings)
    try:
        context = await _context(request, rt)
    except FlagError as exc:
        return _error(None, exc)
    lab = rt.services.get("experiments")
    flags: list[JSONObject] = []
    if isinstance(lab, Lab):
        tk = context.get("targetingKey")
        guest = None
        for key in sorted(lab.experiments):
            if lab.experiments[key].status == "draft":
                continue
            if tk is None:
                flags.append({"key": key, "errorCode": "TARGETING_KEY_MISSING", "errorDetails": "no targetingKey"})
                continue
            if guest is None:
                guest, _ = await fetch_guest(rt.store, GuestLookup(guest_ref=tk))
            flags.append(_serve(rt, lab, key, guest, context, pos))
    # The ETag covers what the client would cache: values and variants, not per-call decision ids.
    stable = [{k: v for k, v in f.items() if k != "metadata"} for f in flags]
    etag = '"' + hashlib.blake2b(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest() + '"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return json_response({"flags": flags}, headers={"ETag": etag})


routes = [
    Route("/ofrep/v1/evaluate/flags", evaluate_flags, methods=["POST"]),
    Route("/ofrep/v1/evaluate/flags/{key}", evaluate_flag, methods=["POST"]),
]
