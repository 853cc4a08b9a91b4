"""Sitecore-compatible endpoints, so the Cloud SDK (events + personalize 0.6.x) works unchanged.

The SDK's only credential is ``sitecoreContextId`` (mapped to a point of sale by ``ARBITER_CONTEXT_IDS``;
with the demo keys any context id speaks for the default point of sale). Errors come back in the shapes
the SDK parses — ``{error_msg, moreInfo}`` for browser calls, ``{status, code, message, developerMessage,
moreInfoUrl}`` for personalize — never as problem+json.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api._listen import listen
from engine.api.bodies import as_object, read_json
from engine.api.events import parse_batch
from engine.api.responses import json_response
from engine.config import DEFAULT_POS, Settings
from engine.decide import decide, run_shadow
from engine.errors import ArbiterError, SdkError
from engine.identity import resolve
from engine.runtime import Runtime, runtime
from engine.sessions import new_guest
from engine.store import GuestLookup
from engine.types import JSONObject

Handler = Callable[[Request], Awaitable[Response]]


def context_pos(request: Request, settings: Settings, shape: str) -> str:
    """The point of sale a ``sitecoreContextId`` (or a public ``client_key``/``clientKey``) speaks for."""
    ctx = request.query_params.get("sitecoreContextId")
    if ctx and ctx in settings.context_ids:
        return settings.context_ids[ctx]
    key = request.query_params.get("client_key")
    if key and key in settings.public_keys:
        return settings.public_keys[key]
    if ctx and settings.uses_demo_keys:
        return DEFAULT_POS
    raise SdkError(401, "unknown or missing sitecoreContextId", shape=shape, code="UNAUTHORIZED")


def compat(shape: str) -> Callable[[Handler], Handler]:
    """Any Arbiter error inside the handler leaves in this API's error shape, with its status and pointer."""

    def wrap(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except SdkError:
                raise
            except ArbiterError as exc:
                raise SdkError(exc.status, exc.detail, shape=shape, code=exc.slug, pointer=exc.pointer) from exc

        return run

    return wrap


@compat("browser")
async def create_browser(request: Request) -> Response:
    rt = runtime(request)
    context_pos(request, rt.settings, "browser")
    ref = str(uuid.uuid4())
    # Written now, so the SDK's next call (show.json) knows this browser before any event arrives.
    await listen(rt).ingest.profiles.commit(ref, new_guest(ref), 0, token=None, now_ms=listen(rt).ingest.clock())
    return json_response({"ref": ref, "customer_ref": ref, "status": "OK", "version": "1.2"})


@compat("browser")
async def show_browser(request: Request) -> Response:
    rt = runtime(request)
    context_pos(request, rt.settings, "browser")
    ingest = listen(rt).ingest
    browser_id = request.path_params["browser_id"]
    ref = await resolve(ingest.profiles, browser_id, ingest.clock(), ingest.limits)
    if (await ingest.profiles.read(ref)).guest is None:
        raise SdkError(404, f"browser {browser_id} is not known", shape="browser", code="NOT_FOUND")
    return json_response({"ref": browser_id, "customer": {"ref": ref}, "status": "OK", "version": "1.2"})


@compat("browser")
async def post_event(request: Request) -> Response:
    rt = runtime(request)
    pos = context_pos(request, rt.settings, "browser")
    ingest = listen(rt).ingest
    body = await read_json(request, rt.settings.max_body_bytes)
    events, _ = parse_batch(as_object(body, ""), pos, ingest.clock(), 1)
    receipt = await ingest.record(events[0])
    return json_response({"ref": receipt.ref, "status": "OK", "version": "1.2", "customer_ref": receipt.guest_ref}, 201)


def _lookup(body: JSONObject) -> GuestLookup:
    for field, name in (("guestRef", "guest_ref"), ("browserId", "browser_id")):
        value = body.get(field)
        if isinstance(value, str) and value:
            return GuestLookup(**{name: value})
    ident = body.get("identifiers")
    if isinstance(ident, list) and ident:
        ident = ident[0]
    if isinstance(ident, dict) and isinstance(ident.get("provider"), str) and isinstance(ident.get("id"), str):
        return GuestLookup(provider=ident["provider"].lower(), identifier=ident["id"])
    email = body.get("email")
    if isinstance(email, str) and email:
        return GuestLookup(provider="email", identifier=email)
    return GuestLookup()


def _context(body: JSONObject, pos: str) -> JSONObject:
    params = body.get("params")
    context: JSONObject = dict(params) if isinstance(params, dict) else {}
    for wire, name in (("channel", "channel"), ("language", "language"), ("currencyCode", "currency"),
                       ("friendlyId", "friendly_id"), ("variants", "variants")):  # fmt: skip
        if body.get(wire) is not None:
            context[name] = body[wire]
    context["pos"] = body.get("pointOfSale") or pos
    return context


async def _personalize(rt: Runtime, body: JSONObject, pos: str) -> Response:
    friendly_id = body.get("friendlyId")
    if not isinstance(friendly_id, str) or not friendly_id:
        raise SdkError(400, "'friendlyId' is required", shape="personalize", code="BAD_REQUEST", pointer="/friendlyId")
    context = _context(body, pos)
    decision, shadow = await decide(rt, friendly_id, _lookup(body), context)
    background = BackgroundTask(run_shadow, rt, shadow, decision, context) if shadow is not None else None
    outputs: Any = decision.result.outputs
    return json_response(outputs if isinstance(outputs, dict) else {"value": outputs}, background=background)


@compat("personalize")
async def personalize(request: Request) -> Response:
    rt = runtime(request)
    pos = context_pos(request, rt.settings, "personalize")
    return await _personalize(rt, as_object(await read_json(request, rt.settings.max_body_bytes), ""), pos)


@compat("personalize")
async def call_flows(request: Request) -> Response:
    """The older direct call: authenticated by the body's ``clientKey`` (a public key) instead."""
    rt = runtime(request)
    body = as_object(await read_json(request, rt.settings.max_body_bytes), "")
    key = body.get("clientKey")
    pos = rt.settings.public_keys.get(key) if isinstance(key, str) else None
    return await _personalize(rt, body, pos or context_pos(request, rt.settings, "personalize"))


# Browser SDK calls come from storefront pages on other origins; credentials are never cookies here.
CORS = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"])]


def _route(path: str, endpoint: Handler, method: str) -> Route:
    return Route(path, endpoint, methods=[method, "OPTIONS"], middleware=CORS)


routes = [
    _route("/v1/events/v1.2/browser/create.json", create_browser, "GET"),
    _route("/v1/events/v1.2/browser/{browser_id}/show.json", show_browser, "GET"),
    _route("/v1/events/v1.2/events", post_event, "POST"),
    _route("/v1.2/browser/create.json", create_browser, "GET"),
    _route("/v1.2/browser/{browser_id}/show.json", show_browser, "GET"),
    _route("/v1.2/events", post_event, "POST"),
    _route("/v1/personalize", personalize, "POST"),
    _route("/v2/callFlows", call_flows, "POST"),
]
