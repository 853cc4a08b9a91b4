"""The floor: the least a decide-shaped endpoint can do on this machine, served the same way as Arbiter.

``POST /v1/decide/{model_key}`` with the same body and API key header: parse the JSON body, one Redis
GET of the guest's stored document (seeded by the load harness, same size as a real guest), parse it,
return a small JSON. Same server stack as ``arbiter serve`` (uvicorn, uvloop, httptools, orjson,
redis-py asyncio with hiredis), so ``decide / floor`` isolates what Arbiter itself costs.

Run: ``FLOOR_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn benchmarks.floor_app:app --loop uvloop --http httptools``
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

KEY_PREFIX = "floor:"
"""Floor keys live beside Arbiter's (``arb:…``), never inside them."""


def floor_key(ref: str) -> str:
    return f"{KEY_PREFIX}{ref}"


async def decide(request: Request) -> Response:
    if request.headers.get("x-api-key") is None:
        return Response(status_code=401)
    body = orjson.loads(await request.body())
    ref = body["guest"]["browser_id"]
    raw = await request.app.state.redis.get(floor_key(ref))
    guest = orjson.loads(raw) if raw is not None else {}
    return Response(
        orjson.dumps({"guest": ref, "known": bool(guest), "channel": body.get("context", {}).get("channel")}),
        media_type="application/json",
    )


async def health(request: Request) -> Response:
    return Response(b"ok")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.redis = aioredis.from_url(os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = Starlette(
    routes=[Route("/v1/decide/{model_key}", decide, methods=["POST"]), Route("/health", health)],
    lifespan=lifespan,
)
