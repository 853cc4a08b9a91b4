"""Compiling models: validation with JSON pointers, the dependency graph, cycles and dangling references."""

from __future__ import annotations

import pytest

from engine.errors import BadRequest, ValidationError
from engine.model import compile_model, parse_document


def pointers(defn: dict) -> set[str]:
    with pytest.raises(ValidationError) as info:
        compile_model(defn)
    return {p.pointer for p in info.value.problems}


def test_nodes_are_ordered_by_dependencies_not_by_listing() -> None:
    plan = compile_model(
        {
            "nodes": [
                {"id": "answer", "kind": "output", "value": {"x": "b"}},
                {"id": "b", "kind": "rule", "expr": "a"},
                {"id": "a", "kind": "rule", "expr": "context.flag = true"},
            ]
        }
    )
    assert [n.id for n in plan.nodes] == ["a", "b", "answer"]
    assert plan.evaluate({}, {"flag": True}).outputs == {"x": True}


def test_cycle_is_a_validation_error_naming_the_nodes() -> None:
    assert pointers(
        {"nodes": [{"id": "a", "kind": "rule", "expr": "b"}, {"id": "b", "kind": "rule", "expr": "a"}]}
    ) == {"/nodes/0", "/nodes/1"}


def test_dangling_reference_is_reported() -> None:
    with pytest.raises(ValidationError) as info:
        compile_model({"nodes": [{"id": "a", "kind": "rule", "expr": "missing_node > 1"}]})
    assert info.value.problems[0].pointer == "/nodes/0"
    assert "missing_node" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("defn", "expected"),
    [
        ({}, {"/nodes"}),
        ({"nodes": []}, {"/nodes"}),
        ({"nodes": [{"kind": "rule", "expr": "true"}]}, {"/nodes/0/id"}),
        ({"nodes": [{"id": "guest", "kind": "rule", "expr": "true"}]}, {"/nodes/0/id"}),
        (
            {"nodes": [{"id": "a", "kind": "rule", "expr": "true"}, {"id": "a", "kind": "rule", "expr": "true"}]},
            {"/nodes/1/id"},
        ),
        ({"nodes": [{"id": "a", "kind": "wizard"}]}, {"/nodes/0/kind"}),
        ({"nodes": [{"id": "a", "kind": "rule", "expr": 5}]}, {"/nodes/0/expr"}),
        ({"nodes": [{"id": "a", "kind": "rule", "expr": "true", "colour": 1}]}, {"/nodes/0/colour"}),
        ({"nodes": [{"id": "a", "kind": "rule", "expr": "true"}], "extra": 1}, {"/extra"}),
        (
            {"nodes": [{"id": "a", "kind": "output", "value": {"x": "1"}}, {"id": "b", "kind": "output", "value": 1}]},
            {"/nodes/1"},
        ),
        ({"nodes": [{"id": "a", "kind": "rule", "expr": "true"}], "deadline_ms": 0}, {"/deadline_ms"}),
        (
            {"nodes": [{"id": "o", "kind": "offers", "limit": 0}], "offers": [{"name": "no id"}]},
            {"/nodes/0/limit", "/offers/0/id"},
        ),
        (
            {"nodes": [{"id": "o", "kind": "offers"}], "offers": [{"id": "x", "valid_from": "soon"}]},
            {"/offers/0/valid_from"},
        ),
    ],
)
def test_problems_carry_pointers(defn: dict, expected: set[str]) -> None:
    assert pointers(defn) == expected


def test_every_problem_is_reported_at_once() -> None:
    found = pointers({"nodes": [{"id": "a", "kind": "rule", "expr": "(("}, {"id": "b", "kind": "rule", "expr": "))"}]})
    assert found == {"/nodes/0/expr", "/nodes/1/expr"}


def test_gate_skips_a_node() -> None:
    plan = compile_model(
        {
            "nodes": [
                {"id": "on", "kind": "rule", "expr": "context.on = true"},
                {"id": "x", "kind": "rule", "expr": "true", "when": "on"},
            ]
        }
    )
    off = plan.evaluate({}, {"on": False})
    assert off.outputs == {"on": False, "x": None} and off.trace[1].skipped
    assert plan.evaluate({}, {"on": True}).outputs == {"on": True, "x": True}


def test_parse_document_formats() -> None:
    assert parse_document(b'{"a": 1}', "application/json") == {"a": 1}
    assert parse_document(b"a: 1\n", "application/yaml") == {"a": 1}
    assert parse_document(b"a: 1\n", None) == {"a": 1}
    with pytest.raises(BadRequest, match="malformed JSON"):
        parse_document(b'{"a": ', "application/json")
    with pytest.raises(BadRequest, match="malformed YAML at line 2, column 1"):
        parse_document(b"a: [1,\n", "application/yaml")
    with pytest.raises(ValidationError):
        parse_document(b"[1]", "application/json")
