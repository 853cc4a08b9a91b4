"""The offers node's two ways to the same answer: every operand in one call narrowing a bitset of candidates,
and, when that call fails, each candidate's conditions walked lazily."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from engine.model import compile_model

WINDOWS = [
    {},
    {"valid_from": "2026-03-01"},
    {"valid_to": "2026-04-01"},
    {"valid_from": "2026-03-01", "valid_to": "2026-04-01T12:00:00"},
    {"valid_from": "2026-03-15T00:00:00+02:00"},
]
NOWS = [None, "2026-02-28", "2026-03-01", "2026-03-20", "2026-04-01", "2026-04-01T13:00:00", "not a date", 7]


def catalogue(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"o{i}",
            "attributes": {
                "min_rank": rng.randint(0, 3),
                "channel": rng.choice(["any", "WEB", "APP"]),
                "priority": rng.randint(1, 9),  # few values: ties keep catalogue order
            },
            **rng.choice(WINDOWS),
            **({"eligibility": rng.choice(["context.vip = true", "context.cart > 40"])} if rng.random() < 0.3 else {}),
        }
        for i in range(30)
    ]


def model(seed: int, rank: str, limit: int | None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "pick",
        "kind": "offers",
        "filter": 'offer.min_rank <= context.rank and (offer.channel = "any" or offer.channel = context.channel)',
        "rank": rank,
        "order": "asc" if seed % 2 else "desc",
    }
    if limit is not None:
        node["limit"] = limit
    return {"offers": catalogue(seed), "nodes": [node]}


@pytest.mark.parametrize("limit", [None, 1, 4])
@pytest.mark.parametrize("rank", ["offer.priority", "offer.priority + context.boost", "context.missing"])
@pytest.mark.parametrize("seed", [20261203, 11])
def test_at_once_answers_as_the_lazy_walk(seed: int, rank: str, limit: int | None) -> None:
    """Validity windows against a pinned or missing ``now``, eligibility, constant (presorted) and computed
    ranks, nulls: the bitset path and the lazy walk give the same offers in the same order, same trace."""
    plan = compile_model(model(seed, rank, limit))
    node = plan.nodes[0]
    assert node.together is not None and node.windows  # type: ignore[attr-defined]
    failed = dataclasses.replace(node, together=dataclasses.replace(node.together, fn=lambda scope: None))  # type: ignore[attr-defined]
    lazy = dataclasses.replace(plan, nodes=(failed,))
    rng = random.Random(seed)
    answered = 0
    for _ in range(300):
        ctx = {
            "rank": rng.choice([0, 1, 2, 3, None, "2"]),
            "channel": rng.choice(["WEB", "APP", None]),
            "vip": rng.choice([True, False, None]),
            "cart": rng.choice([10, 41.5, None]),
            "boost": rng.choice([0, 5, 2.5]),
        }
        now = rng.choice(NOWS)  # None and nonsense: the wall clock, past every window here
        if now is not None:
            ctx["now"] = now
        expected = lazy.evaluate({}, dict(ctx))
        got = plan.evaluate({}, dict(ctx))
        assert got.outputs == expected.outputs, f"seed {seed}, context {ctx}"
        assert got.trace[0].matched == expected.trace[0].matched
        answered += bool(got.outputs["pick"])
    assert answered > 100  # the comparison is not of empty answers
