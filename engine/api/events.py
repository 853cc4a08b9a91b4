"""``POST /v1/events``: one event or a batch, acknowledged only once logged and applied."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api._listen import listen
from engine.api.bodies import read_json
from engine.api.responses import json_response
from engine.auth import require_admin, require_public
from engine.errors import BadRequest
from engine.events import Event, parse_event
from engine.runtime import runtime


def parse_batch(body: Any, pos: str, now_ms: int, max_events: int) -> tuple[list[Event], bool]:
    """An event object, an array of them, or ``{"events": [...]}``; (events, whether it was a batch).

    Every event is validated before any is recorded, so a bad batch is rejected whole, with a pointer.
    """
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        items, prefix, batch = body["events"], "/events", True
    elif isinstance(body, list):
        items, prefix, batch = body, "", True
    else:
        items, prefix, batch = [body], None, False
    if batch and not 1 <= len(items) <= max_events:
        raise BadRequest(f"a batch holds 1 to {max_events} events, not {len(items)}", pointer=prefix)
    events = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and not item.get("pos"):
            item = {**item, "pos": pos}
        events.append(parse_event(item, f"{prefix}/{i}" if prefix is not None else "", now_ms=now_ms))
    return events, batch


async def post_events(request: Request) -> Response:
    rt = runtime(request)
    pos = require_public(request, rt.settings)
    service = listen(rt)
    body = await read_json(request, rt.settings.max_body_bytes)
    events, batch = parse_batch(body, pos, service.ingest.clock(), rt.settings.max_batch_events)
    receipts = await service.ingest.record_many(events)
    if batch:
        return json_response({"events": [r.as_json() for r in receipts]}, 201)
    return json_response(receipts[0].as_json(), 201)


async def abandoned_carts(request: Request) -> Response:
    """The most recent abandoned-cart records (what a trigger consumes), for operators and tests."""
    rt = runtime(request)
    require_admin(request, rt.settings)
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000", pointer="/limit")
    return json_response({"abandoned": await listen(rt).ingest.profiles.abandoned(int(raw))})


routes = [
    Route("/v1/events", post_events, methods=["POST"]),
    Route("/v1/abandoned-carts", abandoned_carts, methods=["GET"]),
]
