"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api.responses import json_response
from engine.runtime import runtime


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    rt = runtime(request)
    store_ok = await rt.store.ping()
    models = await rt.registry.list() if store_ok else []
    in_production = sum(1 for m in models if m["production"] is not None)
    rt.metrics.models_loaded.set(in_production)
    ok = store_ok and (in_production > 0 or rt.settings.models_dir is None)
    body = {
        "status": "ready" if ok else "not ready",
        "store": rt.store.name,
        "store_ok": store_ok,
        "models": in_production,
    }
    return json_response(body, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    return Response(runtime(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
