"""Admin API for connections: create or replace, read (secrets redacted), list, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import connections
from engine.api.bodies import read_json
from engine.api.responses import json_response
from engine.auth import require_admin
from engine.egress import check_host
from engine.errors import ExternalCallFailed, NotFound, Problem, ValidationError
from engine.runtime import Runtime, runtime


def _admin(request: Request) -> Runtime:
    rt = runtime(request)
    require_admin(request, rt.settings)
    return rt


def _forget(rt: Runtime, key: str) -> None:
    directory = connections.directory_for(rt.services)
    if directory is not None:
        directory.forget(key)


async def put_connection(request: Request) -> Response:
    rt = _admin(request)
    key = request.path_params["key"]
    body = await read_json(request, rt.settings.max_body_bytes)
    old = await rt.store.resource_get(connections.KIND, key)
    if isinstance(body, dict):
        body = connections.carry_secret({k: v for k, v in body.items() if k != "key"}, old)
    conn = connections.parse(key, body)
    # Publish-time SSRF check: refuse a base URL that resolves to loopback, private or metadata
    # addresses unless the connection says so. The request-time guard checks again on every connect.
    try:
        await check_host(conn.host, conn.port, allow_private=conn.allow_private)
    except ExternalCallFailed as exc:
        if exc.reason == "refused":
            raise ValidationError([Problem("/base_url", exc.detail)]) from exc
        # An unresolvable host may resolve where the engine runs; the request-time guard still applies.
    doc = {"key": key, **body}
    await rt.store.resource_put(connections.KIND, key, doc)
    _forget(rt, key)
    return json_response(connections.redact(doc), 200 if old is not None else 201,
                         headers={"Location": f"/v1/connections/{key}"})  # fmt: skip


async def get_connection(request: Request) -> Response:
    rt = _admin(request)
    doc = await rt.store.resource_get(connections.KIND, request.path_params["key"])
    if doc is None:
        raise NotFound(f"no connection '{request.path_params['key']}'")
    return json_response(connections.redact(doc))


async def list_connections(request: Request) -> Response:
    rt = _admin(request)
    docs = await rt.store.resource_list(connections.KIND)
    return json_response({"connections": [connections.redact(d) for d in docs]})


async def delete_connection(request: Request) -> Response:
    rt = _admin(request)
    key = request.path_params["key"]
    if not await rt.store.resource_delete(connections.KIND, key):
        raise NotFound(f"no connection '{key}'")
    _forget(rt, key)
    return Response(status_code=204)


routes = [
    Route("/v1/connections", list_connections, methods=["GET"]),
    Route("/v1/connections/{key}", put_connection, methods=["PUT"]),
    Route("/v1/connections/{key}", get_connection, methods=["GET"]),
    Route("/v1/connections/{key}", delete_connection, methods=["DELETE"]),
]
