"""Admin API for decision models: upload, validate, list, publish, shadow, roll back, archive, test."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api.bodies import as_object, optional, read_body, read_json
from engine.api.responses import json_response
from engine.auth import require_admin
from engine.decide import check_size
from engine.decide import evaluate as evaluate_plan
from engine.errors import BadRequest
from engine.runtime import Runtime, runtime
from engine.store import empty_guest


def _admin(request: Request) -> Runtime:
    rt = runtime(request)
    require_admin(request, rt.settings)
    return rt


def _version(request: Request) -> int:
    raw = request.path_params["version"]
    if not raw.isdigit():
        raise BadRequest(f"version must be a positive integer, not '{raw}'", pointer="/version")
    return int(raw)


async def upload_model(request: Request) -> Response:
    rt = _admin(request)
    body = await read_body(request, rt.settings.max_body_bytes)
    created = await rt.registry.upload(request.path_params["key"], body, request.headers.get("content-type"))
    if request.query_params.get("publish") in ("1", "true"):
        created = {**created, **await rt.registry.set_state(created["key"], created["version"], "production")}
        created["state"] = "production"
    location = {"Location": f"/v1/models/{created['key']}/versions/{created['version']}"}
    return json_response(created, 201 if created["created"] else 200, headers=location)


async def validate_model(request: Request) -> Response:
    rt = _admin(request)
    body = await read_body(request, rt.settings.max_body_bytes)
    return json_response(
        await rt.registry.validate(request.path_params["key"], body, request.headers.get("content-type"))
    )


async def list_models(request: Request) -> Response:
    rt = _admin(request)
    return json_response({"models": await rt.registry.list()})


async def get_model(request: Request) -> Response:
    rt = _admin(request)
    return json_response(await rt.registry.describe(request.path_params["key"]))


async def get_version(request: Request) -> Response:
    rt = _admin(request)
    return json_response(await rt.registry.version_document(request.path_params["key"], _version(request)))


async def publish_version(request: Request) -> Response:
    rt = _admin(request)
    return json_response(await rt.registry.set_state(request.path_params["key"], _version(request), "production"))


async def set_version_state(request: Request) -> Response:
    rt = _admin(request)
    body = as_object(await read_json(request, rt.settings.max_body_bytes), "")
    state = optional(body, "state", str, "")
    if state is None:
        raise BadRequest("'state' is required: draft, test, production or archived", pointer="/state")
    return json_response(await rt.registry.set_state(request.path_params["key"], _version(request), state))


async def rollback_model(request: Request) -> Response:
    rt = _admin(request)
    body = as_object(await read_json(request, rt.settings.max_body_bytes, allow_empty=True), "")
    version = optional(body, "version", int, "")
    return json_response(await rt.registry.rollback(request.path_params["key"], version))


async def test_model(request: Request) -> Response:
    """Evaluate a version against a supplied guest and context. Reads nothing, writes nothing."""
    rt = _admin(request)
    body = as_object(await read_json(request, rt.settings.max_body_bytes), "")
    guest = {**empty_guest(None), **optional(body, "guest", dict, "", {})}
    context = optional(body, "context", dict, "", {})
    plan = await rt.registry.resolve(request.path_params["key"], optional(body, "version", int, ""))
    result = await evaluate_plan(rt, plan, guest, context)
    check_size(plan, result)
    return json_response(
        {
            "model": {"key": plan.key, "version": plan.version},
            "outputs": result.outputs,
            "errors": result.errors,
            "trace": result.trace_json(),
        }
    )


async def recent_decisions(request: Request) -> Response:
    rt = _admin(request)
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000", pointer="/limit")
    await rt.recorder.flush()
    return json_response({"decisions": await rt.store.decisions_recent(int(raw))})


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{key}", upload_model, methods=["PUT"]),
    Route("/v1/models/{key}", get_model, methods=["GET"]),
    Route("/v1/models/{key}/validate", validate_model, methods=["POST"]),
    Route("/v1/models/{key}/test", test_model, methods=["POST"]),
    Route("/v1/models/{key}/rollback", rollback_model, methods=["POST"]),
    Route("/v1/models/{key}/versions/{version}", get_version, methods=["GET"]),
    Route("/v1/models/{key}/versions/{version}/publish", publish_version, methods=["POST"]),
    Route("/v1/models/{key}/versions/{version}/state", set_version_state, methods=["POST"]),
    Route("/v1/decisions", recent_decisions, methods=["GET"]),
]
