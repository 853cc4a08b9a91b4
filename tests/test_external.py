"""External nodes against the real commerce stub on loopback: success, timeouts, errors, retries, cache,
circuit breaker, the request deadline, and the SSRF guard."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from engine.breaker import Breaker
from engine.connections import KIND, Directory
from engine.egress import Egress, is_public
from engine.errors import ExternalCallFailed, ValidationError
from engine.feel import to_json
from engine.feel.scope import Bound
from engine.model import compile_model
from engine.nodes.base import MISS, TraceEntry
from engine.nodes.external import RESPONSE, ExternalNode, Request, _base, _segment, _text, _url
from engine.plan import Plan, Result
from engine.store import empty_guest
from engine.store.memory import MemoryStore
from tests.commerce_stub import StubServer
from tests.commerce_stub import commerce as commerce  # noqa: F401 — fixtures
from tests.commerce_stub import commerce_server as commerce_server  # noqa: F401


class World:
    """Per-test services as a worker has them: a store with connections, the egress, the directory."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.egress = Egress()
        self.services: dict[str, Any] = {"egress": self.egress, "connections": Directory(self.store)}

    async def connect(self, stub: StubServer, key: str = "commerce", **overrides: Any) -> None:
        doc = {"key": key, "base_url": stub.url, "allow_private": True, **overrides}
        await self.store.resource_put(KIND, key, doc)
        self.services["connections"].forget(key)

    def plan(self, *nodes: dict[str, Any], deadline_ms: int | None = None) -> Plan:
        model: dict[str, Any] = {"nodes": list(nodes)}
        if deadline_ms is not None:
            model["deadline_ms"] = deadline_ms
        return compile_model(model, services=self.services)

    async def run(self, plan: Plan, context: dict[str, Any] | None = None, deadline_ms: int = 2000) -> Result:
        return await plan.evaluate_async(empty_guest("g1"), context or {}, deadline_ms)


def products(**overrides: Any) -> dict[str, Any]:
    node = {
        "id": "products",
        "kind": "external",
        "connection": "commerce",
        "path": "/products",
        "query": {"categoryID": "context.category", "tier": "context.tier"},
        "output": "response.products.id",
        "timeout_ms": 1000,
        "fallback": ["fallback"],
    }
    return {**node, **overrides}


def entry(result: Result, node_id: str) -> dict[str, Any]:
    return next(e.as_dict() for e in result.trace if e.id == node_id)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    await w.egress.aclose()


SHOES_GOLD = {"category": "shoes", "tier": "gold"}


