"""A small commerce API for external-call tests and benchmarks, served by a real uvicorn on loopback.

``GET /products?categoryID=…&tier=…`` and ``GET /promotions?segment=…`` answer from a fixed catalogue.
Knobs on :class:`Knobs` (set them from the test thread): ``delay_s`` before answering, ``fail_status``
for the next ``fail_times`` calls (or every call when ``fail_times`` is None), and ``calls`` counts
requests per path. ``auth`` records the last Authorization header seen.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import free_port, wait_until

PRODUCTS = [
    {"id": "p1", "name": "Trail shoe", "categoryID": "shoes", "price": 120, "tiers": ["gold", "silver", "regular"]},
    {
        "id": "p2",
        "name": "Road shoe",
        "categoryID": "shoes",
        "price": 90,
        "tiers": ["gold", "silver", "regular", "new"],
    },
    {"id": "p3", "name": "Carbon racer", "categoryID": "shoes", "price": 260, "tiers": ["gold"]},
    {"id": "p4", "name": "Rain jacket", "categoryID": "jackets", "price": 150, "tiers": ["gold", "silver"]},
]
PROMOTIONS = [
    {"id": "promo-gold", "segment": "gold", "discount_pct": 15},
    {"id": "promo-silver", "segment": "silver", "discount_pct": 10},
    {"id": "promo-all", "segment": "any", "discount_pct": 5},
]


@dataclass
class Knobs:
    delay_s: float = 0.0
    fail_status: int = 503
    fail_times: int | None = 0
    calls: Counter[str] = field(default_factory=Counter)
    auth: str | None = None

    def reset(self) -> None:
        self.delay_s, self.fail_status, self.fail_times, self.auth = 0.0, 503, 0, None
        self.calls.clear()

    def fail(self, times: int | None = None, status: int = 503) -> None:
        self.fail_status, self.fail_times = status, times


def create_stub(knobs: Knobs) -> Starlette:
    async def answer(request: Request, body: object) -> JSONResponse:
        knobs.calls[request.url.path] += 1
        knobs.auth = request.headers.get("authorization")
        # Decided on arrival, so a slow request left over from an earlier test cannot use up a failure
        # that the current test has asked for.
        fail = knobs.fail_times is None or knobs.fail_times > 0
        if fail and knobs.fail_times is not None:
            knobs.fail_times -= 1
        if knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        if fail:
            return JSONResponse({"error": "induced failure"}, status_code=knobs.fail_status)
        return JSONResponse(body)

    async def products(request: Request) -> JSONResponse:
        category, tier = request.query_params.get("categoryID"), request.query_params.get("tier")
        found = [
            {k: v for k, v in p.items() if k != "tiers"}
            for p in PRODUCTS
            if (category is None or p["categoryID"] == category) and (tier is None or tier in p["tiers"])
        ]
        return await answer(request, {"products": found, "total": len(found)})

    async def promotions(request: Request) -> JSONResponse:
        segment = request.query_params.get("segment")
        found = [p for p in PROMOTIONS if p["segment"] in (segment, "any")]
        return await answer(request, {"promotions": found})

    return Starlette(routes=[Route("/products", products), Route("/promotions", promotions)])


@dataclass
class StubServer:
    url: str
    port: int
    knobs: Knobs


def serve_stub() -> Iterator[StubServer]:
    """Run the stub in a thread on a free loopback port until the generator is closed."""
    knobs = Knobs()
    port = free_port()
    config = uvicorn.Config(create_stub(knobs), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="commerce stub")
    try:
        yield StubServer(f"http://127.0.0.1:{port}", port, knobs)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def commerce_server() -> Iterator[StubServer]:
    yield from serve_stub()


@pytest.fixture
def commerce(commerce_server: StubServer) -> StubServer:
    """The stub with its knobs reset for this test."""
    commerce_server.knobs.reset()
    return commerce_server
