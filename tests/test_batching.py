"""Decisions evaluated together, node by node (engine/batching.py, Plan.evaluate_batch): each answers exactly as it
would alone; a decision whose call must go out continues by itself; one request's failure stays its own."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.data import guest_documents
from engine.app import create_app
from engine.batching import Batcher
from engine.config import Settings
from engine.model import compile_model
from engine.plan import Plan, Result
from engine.sandbox import Sandbox
from tests.commerce_stub import commerce as commerce  # noqa: F401 — fixtures
from tests.commerce_stub import commerce_server as commerce_server  # noqa: F401
from tests.test_external import World, products
from tests.test_external import world as world  # noqa: F401 — fixture

SCENARIO = Path(__file__).resolve().parent.parent / "benchmarks" / "scenario" / "realistic.json"
CONTEXTS = [
    {"channel": channel, "category": category, "price": price, "now": "2026-12-07T10:00:00Z"}
    for channel, category, price in [("WEB", "shoes", 120), ("APP", "denim", 40), ("STORE", "kids", 300)]
]


def local_plan() -> Plan:
    """The benchmark's model without its external call and experiment (those need a server and a lab): a script,
    two tables, an expression over the guest's history, the offer catalogue and the shaped answer."""
    model = copy.deepcopy(json.loads(SCENARIO.read_text()))
    model["nodes"] = [n for n in model["nodes"] if n["id"] not in ("picks", "hero")]
    answer = next(n for n in model["nodes"] if n["id"] == "answer")
    answer["value"] = {k: v for k, v in answer["value"].items() if not str(v).startswith(("picks", "hero"))}
    return compile_model(model, services={"lua": Sandbox()})


def requests(n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(guest, CONTEXTS[i % len(CONTEXTS)]) for i, guest in enumerate(guest_documents(n))]


def same(batched: Result, alone: Result) -> None:
    assert batched.outputs == alone.outputs
    assert batched.errors == alone.errors
    assert [(e.id, e.output, e.error, e.skipped) for e in batched.trace] == [
        (e.id, e.output, e.error, e.skipped) for e in alone.trace
    ]


def test_a_batch_answers_every_decision_as_it_would_alone() -> None:
    plan = local_plan()
    asked = requests(40)
    outcomes = plan.evaluate_batch(asked, deadline_ms=1000)
    assert len(outcomes) == len(asked)
    for outcome, (guest, context) in zip(outcomes, asked, strict=True):
        assert isinstance(outcome, Result)
        same(outcome, plan.evaluate(guest, context))
    # The answers differ between guests (a batch does not hand one guest's answer to another).
    assert len({json.dumps(o.outputs, sort_keys=True) for o in outcomes if isinstance(o, Result)}) > 5


def test_one_requests_failure_stays_its_own() -> None:
    plan = compile_model(
        {"inputs": [{"name": "age", "type": "number"}], "nodes": [{"id": "x", "kind": "expression", "expr": "age + 1"}]}
    )
    good = ({}, {"age": 41})
    outcomes = plan.evaluate_batch([good, ({}, None), good], deadline_ms=1000)  # type: ignore[list-item]
    assert isinstance(outcomes[1], AttributeError)  # no context to read the input from: that request's own error
    for outcome in (outcomes[0], outcomes[2]):
        assert isinstance(outcome, Result) and str(outcome.outputs["x"]) == "42"


async def test_a_decision_whose_call_goes_out_continues_by_itself(world: World, commerce: Any) -> None:
    await world.connect(commerce)
    node = products(cache_ttl_s=60)
    plan = world.plan(node, {"id": "n", "kind": "expression", "expr": "count(products)"})
    shoes, bags = {"category": "shoes", "tier": "gold"}, {"category": "bags", "tier": "gold"}
    await plan.evaluate_async({}, shoes, 2000)  # the shoes answer is cached now; bags are not
    calls = commerce.knobs.calls["/products"]
    outcomes = plan.evaluate_batch([({}, shoes), ({}, bags), ({}, shoes)], deadline_ms=2000)
    assert isinstance(outcomes[0], Result) and isinstance(outcomes[2], Result)  # answered in the batch
    assert callable(outcomes[1])  # its caller goes on with it: not called yet
    assert commerce.knobs.calls["/products"] == calls
    rest = await outcomes[1]()
    assert commerce.knobs.calls["/products"] == calls + 1
    same(rest, await plan.evaluate_async({}, bags, 2000))  # from the cache now, the same answer
    assert [e.id for e in rest.trace] == ["products", "n"]  # both nodes, in order, after the batch let it go


