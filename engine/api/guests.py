"""Admin API for guests, their orders, and batch imports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api._listen import Listen, listen
from engine.api.bodies import read_json
from engine.api.responses import json_response
from engine.auth import require_admin
from engine.batch_import import ImportJob, run_import
from engine.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from engine.runtime import runtime

MODES = ("upsert", "merge", "insert")

IMPORT_RESOURCE = "import"
"""Store resource kind holding each import job's status, readable by every worker."""


def _admin(request: Request) -> Listen:
    rt = runtime(request)
    require_admin(request, rt.settings)
    return listen(rt)


def _mode(request: Request, default: str) -> str:
    mode = request.query_params.get("mode", default)
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}", pointer="/mode")
    return mode


async def find_guest(request: Request) -> Response:
    """``GET /v1/guests?browser_id=…`` or ``?provider=email&id=…``."""
    svc = _admin(request)
    q = request.query_params
    now_ms = svc.ingest.clock()
    if q.get("browser_id") or q.get("guest_ref"):
        return json_response(await svc.guests.find(ref=q.get("browser_id") or q.get("guest_ref"), now_ms=now_ms))
    if q.get("provider") and q.get("id"):
        return json_response(await svc.guests.find(provider=q["provider"], identifier=q["id"], now_ms=now_ms))
    raise BadRequest("name the guest: ?browser_id=, ?guest_ref= or ?provider=&id=", pointer="")


async def get_guest(request: Request) -> Response:
    svc = _admin(request)
    return json_response(await svc.guests.find(ref=request.path_params["ref"], now_ms=svc.ingest.clock()))


async def create_guest(request: Request) -> Response:
    svc = _admin(request)
    body = await read_json(request, runtime(request).settings.max_body_bytes)
    guest, changed = await svc.guests.create(body, mode=_mode(request, "insert"), now_ms=svc.ingest.clock())
    return json_response(guest, 201 if changed else 200, headers={"Location": f"/v1/guests/{guest['ref']}"})


async def patch_guest(request: Request) -> Response:
    svc = _admin(request)
    body = await read_json(request, runtime(request).settings.max_body_bytes)
    return json_response(await svc.guests.patch(request.path_params["ref"], body, now_ms=svc.ingest.clock()))


async def delete_guest(request: Request) -> Response:
    svc = _admin(request)
    forgotten = await svc.guests.forget(request.path_params["ref"], now_ms=svc.ingest.clock())
    return json_response({"forgotten": forgotten})


async def list_orders(request: Request) -> Response:
    svc = _admin(request)
    guest = await svc.guests.find(ref=request.path_params["ref"], now_ms=svc.ingest.clock())
    return json_response({"guest_ref": guest["ref"], "orders": guest.get("orders", [])})


async def put_order(request: Request) -> Response:
    svc = _admin(request)
    body = await read_json(request, runtime(request).settings.max_body_bytes)
    if isinstance(body, dict) and "order_ref" in request.path_params:
        body = {**body, "ref": request.path_params["order_ref"]}
    order, changed = await svc.guests.put_order(
        request.path_params["ref"], body, mode=_mode(request, "merge"), now_ms=svc.ingest.clock()
    )
    return json_response(order, 201 if changed else 200)


async def _spool(request: Request, limit: int) -> Path:
    """The upload on disk (never whole in memory); file I/O runs off the event loop."""
    fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="arbiter-import-", suffix=".ndjson")
    spool = Path(name)
    out = await asyncio.to_thread(os.fdopen, fd, "wb")
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"import exceeds the limit of {limit} bytes")
            await asyncio.to_thread(out.write, chunk)
        if size == 0:
            raise BadRequest("the upload is empty; send NDJSON records", pointer="")
    except BaseException:
        await asyncio.to_thread(out.close)
        await asyncio.to_thread(spool.unlink, True)
        raise
    await asyncio.to_thread(out.close)
    return spool


async def start_import(request: Request) -> Response:
    """Upload an NDJSON file (plain or gzip); it is spooled to disk and loaded in the background."""
    svc = _admin(request)
    limit = runtime(request).settings.max_import_bytes
    spool = await _spool(request, limit)
    job = ImportJob()
    svc.imports[job.id] = job
    store = runtime(request).store

    async def publish(j: ImportJob) -> None:
        # Through the store, so a status poll answered by another worker sees the job too.
        with contextlib.suppress(Unavailable):
            await store.resource_put(IMPORT_RESOURCE, j.id, j.as_json())

    await publish(job)

    async def run() -> None:
        try:
            await run_import(svc.guests, spool, job, progress=publish)
        finally:
            await publish(job)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(spool.unlink)

    task = asyncio.get_running_loop().create_task(run())
    svc.tasks.add(task)
    task.add_done_callback(svc.tasks.discard)
    return json_response(job.as_json(), 202, headers={"Location": f"/v1/imports/{job.id}"})


async def import_status(request: Request) -> Response:
    svc = _admin(request)
    job_id = request.path_params["job_id"]
    job = svc.imports.get(job_id)
    if job is not None:
        return json_response(job.as_json())
    stored = await runtime(request).store.resource_get(IMPORT_RESOURCE, job_id)
    if stored is None:
        raise NotFound(f"no import job '{job_id}'")
    return json_response(stored)


routes = [
    Route("/v1/guests", find_guest, methods=["GET"]),
    Route("/v1/guests", create_guest, methods=["POST"]),
    Route("/v1/guests/{ref}", get_guest, methods=["GET"]),
    Route("/v1/guests/{ref}", patch_guest, methods=["PATCH"]),
    Route("/v1/guests/{ref}", delete_guest, methods=["DELETE"]),
    Route("/v1/guests/{ref}/orders", list_orders, methods=["GET"]),
    Route("/v1/guests/{ref}/orders", put_order, methods=["POST"]),
    Route("/v1/guests/{ref}/orders/{order_ref}", put_order, methods=["PUT"]),
    Route("/v1/imports", start_import, methods=["POST"]),
    Route("/v1/imports/{job_id}", import_status, methods=["GET"]),
]
