"""The output node: its template's leaves computed in one generated call and assembled as JSON, exactly
as evaluating each leaf and converting the answer would."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engine.feel import to_json
from engine.model import compile_model

TEMPLATE = {
    "offer": "items[1].id",
    "alternatives": ["items[2].id", "items[3].id", '"none"'],
    "score": "context.base * 1.5 + count(items)",
    "ratio": "context.base / 3",
    "when": 'date(context.day) + duration("P1D")',
    "segment": {"name": 'if context.base > 10 then "vip" else "regular"', "rank": "context.rank", "fixed": 7},
    "flags": {"known": "context.base != null", "empty": "items[context.rank = 99]"},
    "nothing": None,
    "yes": True,
}
ITEMS = "[" + ", ".join(f'{{id: "o{i}", k: {i}}}' for i in range(1, 6)) + "][k <= context.n]"
MODEL = {
    "nodes": [
        {"id": "items", "kind": "expression", "expr": ITEMS},
        {"id": "answer", "kind": "output", "value": TEMPLATE},
    ]
}


def contexts(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "base": rng.choice([None, 0, 4, 12.5, 1000]),
            "rank": rng.choice([None, 1, 2, 99]),
            "day": rng.choice(["2026-11-23", "not a date", None]),
            "n": rng.choice([0, 1, 3, 5]),
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [20261123, 7])
def test_one_call_answers_as_leaf_by_leaf_would(seed: int) -> None:
    plan = compile_model(MODEL)
    answer = plan.nodes[-1]
    assert answer.leaves is not None and answer.assemble is not None  # type: ignore[attr-defined]
    leaf_by_leaf = dataclasses.replace(plan, nodes=(*plan.nodes[:-1], dataclasses.replace(answer, leaves=None)))
    failed = dataclasses.replace(answer, leaves=dataclasses.replace(answer.leaves, fn=lambda scope: None))  # type: ignore[attr-defined]
    after_failure = dataclasses.replace(plan, nodes=(*plan.nodes[:-1], failed))
    for context in contexts(seed, 200):
        reference = leaf_by_leaf.evaluate({}, dict(context)).outputs
        assert plan.evaluate({}, dict(context)).outputs == reference, f"seed {seed}, context {context}"
        assert after_failure.evaluate({}, dict(context)).outputs == reference
        assert to_json(reference) == reference  # JSON already: numbers are int/float, dates strings


def test_the_answer_keeps_the_templates_shape_and_json_kinds() -> None:
    out = compile_model(MODEL).evaluate({}, {"base": 12, "rank": 2, "day": "2026-11-23", "n": 3}).outputs
    assert out == {
        "offer": "o1",
        "alternatives": ["o2", "o3", "none"],
        "score": 21,
        "ratio": 4,
        "when": "2026-11-24",
        "segment": {"name": "vip", "rank": 2, "fixed": 7},
        "flags": {"known": True, "empty": []},
        "nothing": None,
        "yes": True,
    }
    assert type(out["score"]) is int and type(out["segment"]["rank"]) is int


def test_list_leaves_are_fresh_json_lists() -> None:
    """A leaf whose value is a list (of ids, of numbers, nested) is converted as the leaf-by-leaf conversion
    converts it, into a list of its own: never the scope's list."""
    model = {
        "nodes": [
            {"id": "items", "kind": "expression", "expr": ITEMS},
            {"id": "ids", "kind": "expression", "expr": '["a", null, true, "b"]'},
            {
                "id": "answer",
                "kind": "output",
                "value": {"ids": "items.id", "ks": "items.k", "nested": "[items.id, [1.5]]", "plain": "ids"},
            },
        ]
    }
    plan = compile_model(model)
    answer = plan.nodes[-1]
    leaf_by_leaf = dataclasses.replace(plan, nodes=(*plan.nodes[:-1], dataclasses.replace(answer, leaves=None)))
    for n in (0, 1, 3, 5):
        got = plan.evaluate({}, {"n": n})
        assert got.outputs == leaf_by_leaf.evaluate({}, {"n": n}).outputs
        assert got.outputs["ids"] == [f"o{i}" for i in range(1, n + 1)]
        assert got.outputs["plain"] == ["a", None, True, "b"]
        assert all(type(k) is int for k in got.outputs["ks"])
        scope_ids = next(e.output for e in got.trace if e.id == "ids")
        assert got.outputs["plain"] is not scope_ids
