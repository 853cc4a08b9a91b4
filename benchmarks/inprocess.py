"""Arbiter's own cost per decision, without sockets: the ASGI app called directly, against a running Redis.

The load harness measures the whole box (load generator, Redis, uvicorn, kernel); this isolates what the app
does per request, for before/after comparisons of a change on the request path, with less noise than wrk on a
shared VM. Point it at the Redis of a harness started with ``--serve`` (the scenario is loaded there):

    python -m benchmarks.loadtest --serve --guests 20000 &      # its redis-server's port: see `ps`
    python -m benchmarks.inprocess --redis redis://127.0.0.1:PORT/0 --requests 8000

Prints CPU µs per decision with one request at a time and with 16 in flight (Redis commands batch then).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import orjson
import uvloop

from benchmarks.data import decide_bodies

PUBLIC_KEY = "bench-public"
ADMIN_KEY = "bench-admin"


def _scope(body: bytes, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"x-api-key", PUBLIC_KEY.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


def in_process_app(redis_url: str) -> Any:
    """The app as ``arbiter serve`` builds it, against ``redis_url``, without a server around it."""
    os.environ.update(ARBITER_REDIS_URL=redis_url, ARBITER_PUBLIC_KEY=PUBLIC_KEY, ARBITER_ADMIN_KEY=ADMIN_KEY)
    from engine.app import app_from_env  # after the environment is set

    return app_from_env()


async def post_once(app: Any, body: bytes, path: str) -> None:
    """One POST through the ASGI app; anything but a 2xx stops the run."""
    sent: list[Any] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Any:
        return incoming.pop() if incoming else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(_scope(body, path), receive, send)
    if not 200 <= sent[0]["status"] < 300:
        raise SystemExit(f"{path} answered {sent[0]['status']}: {orjson.loads(sent[1]['body'])}")


async def decide_once(app: Any, body: bytes, model: str) -> None:
    await post_once(app, body, decide_path(model))


def decide_path(model: str) -> str:
    return f"/v1/decide/{model}"


async def cpu_per_request_us(app: Any, bodies: list[bytes], path: str, requests: int, in_flight: int) -> float:
    """CPU µs per request over ``requests`` POSTs of ``bodies`` (cycled) with at most ``in_flight`` at once."""
    gate = asyncio.Semaphore(in_flight)

    async def limited(body: bytes) -> None:
        async with gate:
            await post_once(app, body, path)

    cpu0 = time.process_time()
    await asyncio.gather(*(limited(bodies[i % len(bodies)]) for i in range(requests)))
    return (time.process_time() - cpu0) / requests * 1e6


def shuffled_bodies(guests: int) -> list[bytes]:
    bodies = decide_bodies(2_000, guests)
    random.Random(1).shuffle(bodies)
    return bodies


async def _run(redis_url: str, model: str, requests: int, guests: int) -> None:
    app = in_process_app(redis_url)
    bodies = shuffled_bodies(guests)
    async with app.router.lifespan_context(app):
        for body in bodies[:500]:  # warm: compile, connections, caches
            await decide_once(app, body, model)
        for in_flight in (1, 16):
            wall0 = time.perf_counter()
            cpu_us = await cpu_per_request_us(app, bodies, decide_path(model), requests, in_flight)
            wall_us = (time.perf_counter() - wall0) / requests * 1e6
            print(f"{in_flight:>2} in flight: {cpu_us:6.1f} µs CPU per decision, {wall_us:6.1f} µs wall")


def harness_parser(doc: str) -> argparse.ArgumentParser:
    """The options every in-process tool shares: the harness's Redis and how many guests it seeded."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--redis", required=True, help="the Redis of a `loadtest --serve` harness")
    parser.add_argument("--guests", type=int, default=20_000)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = harness_parser(__doc__)
    parser.add_argument("--model", default="realistic")
    parser.add_argument("--requests", type=int, default=8_000)
    args = parser.parse_args(argv)
    uvloop.run(_run(args.redis, args.model, args.requests, args.guests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