async def test_success_maps_the_response(world: World, commerce: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMERCE_TOKEN", "s3cret")
    await world.connect(commerce, auth={"header": "Authorization", "scheme": "Bearer", "secret_env": "COMMERCE_TOKEN"})
    result = await world.run(world.plan(products()), SHOES_GOLD)
    assert result.outputs == {"products": ["p1", "p2", "p3"]}
    t = entry(result, "products")
    assert t["attempts"] == 1 and t["status"] == 200 and "fallback" not in t
    assert commerce.knobs.auth == "Bearer s3cret"


async def test_output_template_and_upstream_inputs(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    tier = {"id": "tier", "kind": "expression", "expr": '"silver"'}
    node = products(
        query={"categoryID": '"shoes"', "tier": "tier"},
        output={"names": "response.products.name", "count": "response.total", "tier": "tier"},
    )
    result = await world.run(world.plan(tier, node))
    assert result.outputs["products"] == {"names": ["Trail shoe", "Road shoe"], "count": 2, "tier": "silver"}


async def test_slow_response_past_the_node_timeout_yields_the_fallback(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.delay_s = 0.3
    t0 = time.monotonic()
    result = await world.run(world.plan(products(timeout_ms=50)), SHOES_GOLD)
    assert time.monotonic() - t0 < 0.25
    assert result.outputs == {"products": ["fallback"]}
    assert entry(result, "products")["fallback"] == "timeout"
    assert result.errors == []


async def test_server_error_yields_the_fallback_with_its_reason(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.fail(times=None, status=500)
    result = await world.run(world.plan(products()), SHOES_GOLD)
    t = entry(result, "products")
    assert result.outputs == {"products": ["fallback"]}
    assert t["fallback"] == "error" and t["reason"] == "HTTP 500" and t["status"] == 500


async def test_client_errors_are_not_retried(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.fail(times=None, status=404)
    result = await world.run(world.plan(products(retries=3, backoff_ms=1)), SHOES_GOLD)
    assert entry(result, "products")["fallback"] == "error"
    assert commerce.knobs.calls["/products"] == 1


async def test_retries_recover_from_transient_failures(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.fail(times=2, status=503)
    result = await world.run(world.plan(products(retries=2, backoff_ms=1)), SHOES_GOLD)
    assert result.outputs == {"products": ["p1", "p2", "p3"]}
    assert entry(result, "products")["attempts"] == 3
    assert commerce.knobs.calls["/products"] == 3


async def test_retries_stop_when_the_budget_is_spent(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.fail(times=None, status=503)
    t0 = time.monotonic()
    result = await world.run(world.plan(products(retries=5, backoff_ms=40)), SHOES_GOLD, deadline_ms=100)
    elapsed_s = time.monotonic() - t0
    t = entry(result, "products")
    assert t["fallback"] == "error" and "no time left for a retry" in t["reason"]
    assert t["attempts"] < 6 and elapsed_s < 0.25


async def test_cache_hits_skip_the_call(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30))
    first = await world.run(plan, SHOES_GOLD)
    second = await world.run(plan, SHOES_GOLD)
    other = await world.run(plan, {"category": "jackets", "tier": "gold"})
    assert first.outputs == second.outputs == {"products": ["p1", "p2", "p3"]}
    assert other.outputs == {"products": ["p4"]}
    assert [entry(r, "products")["cache"] for r in (first, second, other)] == ["miss", "hit", "miss"]
    assert commerce.knobs.calls["/products"] == 2


async def test_a_cache_hit_answers_without_a_task_or_timer(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30))
    await world.run(plan, SHOES_GOLD)
    loop = asyncio.get_running_loop()
    created: list[object] = []
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        hit = await world.run(plan, SHOES_GOLD)
    finally:
        loop.set_task_factory(previous)
    assert entry(hit, "products")["cache"] == "hit" and hit.outputs == {"products": ["p1", "p2", "p3"]}
    assert created == []
    assert commerce.knobs.calls["/products"] == 1


async def test_failures_are_not_cached(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30))
    commerce.knobs.fail(times=1)
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["fallback"]}
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}


async def test_concurrent_misses_for_one_call_share_it(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30))
    commerce.knobs.delay_s = 0.05  # long enough for every request to arrive while the first call is out
    results = await asyncio.gather(*(world.run(plan, SHOES_GOLD) for _ in range(20)))
    assert all(r.outputs == {"products": ["p1", "p2", "p3"]} for r in results)
    caches = sorted(entry(r, "products")["cache"] for r in results)
    assert caches == ["joined"] * 19 + ["miss"]
    assert commerce.knobs.calls["/products"] == 1


async def test_a_shared_call_that_fails_gives_every_waiter_the_fallback(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30))
    commerce.knobs.delay_s = 0.05
    commerce.knobs.fail(times=None, status=500)
    results = await asyncio.gather(*(world.run(plan, SHOES_GOLD) for _ in range(5)))
    assert all(r.outputs == {"products": ["fallback"]} for r in results)
    assert all(entry(r, "products")["fallback"] == "error" for r in results)
    assert commerce.knobs.calls["/products"] == 1
    assert world.egress.inflight == {}  # nothing left behind to join


async def test_a_waiter_past_its_deadline_leaves_the_shared_call_running(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30))
    commerce.knobs.delay_s = 0.2
    patient = asyncio.ensure_future(world.run(plan, SHOES_GOLD, deadline_ms=2000))
    await asyncio.sleep(0.02)
    hasty = await world.run(plan, SHOES_GOLD, deadline_ms=50)
    assert entry(hasty, "products")["fallback"] == "deadline"
    assert (await patient).outputs == {"products": ["p1", "p2", "p3"]}
    assert commerce.knobs.calls["/products"] == 1


