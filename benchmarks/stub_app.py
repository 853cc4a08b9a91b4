"""The local stand-in for a commerce API that the scenario's ``external`` node calls.

``GET /recommendations/{category}?tier=…`` answers a small, deterministic JSON (five products of that
category, priced by tier), as fast as Starlette under uvicorn can; ``GET /stats`` says how many
recommendation calls arrived, so the load harness can tell the external node's cache hit rate
(1 − stub calls / decisions) across all Arbiter workers. ``STUB_DELAY_MS`` (default 0) adds a fixed
delay per call, to play a remote service instead of a loopback one.

Run: ``uvicorn benchmarks.stub_app:app --port 8181 --loop uvloop --http httptools``
"""

from __future__ import annotations

import asyncio
import os
import zlib

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TIER_PRICE_FACTOR = {"platinum": 3.0, "gold": 2.0, "silver": 1.4, "basic": 1.0}
PRODUCTS_PER_ANSWER = 5


def products(category: str, tier: str) -> list[dict[str, object]]:
    """The same answer for the same (category, tier), so cached and fresh answers agree."""
    base = zlib.crc32(category.encode()) % 50 + 10
    factor = TIER_PRICE_FACTOR.get(tier, 1.0)
    return [
        {"id": f"{category}-{tier}-{k}", "price": round((base + 7 * k) * factor, 2), "rating": 3 + (k * 7 + base) % 3}
        for k in range(PRODUCTS_PER_ANSWER)
    ]


async def recommendations(request: Request) -> Response:
    request.app.state.calls += 1
    delay_s = request.app.state.delay_s
    if delay_s:
        await asyncio.sleep(delay_s)
    category = request.path_params["category"]
    tier = request.query_params.get("tier", "basic")
    body = {"category": category, "tier": tier, "products": products(category, tier)}
    return Response(orjson.dumps(body), media_type="application/json")


async def stats(request: Request) -> Response:
    return Response(orjson.dumps({"calls": request.app.state.calls}), media_type="application/json")


app = Starlette(routes=[Route("/recommendations/{category}", recommendations), Route("/stats", stats)])
app.state.calls = 0
app.state.delay_s = float(os.environ.get("STUB_DELAY_MS", "0")) / 1000
