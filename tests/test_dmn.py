"""DMN XML import: two vendor dialects end to end, and located import problems."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from engine.dmn import dmn_to_model
from engine.errors import ValidationError
from engine.feel.convert import coerce_input
from tests.dmn_harness import evaluate, load


def test_camunda_dialect_first_hit_policy() -> None:
    model = load("camunda-discount.dmn")
    assert model["key"] == "Loyalty-discount" and model["format"] == "dmn"
    # Camunda declares no inputData: the variables the table reads become the model's inputs.
    assert model["inputs"] == [{"name": "customerTier", "type": "string"}, {"name": "orderTotal", "type": "double"}]
    (node,) = model["nodes"]
    assert node["id"] == "Discount" and node["kind"] == "table" and node["hit_policy"] == "FIRST"
    assert node["rules"][1]["when"] == ['"gold"', "-"]  # an empty entry means "any"
    assert node["rules"][2]["then"] == ["5", "null"]
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"customerTier": "gold", "orderTotal": 150.0}, {"discount": Decimal(20), "reason": "gold, big basket"}),
        ({"customerTier": "gold", "orderTotal": 20}, {"discount": Decimal(10), "reason": "gold"}),
        ({"customerTier": "silver", "orderTotal": 99.99}, {"discount": Decimal(5), "reason": None}),
        ({"customerTier": "silver", "orderTotal": 100}, {"discount": Decimal(0), "reason": "none"}),
        ({"customerTier": "bronze", "orderTotal": None}, {"discount": Decimal(0), "reason": "none"}),
    ]
    for inputs, expected in cases:
        assert evaluate(model, inputs) == ({"Discount": expected}, []), inputs


def test_camunda_input_values_are_enforced() -> None:
    outputs, errors = evaluate(load("camunda-discount.dmn"), {"customerTier": "platinum", "orderTotal": 10})
    assert outputs == {"Discount": None}
    assert errors and "'platinum' is not one of its allowed values" in errors[0]


def test_trisotech_dialect_with_item_definitions() -> None:
    model = load("trisotech-eligibility.dmn")
    assert model["inputs"] == [{"name": "Applicant", "type": "tApplicant"}, {"name": "Risk Category", "type": "tRisk"}]
    assert model["types"]["tApplicant"]["components"]["member since"] == "date"
    assert {n["id"]: n["kind"] for n in model["nodes"]} == {
        "Eligibility": "table",
        "Best Score": "expression",
        "Summary": "expression",
    }
    applicant = {"age": 30, "member since": "2019-06-01", "scores": [3, 7.5]}
    outputs, errors = evaluate(model, {"Applicant": applicant, "Risk Category": "Low"})
    assert errors == []
    assert outputs == {"Eligibility": "Eligible", "Best Score": Decimal(15), "Summary": "Eligible (15)"}
    outputs, _ = evaluate(model, {"Applicant": {**applicant, "age": 16}, "Risk Category": "High"})
    assert outputs["Eligibility"] == "Ineligible"  # PRIORITY: both Ineligible rules, first output value wins
    outputs, _ = evaluate(model, {"Applicant": {**applicant, "member since": "2021-01-01"}, "Risk Category": "Low"})
    assert outputs["Eligibility"] == "Review"  # nothing matches: the default output entry


def test_coerce_input_resolves_item_definitions() -> None:
    types = load("trisotech-eligibility.dmn")["types"]
    value = coerce_input({"age": 30, "member since": "2019-06-01", "scores": 4, "extra": 1.5}, "tApplicant", types)
    assert value == {
        "age": Decimal(30),
        "member since": date(2019, 6, 1),
        "scores": [Decimal(4)],
        "extra": Decimal("1.5"),
    }
    assert coerce_input("Low", "tRisk", types) == "Low"
    assert coerce_input(None, "tApplicant", types) is None
    assert coerce_input("2020-02-02", "date", types) == date(2020, 2, 2)


DMN15 = "https://www.omg.org/spec/DMN/20230324/MODEL/"


def doc(body: str, ns: str = DMN15) -> bytes:
    return f'<definitions xmlns="{ns}" name="m" id="m" namespace="x">{body}</definitions>'.encode()


TABLE = """<decision name="D" id="d"><decisionTable hitPolicy="UNIQUE">
  <input id="i1"><inputExpression typeRef="number"><text>Age</text></inputExpression></input>
  <output id="o1"/>
  <rule id="r1"><inputEntry><text>&lt; 18</text></inputEntry><outputEntry><text>"minor"</text></outputEntry></rule>
  <rule id="r2"><inputEntry><text>{entry}</text></inputEntry><outputEntry><text>{output}</text></outputEntry></rule>