async def test_stale_if_error_answers_with_the_last_good_response(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30, stale_if_error_s=600))
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}
    world.egress.cache.clear()  # the entry expired
    commerce.knobs.fail(times=None, status=500)
    stale = await world.run(plan, SHOES_GOLD)
    assert stale.outputs == {"products": ["p1", "p2", "p3"]}
    t = entry(stale, "products")
    assert t["fallback"] == "stale" and t["cache"] == "stale" and t["reason"] == "HTTP 500"
    # Another call never answered: no stale copy of it, so the fallback.
    other = await world.run(plan, {"category": "jackets", "tier": "gold"})
    assert other.outputs == {"products": ["fallback"]}
    # Too old: past stale_if_error_s the fallback again (time moved back rather than slept through).
    for key, (value, at_s) in list(world.egress.stale.items()):
        world.egress.stale[key] = (value, at_s - 601)
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["fallback"]}


async def test_an_open_circuit_answers_in_place_as_the_call_path_would(world: World, commerce: StubServer) -> None:
    # With the circuit open, the cache check answers (stale response or fallback) without scheduling the call
    # path's task; its answer and trace must be exactly the call path's.
    await world.connect(commerce, circuit={"failures": 2, "cooldown_ms": 60_000})
    plan = world.plan(products(cache_ttl_s=30, stale_if_error_s=600))
    (node,) = plan.nodes
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}
    world.egress.cache.clear()  # the entry expired; its stale copy stays
    commerce.knobs.fail(times=None, status=500)
    for _ in range(2):
        assert entry(await world.run(plan, SHOES_GOLD), "products")["fallback"] == "stale"
    breaker = world.egress.breakers["commerce"]
    assert breaker.state() == "open"
    calls = commerce.knobs.calls["/products"]
    for context, output in ((SHOES_GOLD, ["p1", "p2", "p3"]), ({"category": "bags", "tier": "gold"}, ["fallback"])):
        scope = plan.scope(empty_guest("g1"), context)
        fast, slow = TraceEntry("products", "external"), TraceEntry("products", "external")
        answer = node.cached(scope, fast)
        assert answer is not MISS and answer == output
        assert await node.evaluate_async(scope, slow, time.monotonic() + 1) == answer
        assert fast.as_dict() == slow.as_dict()
    assert commerce.knobs.calls["/products"] == calls  # nothing was sent
    # Half-open: the probe must go out, so the cache check leaves it to the call path.
    breaker.opened_at_s -= 61
    assert node.cached(plan.scope(empty_guest("g1"), SHOES_GOLD), TraceEntry("products", "external")) is MISS


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products(cache_ttl_s=30, stale_while_revalidate_s=60))
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}
    world.egress.cache.clear()  # the entry expired
    commerce.knobs.delay_s = 0.2
    t0 = time.monotonic()
    served = await asyncio.gather(*(world.run(plan, SHOES_GOLD) for _ in range(10)))
    assert time.monotonic() - t0 < 0.15  # nobody waited for the 200 ms refresh
    assert all(r.outputs == {"products": ["p1", "p2", "p3"]} for r in served)
    assert {entry(r, "products")["cache"] for r in served} == {"revalidating"}
    assert all("fallback" not in entry(r, "products") for r in served)
    (key,) = world.egress.stale.keys()
    for _ in range(100):  # the one background refresh lands in the cache
        if world.egress.cache.get(key) is not None:
            break
        await asyncio.sleep(0.01)
    assert entry(await world.run(plan, SHOES_GOLD), "products")["cache"] == "hit"
    assert commerce.knobs.calls["/products"] == 2
    # Past cache_ttl_s + stale_while_revalidate_s the old response is too old: requests wait for the call.
    world.egress.cache.clear()
    for key, (value, at_s) in list(world.egress.stale.items()):
        world.egress.stale[key] = (value, at_s - 91)
    commerce.knobs.delay_s = 0
    assert entry(await world.run(plan, SHOES_GOLD), "products")["cache"] == "miss"