async def test_decisions_ready_in_one_loop_turn_make_one_batch() -> None:
    plan, other = local_plan(), compile_model({"nodes": [{"id": "x", "kind": "expression", "expr": "1 + 1"}]})
    sizes: list[int] = []
    batcher = Batcher(deadline_ms=1000, observe=sizes.append)
    asked = requests(6)
    batcher.reading = 1  # another decision is reading its guest: it could be ready in this turn too
    results = await asyncio.gather(
        *(batcher.evaluate(plan, guest, context) for guest, context in asked), batcher.evaluate(other, {}, {})
    )
    assert sizes == [7]  # one turn, one batch (two plans in it, each evaluated on its own)
    for result, (guest, context) in zip(results[:-1], asked, strict=True):
        same(result, plan.evaluate(guest, context))
    assert str(results[-1].outputs["x"]) == "2"


def test_a_decision_nobody_could_join_is_evaluated_at_once() -> None:
    plan = local_plan()
    sizes: list[int] = []
    batcher = Batcher(deadline_ms=1000, observe=sizes.append)
    guest, context = requests(1)[0]
    # Nothing reads a guest and no batch is forming: the coroutine finishes on its first step, no loop hop.
    with pytest.raises(StopIteration) as finished:
        batcher.evaluate(plan, guest, context).send(None)
    same(finished.value.value, plan.evaluate(guest, context))
    assert sizes == [1]


async def test_a_cancelled_decision_leaves_its_batch_alone() -> None:
    plan = local_plan()
    sizes: list[int] = []
    batcher = Batcher(deadline_ms=1000, observe=sizes.append)
    asked = requests(3)
    batcher.reading = 1
    tasks = [asyncio.ensure_future(batcher.evaluate(plan, guest, context)) for guest, context in asked]
    await asyncio.sleep(0)  # each task has joined the batch; the batch has not run yet
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert sizes == [3]
    assert isinstance(done[1], asyncio.CancelledError)
    for i in (0, 2):
        same(done[i], plan.evaluate(*asked[i]))  # type: ignore[arg-type]


async def test_a_batch_that_raises_fails_its_decisions_not_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = local_plan()
    batcher = Batcher(deadline_ms=1000)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the batch loop")

    monkeypatch.setattr(Plan, "evaluate_batch", broken)
    asked = requests(2)
    batcher.reading = 1
    done = await asyncio.gather(*(batcher.evaluate(plan, g, c) for g, c in asked), return_exceptions=True)
    assert all(isinstance(d, RuntimeError) for d in done)
    monkeypatch.undo()
    done = await asyncio.gather(*(batcher.evaluate(plan, g, c) for g, c in asked))
    same(done[0], plan.evaluate(*asked[0]))  # the next batch is fine


async def test_concurrent_decisions_through_the_app_share_batches(redis_url: str) -> None:
    """Through the real app on a real Redis: requests in flight together read their guests in one round trip
    (engine/store/wire.py), resume in one turn and are evaluated as one batch; each answer is its own."""
    model = {
        "nodes": [
            {"id": "ltv", "kind": "expression", "expr": "guest.facts.lifetime_value"},
            {"id": "answer", "kind": "output", "value": {"ltv": "ltv", "channel": "context.channel"}},
        ]
    }
    app = create_app(Settings(redis_url=redis_url, admin_key="t-admin", public_keys={"t-public": "default"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://arbiter") as client:
            put = await client.put("/v1/models/batched?publish=1", json=model, headers={"x-api-key": "t-admin"})
            assert put.status_code == 201, put.text
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/v1/decide/batched",
                        json={"guest": {"browser_id": f"nobody-{i}"}, "context": {"channel": f"c{i}"}},
                        headers={"x-api-key": "t-public"},
                    )
                    for i in range(12)
                )
            )
        assert [r.status_code for r in replies] == [200] * 12
        assert [r.json()["outputs"]["channel"] for r in replies] == [f"c{i}" for i in range(12)]
        sizes = app.state.rt.metrics.decision_batch
        assert sizes.total == 12 and sum(sizes.counts) < 12  # twelve decisions in fewer batches
