"""The floor: the least a decide-shaped endpoint can do on this machine, served the same way as Arbiter.

``POST /v1/decide/{model_key}`` with the same body and API key header: parse the JSON body, one Redis
GET of the guest's stored document (seeded by the load harness, same size as a real guest), parse it,
return a small JSON. Same server stack as ``arbiter serve`` (uvicorn, uvloop, httptools, orjson,
redis-py asyncio with hiredis), so ``decide / floor`` isolates what Arbiter itself costs.

Run: ``FLOOR_REDIS_URL=redis://127.0.0.1:6379/0 python -m benchmarks.floor_app --port 8001 [--workers 2]``. With
several workers it is served as ``arbiter serve --workers`` serves Arbiter: a listening socket per worker
(:mod:`engine.workers`), not uvicorn's shared one, which let one worker take most connections and left the
floor short of its throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import workers

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


UVICORN_OPTIONS = {"loop": "uvloop", "http": "httptools", "access_log": False, "log_level": "warning"}
"""What ``arbiter serve`` runs uvicorn with (engine/cli.py), the app aside."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The floor app (see the module's docstring).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    options = {"app": "benchmarks.floor_app:app", **UVICORN_OPTIONS}
    if args.workers > 1 and workers.supported():
        return workers.supervise(args.host, args.port, args.workers, options)
    uvicorn.run(host=args.host, port=args.port, **options)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