async def test_an_open_circuit_keeps_revalidating_answers_without_refreshes(world: World, commerce: StubServer) -> None:
    # A refresh while the circuit is open could only fail; started per request, it cost a task and an
    # exception each, under the very overload that opened the circuit.
    await world.connect(commerce, circuit={"failures": 1, "cooldown_ms": 60_000})
    plan = world.plan(products(cache_ttl_s=30, stale_while_revalidate_s=60))
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}
    breaker = world.egress.breakers["commerce"]
    breaker.failure()
    assert breaker.state() == "open"
    world.egress.cache.clear()  # the entry expired; it is within stale_while_revalidate_s
    calls = commerce.knobs.calls["/products"]
    served = [await world.run(plan, SHOES_GOLD) for _ in range(5)]
    assert [entry(r, "products")["cache"] for r in served] == ["revalidating"] * 5
    assert all(r.outputs == {"products": ["p1", "p2", "p3"]} for r in served)
    assert not world.egress.inflight and not world.egress._background  # no refresh was started
    assert commerce.knobs.calls["/products"] == calls
    # Half-open: one request sends the probe, and its answer fills the cache again.
    breaker.opened_at_s -= 61
    assert entry(await world.run(plan, SHOES_GOLD), "products")["cache"] == "revalidating"
    for _ in range(100):
        if world.egress.cache:
            break
        await asyncio.sleep(0.01)
    assert commerce.knobs.calls["/products"] == calls + 1
    assert breaker.state() == "closed"
    assert entry(await world.run(plan, SHOES_GOLD), "products")["cache"] == "hit"


async def test_a_shared_call_waits_for_the_connections_timeout_and_outlives_its_requests(
    world: World, commerce: StubServer
) -> None:
    # The node's 50 ms is what a request can wait; the call itself has the connection's 1 s, so a 150 ms answer
    # lands in the cache and counts as no failure, whether a refresh behind a stale answer or a plain miss.
    await world.connect(commerce, timeout_ms=1000)
    plan = world.plan(products(timeout_ms=50, cache_ttl_s=30, stale_while_revalidate_s=60))
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}
    world.egress.cache.clear()  # the entry expired
    commerce.knobs.delay_s = 0.15
    assert entry(await world.run(plan, SHOES_GOLD), "products")["cache"] == "revalidating"
    (key,) = world.egress.stale.keys()
    for _ in range(100):
        if world.egress.cache.get(key) is not None:
            break
        await asyncio.sleep(0.01)
    assert world.egress.cache.get(key) is not None, "the refresh did not land"
    assert world.egress.breakers["commerce"].failures == 0
    assert commerce.knobs.calls["/products"] == 2
    # A request that has to wait still gives up at the node's timeout, but the call goes on and fills the cache.
    world.egress.cache.clear()
    world.egress.stale.clear()
    t0 = time.monotonic()
    gave_up = entry(await world.run(plan, SHOES_GOLD), "products")
    assert gave_up["fallback"] == "timeout" and gave_up["cache"] == "miss"
    assert time.monotonic() - t0 < 0.12
    for _ in range(100):
        if world.egress.cache.get(key) is not None:
            break
        await asyncio.sleep(0.01)
    assert entry(await world.run(plan, SHOES_GOLD), "products")["cache"] == "hit"
    assert world.egress.breakers["commerce"].failures == 0 and commerce.knobs.calls["/products"] == 3


def test_stale_answers_need_a_cache() -> None:
    with pytest.raises(ValidationError) as err:
        compile_model({"nodes": [products(stale_if_error_s=60, stale_while_revalidate_s=5)]})
    pointers = {p.pointer for p in err.value.problems}
    assert {"/nodes/0/stale_if_error_s", "/nodes/0/stale_while_revalidate_s"} <= pointers


async def test_circuit_opens_after_consecutive_failures_and_recovers(world: World, commerce: StubServer) -> None:
    await world.connect(commerce, circuit={"failures": 3, "cooldown_ms": 60_000})
    plan = world.plan(products())
    commerce.knobs.fail(times=None)
    for _ in range(3):
        assert entry(await world.run(plan, SHOES_GOLD), "products")["fallback"] == "error"
    opened = await world.run(plan, SHOES_GOLD)
    assert entry(opened, "products")["fallback"] == "circuit-open"
    assert commerce.knobs.calls["/products"] == 3  # the open circuit sent nothing

    # Cool-down over (moved back in time rather than slept through): one probe; it fails, so it reopens.
    breaker = world.egress.breakers["commerce"]
    breaker.opened_at_s -= 61
    assert entry(await world.run(plan, SHOES_GOLD), "products")["fallback"] == "error"
    assert breaker.state() == "open" and commerce.knobs.calls["/products"] == 4

    # The dependency is back: the next probe succeeds and closes the circuit.
    commerce.knobs.fail(times=0)
    breaker.opened_at_s -= 61
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}
    assert breaker.state() == "closed"
    assert (await world.run(plan, SHOES_GOLD)).outputs == {"products": ["p1", "p2", "p3"]}