</decisionTable></decision><inputData name="Age" id="a"><variable name="Age" typeRef="number"/></inputData>"""

# (document, pointer of the expected problem, part of its message)
BAD_DOCUMENTS: list[tuple[bytes, str, str]] = [
    (b"<definitions", "", "malformed XML"),
    (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]><d/>', "", "entities"),
    (b'<definitions xmlns="http://example.com/not-dmn"/>', "", "not a DMN document"),
    (doc(""), "", "no decisions"),
    (doc(TABLE.format(entry="[18..", output='"adult"')), "/decision[D]/rule[2]/inputEntry[1]", "expected"),
    (doc(TABLE.format(entry=">= 18", output='"adult" +')), "/decision[D]/rule[2]/outputEntry[1]", "expected"),
    (
        doc(TABLE.format(entry='&gt;= 18</text></inputEntry><inputEntry><text>"x"', output='"a"')),
        "/decision[D]/rule[2]",
        "2 input and 1 output entries",
    ),
    (doc('<decision name="C" id="c"><context/></decision>'), "/decision[C]", "'context' is not supported"),
    (doc('<decision name="I" id="i"><invocation/></decision>'), "/decision[I]", "'invocation' is not supported"),
    (doc('<decision name="E" id="e"><variable name="E"/></decision>'), "/decision[E]", "no decision logic"),
    (
        doc(
            '<decision name="J" id="j"><literalExpression expressionLanguage="juel"><text>${a}</text>'
            "</literalExpression></decision>"
        ),
        "/decision[J]/literalExpression",
        "'juel' is not supported",
    ),
    (
        doc(
            '<decision name="X" id="x"><literalExpression><text>1</text></literalExpression></decision>'
            '<inputData name="X" id="y"/>'
        ),
        "/decision[X]",
        "used twice",
    ),
    (
        doc(
            '<decision name="M" id="m"><decisionTable><input><inputExpression><text>a</text></inputExpression>'
            "</input><output name='p'/><output/></decisionTable></decision>"
        ),
        "/decision[M]/output[2]",
        "needs a name",
    ),
    (
        doc('<decision name="L" id="l"><literalExpression><text>1 +</text></literalExpression></decision>'),
        "/decision[L]/literalExpression",
        "expected a value",
    ),
]


@pytest.mark.parametrize(
    ("xml", "pointer", "message"), BAD_DOCUMENTS, ids=[f"{c[1] or '/'} {c[2]}" for c in BAD_DOCUMENTS]
)
def test_import_problems_are_located(xml: bytes, pointer: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        dmn_to_model(xml)
    assert any(p.pointer == pointer and message in p.message for p in info.value.problems), info.value.problems


NAMESPACES = [
    "http://www.omg.org/spec/DMN/20151101/dmn.xsd",  # 1.1
    "http://www.omg.org/spec/DMN/20180521/MODEL/",  # 1.2
    "https://www.omg.org/spec/DMN/20191111/MODEL/",  # 1.3
    "https://www.omg.org/spec/DMN/20211108/MODEL/",  # 1.4
    DMN15,
]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_every_dmn_version_imports(ns: str) -> None:
    body = TABLE.format(entry=">= 18", output='"adult"').replace('typeRef="number"', 'typeRef="feel:number"')
    model = dmn_to_model(doc(body, ns), key="age-band")
    assert model["key"] == "age-band"
    assert model["inputs"] == [{"name": "Age", "type": "number"}]
    assert evaluate(model, {"Age": 40}) == ({"D": "adult"}, [])
    outputs, errors = evaluate(model, {"Age": None})
    assert outputs == {"D": None} and errors == []


def test_item_definition_allowed_values_are_enforced_on_inputs() -> None:
    """A value outside an input type's allowed values is an error and reaches the model as null."""
    from engine.model import compile_model

    model = {
        "inputs": [{"name": "Risk", "type": "tRisk"}],
        "types": {"tRisk": {"base": "string", "values": '"Low","Medium","High"'}},
        "nodes": [{"id": "Echo", "kind": "expression", "expr": "Risk"}],
    }
    plan = compile_model(model)
    ok = plan.evaluate({}, {"Risk": "Low"})
    assert (ok.outputs, ok.errors) == ({"Echo": "Low"}, [])
    bad = plan.evaluate({}, {"Risk": "Extreme"})
    assert bad.outputs == {"Echo": None}
    assert bad.errors[0]["input"] == "Risk" and "not allowed" in bad.errors[0]["error"]
    assert plan.evaluate({}, {}).errors == []  # a missing input is null, not a violation
    broken = {**model, "types": {"tRisk": {"base": "string", "values": '"Low",,'}}}
    with pytest.raises(ValidationError) as info:
        compile_model(broken)
    assert info.value.problems[0].pointer == "/types/tRisk/values"
