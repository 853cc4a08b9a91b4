"""Micro-benchmarks of script and external nodes (pytest-benchmark). Run: make bench.

The commerce stub runs in its own process (uvicorn on loopback) so the client and server do not share
a GIL, as in production.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.connections import KIND, Directory
from engine.egress import Egress
from engine.model import compile_model, parse_document
from engine.nodes.base import TraceEntry
from engine.store import empty_guest
from engine.store.memory import MemoryStore
from tests.conftest import ROOT, free_port, wait_until

CONTEXT = {"category": "shoes", "now": "2026-06-01"}
GUEST = {**empty_guest("g1"), "facts": {"lifetime_value": 2500, "last_order": "2026-05-01"}}


def example() -> dict[str, Any]:
    return parse_document((ROOT / "models" / "commerce-recommendations.json").read_bytes())


def test_script_node_call(benchmark: Any) -> None:
    """One call of the example's tier script: inputs into Lua, run, result back and type-checked."""
    plan = compile_model(example())
    node = next(n for n in plan.nodes if n.id == "tier")
    scope = plan.scope(GUEST, CONTEXT)
    result = benchmark(node.evaluate, scope, TraceEntry("tier", "script"))
    assert result == {"name": "gold", "rank": 3}


def test_script_ranking_call(benchmark: Any) -> None:
    """The ranking script over a 20-product list (sort with a Lua comparator)."""
    plan = compile_model(example())
    node = next(n for n in plan.nodes if n.id == "ranked")
    products = [{"id": f"p{i}", "price": (i * 37) % 100} for i in range(20)]
    scope = {**plan.scope(GUEST, CONTEXT), "products": products, "tier": {"name": "gold", "rank": 3}}
    assert len(benchmark(node.evaluate, scope, TraceEntry("ranked", "script"))) == 3


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    port = free_port()
    code = (
        "import uvicorn; from tests.commerce_stub import Knobs, create_stub; "
        f"uvicorn.run(create_stub(Knobs()), host='127.0.0.1', port={port}, log_level='warning', "
        "lifespan='off', loop='uvloop', http='httptools', access_log=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/products").status_code == 200, what="commerce stub")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_model_with_two_concurrent_external_calls(benchmark: Any, stub_url: str) -> None:
    """The whole example model: tier script → products and promotion calls at once → ranking script.

    No response cache (cache_ttl_s 0), so every round makes two real HTTP requests over the pool.
    """
    definition = example()
    for node in definition["nodes"]:
        if node["kind"] == "external":
            node["cache_ttl_s"] = 0
    store = MemoryStore()
    services: dict[str, Any] = {"egress": Egress(), "connections": Directory(store)}
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.resource_put(KIND, "commerce", {"base_url": stub_url, "allow_private": True}))
    plan = compile_model(definition, services=services)

    def one() -> Any:
        return loop.run_until_complete(plan.evaluate_async(GUEST, CONTEXT, 1000))

    try:
        result = benchmark(one)
    finally:
        loop.run_until_complete(services["egress"].aclose())
        loop.close()
    assert result.outputs["products"] == ["p3", "p1", "p2"] and result.outputs["promotion"] == "promo-gold"