def test_half_open_lets_exactly_one_probe_through() -> None:
    b = Breaker(failure_threshold=2, cooldown_s=10)
    b.failure(now_s=0)
    assert b.state(now_s=0) == "closed"
    b.failure(now_s=1)
    assert b.state(now_s=5) == "open" and not b.allow(now_s=5)
    assert b.allow(now_s=11) and not b.allow(now_s=11)
    b.release()
    assert b.allow(now_s=11)
    b.success()
    assert b.state(now_s=11) == "closed" and b.failures == 0


async def test_deadline_bounds_several_slow_calls(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.delay_s = 0.3
    nodes = [products(id=f"slow{i}", query={"tier": f'"t{i}"'}) for i in range(3)]
    plan = world.plan(*nodes, deadline_ms=100)
    t0 = time.monotonic()
    result = await world.run(plan)
    elapsed_s = time.monotonic() - t0
    assert elapsed_s < 0.25, f"three 300 ms calls under a 100 ms deadline took {elapsed_s * 1000:.0f} ms"
    assert result.outputs == {f"slow{i}": ["fallback"] for i in range(3)}
    assert {entry(result, f"slow{i}")["fallback"] for i in range(3)} <= {"deadline", "timeout"}


async def test_independent_calls_run_concurrently(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    commerce.knobs.delay_s = 0.2
    a = products(id="a")
    b = {**products(id="b"), "path": "/promotions", "query": {"segment": '"gold"'}, "output": "response.promotions.id"}
    t0 = time.monotonic()
    result = await world.run(world.plan(a, b), SHOES_GOLD)
    assert time.monotonic() - t0 < 0.35  # the sum would be 0.4 s
    assert result.outputs == {"a": ["p1", "p2", "p3"], "b": ["promo-gold", "promo-all"]}


async def test_a_node_reading_an_external_result_waits_for_it(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    count = {"id": "count", "kind": "expression", "expr": "count(products)"}
    result = await world.run(world.plan(products(), count), SHOES_GOLD)
    assert result.outputs["count"] == 3


async def test_loopback_is_refused_unless_the_connection_allows_it(world: World, commerce: StubServer) -> None:
    await world.connect(commerce, allow_private=False)
    result = await world.run(world.plan(products()), SHOES_GOLD)
    t = entry(result, "products")
    assert t["fallback"] == "refused" and "non-public address (127.0.0.1)" in t["reason"]
    assert commerce.knobs.calls["/products"] == 0


@pytest.mark.parametrize("base_url", ["http://localhost:9", "http://169.254.169.254", "http://[::ffff:127.0.0.1]:9"])
async def test_private_and_metadata_addresses_are_refused(world: World, base_url: str) -> None:
    await world.store.resource_put(KIND, "internal", {"base_url": base_url})
    result = await world.run(world.plan(products(connection="internal")))
    assert entry(result, "products")["fallback"] == "refused"


QUERY_VALUES = ["shoes", "a b", "ü", "日本", "a&b=c", "x=1", "1+1", "/:@?#[]", "!$'()*,;", "~-._", "%41", "50%", "",
                " "]  # fmt: skip


@pytest.mark.parametrize("value", QUERY_VALUES)
@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9", "https://Commerce.Example.com:443/api/v1"])
def test_urls_are_encoded_as_httpx_encoded_them(base_url: str, value: str) -> None:
    # The engine sent httpx.URL(base_url + path, params=query) before it moved to aiohttp; servers (and
    # signatures over the URL) saw exactly this, and see it still.
    path = f"/products/{_segment(value)}/ü x"
    # A name repeats only for a list value, its items side by side (httpx grouped a name's items together).
    query = (("q", value), ("q", "2"), ("k " + value, "v"))
    base, host = _base(base_url)
    assert _url(base, path, query) == str(httpx.URL(base_url + path, params=query))
    assert _url(base, path, ()) == str(httpx.URL(base_url + path))
    assert host == httpx.URL(base_url).host


@pytest.mark.parametrize("path", ["/a/../b", "/./x/.", "/../../y/z", "/a/.b/..c/..", "/x/%2E%2E/y", "/a/..", "/.."])
@pytest.mark.parametrize("base_url", ["http://h/api/v1", "http://h"])
def test_dot_segments_resolve_as_httpx_resolved_them(base_url: str, path: str) -> None:
    base, _ = _base(base_url)
    assert _url(base, path, (("q", "1"),)) == str(httpx.URL(base_url + path, params={"q": "1"}))


def test_a_query_is_form_encoded() -> None:
    base, _ = _base("http://h")
    assert _url(base, "/p", (("q", "a b"), ("u", "ü"), ("x", "a&b=c"))) == "http://h/p?q=a+b&u=%C3%BC&x=a%26b%3Dc"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_address_policy(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


async def test_path_placeholders_are_encoded_as_one_segment(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    node = products(path="/products/{context.sku}", query={})
    result = await world.run(world.plan(node), {"sku": "../promotions"})
    assert entry(result, "products")["fallback"] == "error"  # 404 from /products/..%2Fpromotions
    assert commerce.knobs.calls["/promotions"] == 0


@pytest.mark.parametrize("path", ["http://evil.example/x", "//evil.example/x", "products", "/a?b=1", "/{context.x"])
def test_paths_that_could_leave_the_connection_are_rejected_at_publish(path: str) -> None:
    with pytest.raises(ValidationError) as exc:
        compile_model({"nodes": [products(path=path)]})
    assert exc.value.problems[0].pointer == "/nodes/0/path"


def test_node_definition_problems_are_located() -> None:
    with pytest.raises(ValidationError) as exc:
        compile_model({"nodes": [products(method="TRACE", timeout_ms=0, retries=9, connection="bad key!")]})
    pointers = {p.pointer for p in exc.value.problems}
    assert {"/nodes/0/method", "/nodes/0/timeout_ms", "/nodes/0/retries", "/nodes/0/connection"} <= pointers


async def test_unknown_connection_yields_the_fallback(world: World) -> None:
    result = await world.run(world.plan(products(connection="nope")))
    assert result.outputs == {"products": ["fallback"]}
    assert "no connection 'nope'" in entry(result, "products")["reason"]


async def test_without_services_the_node_takes_its_fallback(commerce: StubServer) -> None:
    plan = compile_model({"nodes": [products()]})
    result = await plan.evaluate_async(empty_guest(None), SHOES_GOLD, 500)
    assert result.outputs == {"products": ["fallback"]} and result.errors == []


async def test_gated_node_is_skipped_without_a_call(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    result = await world.run(world.plan(products(when='context.tier = "platinum"')), SHOES_GOLD)
    assert entry(result, "products")["skipped"] is True
    assert commerce.knobs.calls["/products"] == 0


async def test_many_concurrent_decisions_share_the_pool(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    plan = world.plan(products())
    results = await asyncio.gather(*(world.run(plan, SHOES_GOLD) for _ in range(50)))
    assert all(r.outputs == {"products": ["p1", "p2", "p3"]} for r in results)


async def test_commerce_example_model_against_the_stub(world: World, commerce: StubServer) -> None:
    from engine.model import parse_document
    from tests.conftest import ROOT

    await world.connect(commerce)
    definition = parse_document((ROOT / "models" / "commerce-recommendations.json").read_bytes())
    plan = compile_model(definition, services=world.services)
    guest = {**empty_guest("g1"), "facts": {"lifetime_value": 2500, "last_order": "2026-05-01"}}
    result = await plan.evaluate_async(guest, {"category": "shoes", "now": "2026-06-01"}, 1000)
    assert result.errors == []
    assert result.outputs == {
        "tier": "gold", "products": ["p3", "p1", "p2"], "promotion": "promo-gold", "discount_pct": 15,
        "source": "catalogue",
    }  # fmt: skip
    silver = {**guest, "facts": {"lifetime_value": 500}}
    result = await plan.evaluate_async(silver, {"category": "shoes", "now": "2026-06-01"}, 1000)
    assert result.outputs["products"] == ["p2", "p1"] and result.outputs["promotion"] == "promo-silver"


async def test_null_path_placeholder_yields_the_fallback(world: World, commerce: StubServer) -> None:
    await world.connect(commerce)
    result = await world.run(world.plan(products(path="/products/{context.sku}")), {})
    t = entry(result, "products")
    assert t["fallback"] == "error" and "{context.sku} evaluated to None" in t["reason"]
    assert commerce.knobs.calls["/products"] == 0


async def test_a_bug_in_a_shared_call_gives_the_fallback_and_is_logged(
    world: World, commerce: StubServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    await world.connect(commerce)
    monkeypatch.setattr(ExternalNode, "_attempt", broken)
    result = await world.run(world.plan(products(cache_ttl_s=30)), SHOES_GOLD)
    t = entry(result, "products")
    assert result.outputs == {"products": ["fallback"]} and t["fallback"] == "error"
    assert t["reason"] == "the call ended with RuntimeError: boom"
    for _ in range(50):  # the task's done-callback runs on the next loop iteration
        if any("shared external call failed" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    assert any("shared external call failed" in r.getMessage() for r in caplog.records)
    assert world.egress.inflight == {}


class TextSubclass(str):
    """A string of another type: it takes the general conversion."""


def _render_generally(node: ExternalNode, scope: dict[str, Any]) -> Request:
    """What _render answers, through the general conversion (to_json, then _text) for every value."""
    segments = []
    for part in node.path:
        if isinstance(part, str):
            segments.append(part)
            continue
        value = to_json(part(scope))
        if value is None or isinstance(value, dict | list) or str(value) in (".", ".."):
            raise ExternalCallFailed(f"path placeholder {{{part.source}}} evaluated to {value!r}")
        segments.append(_segment(_text(value)))
    query = []
    for name, expr in node.query:
        value = to_json(expr(scope))
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                query.append((name, _text(item)))
    return Request(node.method, "".join(segments), tuple(query), None)


@pytest.mark.parametrize(
    "value",
    ["shoes", "a/b c?", "", ".", "..", "ü", Decimal("1.50"), Decimal("2"), 2.5, 7, True, False, None,
     date(2026, 1, 2), ["x", None, Decimal(1), True], [], {"a": 1}, TextSubclass(".")],
)  # fmt: skip
def test_rendered_requests_agree_with_the_general_conversion(value: Any) -> None:
    plan = compile_model(
        {"nodes": [products(path="/p/{context.v}", query={"q": "context.v", "tier": "context.tier"})]},
        services={"egress": Egress()},
    )
    (node,) = plan.nodes
    scope = plan.scope(empty_guest("g1"), {"v": value, "tier": "gold"})
    try:
        expected: Any = _render_generally(node, scope)
    except ExternalCallFailed as exc:
        expected = exc.detail
    try:
        rendered: Any = node._render(scope)
    except ExternalCallFailed as exc:
        rendered = exc.detail
    assert rendered == expected


@pytest.mark.parametrize(
    ("output", "reads_scope"),
    [
        ("response.products.id", False),
        ({"ids": "response.products.id", "n": "count(response.products)", "k": 3}, False),
        ("response.products[id != context.category].id", True),
        ("response.products[price > 10].id", True),  # `price` may be the item's or the scope's
        ({"ids": "response.products.id", "category": "context.category"}, True),
    ],
)
def test_a_cache_hit_answers_as_the_output_over_the_whole_scope(output: Any, reads_scope: bool) -> None:
    egress = Egress()
    plan = compile_model({"nodes": [products(output=output, cache_ttl_s=30)]}, services={"egress": egress})
    (node,) = plan.nodes
    assert node.output_reads_scope is reads_scope
    scope = plan.scope(empty_guest("g1"), SHOES_GOLD)
    response = {"products": [{"id": "p1", "price": Decimal(12)}, {"id": "shoes"}, {"id": "p3", "price": Decimal(3)}]}
    egress.remember(("commerce", node._render(scope)), response, 30)
    answer = node.cached(scope, TraceEntry("products", "external"))
    assert answer == node.output(Bound({RESPONSE: response}, scope)) and answer is not None
