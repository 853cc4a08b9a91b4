"""Partial evaluation: names bound at publish time fold away without changing any answer."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engine.feel import Expression, compile_expression
from engine.model import compile_model

NAMES = {"offer", "x", "context"}


def test_bound_paths_become_constants() -> None:
    e = compile_expression("offer.min_rank <= x", names=NAMES, bindings={"offer": {"min_rank": 3}})
    assert e.references == {"x"}
    assert (e({"x": 5}), e({"x": 2}), e({"x": None})) == (True, False, None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('offer.channel = "any" or offer.channel = context.channel', True),
        ('offer.channel = "WEB" and offer.channel = "APP" and context.x', False),
        ("offer.priority * 2 + 1", 21),
    ],
)
def test_decided_connectives_fold_whole(text: str, value: object) -> None:
    e = compile_expression(text, names=NAMES, bindings={"offer": {"channel": "any", "priority": 10}})
    assert e.is_constant and e({}) == value


@pytest.mark.parametrize(("x", "expected"), [(True, True), (False, False), (None, None), ("yes", None), (1, None)])
def test_and_true_keeps_three_valued_logic(x: object, expected: object) -> None:
    for text in ("x and offer.on", "offer.on and x"):
        assert compile_expression(text, names=NAMES, bindings={"offer": {"on": True}})({"x": x}) is expected
    for text in ("x or offer.off", "offer.off or x"):
        assert compile_expression(text, names=NAMES, bindings={"offer": {"off": False}})({"x": x}) is expected


def catalogue_model(filter_: str, rank: str) -> dict:
    rng = random.Random(7)
    offers = [
        {
            "id": f"o{i}",
            "attributes": {
                "min_rank": rng.randint(0, 3),
                "channel": rng.choice(["any", "WEB", "APP"]),
                "priority": rng.randint(1, 50),
            },
            **({"eligibility": "context.vip = true"} if i % 5 == 0 else {}),
        }
        for i in range(40)
    ]
    return {
        "offers": offers,
        "nodes": [{"id": "pick", "kind": "offers", "filter": filter_, "rank": rank, "limit": 4}],
    }


FILTER = 'offer.min_rank <= context.rank and (offer.channel = "any" or offer.channel = context.channel)'


def failing(expr: Expression) -> Expression:
    """``expr`` as if something in it raised: its guard makes it null."""
    return dataclasses.replace(expr, fn=lambda scope: None)


@pytest.mark.parametrize("operands", ["together", "one by one", "together failed"])
@pytest.mark.parametrize("rank", ["offer.priority", "offer.priority + context.boost"])
def test_offers_answer_as_a_plain_walk_of_the_catalogue_would(rank: str, operands: str) -> None:
    """Against a brute-force reference over seeded random requests (seed printed on failure), whether the
    operands are computed in one call, one by one, or one by one after the one call failed."""
    model = catalogue_model(FILTER, rank)
    plan = compile_model(model)
    node = plan.nodes[0]
    assert node.presorted == (rank == "offer.priority")  # type: ignore[attr-defined]
    assert node.together is not None  # type: ignore[attr-defined]
    if operands != "together":
        together = None if operands == "one by one" else failing(node.together)  # type: ignore[attr-defined]
        plan = dataclasses.replace(plan, nodes=(dataclasses.replace(node, together=together),))
    unbound_filter = compile_expression(FILTER, names=NAMES)
    unbound_rank = compile_expression(rank, names=NAMES)
    eligibility = compile_expression("context.vip = true", names=NAMES)
    seed = 20261123
    rng = random.Random(seed)
    for _ in range(300):
        ctx = {
            "rank": rng.randint(0, 3),
            "channel": rng.choice(["WEB", "APP", None]),
            "vip": rng.choice([True, False, None]),
            "boost": rng.randint(0, 30),
        }
        expected = []
        for o in model["offers"]:
            payload = {"id": o["id"], "name": o["id"], **o["attributes"]}
            scope = {"context": ctx, "offer": payload}
            if "eligibility" in o and eligibility(scope) is not True:
                continue
            if unbound_filter(scope) is True:
                expected.append((unbound_rank(scope), payload["id"]))
        expected.sort(key=lambda r: -r[0])  # stable: ties keep catalogue order
        got = [o["id"] for o in plan.evaluate({}, ctx).outputs["pick"]]
        assert got == [i for _, i in expected[:4]], f"seed {seed}, context {ctx}"


def test_an_offer_that_can_never_pass_leaves_the_plan() -> None:
    plan = compile_model(catalogue_model('offer.channel = "WEB" and context.rank >= 0', "offer.priority"))
    web = sum(1 for o in catalogue_model("true", "1")["offers"] if o["attributes"]["channel"] == "WEB")
    assert len(plan.nodes[0].candidates) == web  # type: ignore[attr-defined]


def test_offers_share_the_operands_of_their_folded_conditions() -> None:
    """40 offers, but only 7 distinct ``and`` operands: ``k <= context.rank`` for k in 0..3, the two channel
    tests and the eligibility. Each is evaluated at most once per request."""
    plan = compile_model(catalogue_model(FILTER, "offer.priority + context.boost"))
    node = plan.nodes[0]
    assert len(node.operands) == 7  # type: ignore[attr-defined]
    # An operand that is null (unknown channel) fails every offer that needs it, as the whole condition would.
    got = plan.evaluate({}, {"rank": 3, "channel": None, "vip": None, "boost": 0}).outputs["pick"]
    assert {o["channel"] for o in got} == {"any"}
