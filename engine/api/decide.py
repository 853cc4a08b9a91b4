"""``POST /v1/decide/{model_key}``: the storefront's question, "what should this guest see?"."""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api.bodies import as_object, optional, read_json
from engine.api.responses import json_response
from engine.auth import require_public
from engine.decide import decide as make_decision
from engine.decide import parse_lookup, run_shadow
from engine.runtime import runtime


async def decide(request: Request) -> Response:
    rt = runtime(request)
    pos = require_public(request, rt.settings)
    body = as_object(await read_json(request, rt.settings.max_body_bytes), "")
    lookup = parse_lookup(body.get("guest"))
    context = optional(body, "context", dict, "", {})
    explain = optional(body, "explain", bool, "", False)
    context.setdefault("pos", pos)
    decision, shadow = await make_decision(rt, request.path_params["model_key"], lookup, context)
    background = BackgroundTask(run_shadow, rt, shadow, decision, context) if shadow is not None else None
    return json_response(decision.as_json(explain=explain), background=background)


routes = [Route("/v1/decide/{model_key}", decide, methods=["POST"])]
