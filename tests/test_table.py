"""Decision tables: every hit policy, defaults, allowed values, compile problems, and the rule index."""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal
from typing import Any

import pytest

from engine.errors import EvaluationError, Problem
from engine.feel import compile_unary_tests
from engine.nodes import expression, table
from engine.nodes.base import CompileContext, TraceEntry

NAMES = frozenset({"Age", "Risk", "tier", "guest", "limit", "Applicant Age"})


def compile_table(defn: dict[str, Any], names: frozenset[str] = NAMES) -> tuple[Any, list[Problem]]:
    ctx = CompileContext(names, {}, [])
    node = table.compile({"id": "t", "kind": "table", **defn}, "/nodes/0", ctx)
    return node, ctx.problems


def run(defn: dict[str, Any], scope: dict[str, Any]) -> tuple[Any, list[str] | None]:
    node, problems = compile_table(defn)
    assert problems == [] and node is not None
    trace = TraceEntry("t", "table")
    return node.evaluate(scope, trace), trace.matched


AGE_TABLE: dict[str, Any] = {
    "inputs": [{"expr": "Age"}],
    "outputs": [{"name": "band", "values": '"child", "teen", "adult"'}],
    "rules": [
        {"id": "adult", "when": [">= 18"], "then": ['"adult"']},
        {"id": "teen", "when": ["[13..18)"], "then": ['"teen"']},
        {"id": "young", "when": ["< 16"], "then": ['"child"']},
    ],
}


def policy(hit: str, **extra: Any) -> dict[str, Any]:
    return {**AGE_TABLE, "hit_policy": hit, **extra}


# (hit policy, Age, expected output, expected matched ids)
HIT_CASES: list[tuple[str, Any, Any, list[str]]] = [
    ("UNIQUE", 30, "adult", ["adult"]),
    ("U", 5, "child", ["young"]),
    ("FIRST", 14, "teen", ["teen"]),
    ("F", 30, "adult", ["adult"]),
    ("PRIORITY", 14, "child", ["teen", "young"]),  # "child" comes first in the output values
    ("RULE ORDER", 14, ["teen", "child"], ["teen", "young"]),
    ("OUTPUT ORDER", 14, ["child", "teen"], ["teen", "young"]),
    ("COLLECT", 14, ["teen", "child"], ["teen", "young"]),
    ("C", 30, ["adult"], ["adult"]),
    ("R", None, [], []),
    ("O", None, [], []),
    ("C", None, [], []),
    ("U", None, None, []),
    ("P", None, None, []),
]


@pytest.mark.parametrize(("hit", "age", "expected", "matched"), HIT_CASES, ids=[f"{c[0]}-{c[1]}" for c in HIT_CASES])
def test_hit_policies(hit: str, age: Any, expected: Any, matched: list[str]) -> None:
    assert run(policy(hit), {"Age": age}) == (expected, matched)


def test_unique_overlap_names_both_rules() -> None:
    with pytest.raises(EvaluationError, match="'teen' and 'young'"):
        run(policy("UNIQUE"), {"Age": 14})


ANY_TABLE: dict[str, Any] = {
    "hit_policy": "ANY",
    "inputs": [{"expr": "Age"}, {"expr": "Risk"}],
    "outputs": [{"name": "status"}],
    "rules": [
        {"id": "r1", "when": [">= 18", '"Low"'], "then": ['"Approved"']},
        {"id": "r2", "when": ["-", '"Low"'], "then": ['"Approved"']},
        {"id": "r3", "when": ["< 21", "-"], "then": ['"Declined"']},
    ],
}


def test_any_agreeing_matches() -> None:
    assert run(ANY_TABLE, {"Age": 30, "Risk": "Low"}) == ("Approved", ["r1", "r2"])


def test_any_conflict_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="'r1' and 'r3'"):
        run(ANY_TABLE, {"Age": 19, "Risk": "Low"})


SUM_TABLE: dict[str, Any] = {
    "hit_policy": "COLLECT",
    "inputs": [{"expr": "Age"}],
    "outputs": [{"name": "points"}],
    "rules": [
        {"when": ["> 1"], "then": ["100"]},
        {"when": ["> 2"], "then": ["200.5"]},
        {"when": ["> 3"], "then": ["100"]},
    ],
}


# (policy, aggregation, Age, expected)
AGG_CASES: list[tuple[str, str | None, Any, Any]] = [
    ("C+", None, 5, Decimal("400.5")),
    ("C", "SUM", 5, Decimal("400.5")),
    ("C#", None, 5, Decimal(3)),
    ("C", "COUNT", 3, Decimal(2)),
    ("C<", None, 5, Decimal(100)),
    ("C>", None, 5, Decimal("200.5")),
    ("C", "MAX", 2, Decimal(100)),
    ("C+", None, 0, None),
    ("C<", None, 0, None),
    ("C>", None, 0, None),
    ("C#", None, 0, Decimal(0)),
]


@pytest.mark.parametrize(
    ("hit", "agg", "age", "expected"), AGG_CASES, ids=[f"{c[0]}{c[1] or ''}-{c[2]}" for c in AGG_CASES]
)
def test_collect_aggregations(hit: str, agg: str | None, age: Any, expected: Any) -> None:
    defn = {**SUM_TABLE, "hit_policy": hit}
    if agg:
        defn["aggregation"] = agg
    result, _ = run(defn, {"Age": age})
    assert result == expected and type(result) is type(expected)


MULTI: dict[str, Any] = {
    "hit_policy": "PRIORITY",
    "inputs": [{"expr": "Age"}],
    "outputs": [
        {"name": "status", "values": '"Declined", "Approved"', "default": '"Declined"'},
        {"name": "rate", "values": '"Best", "Standard"', "default": '"Standard"'},
    ],
    "rules": [
        {"id": "a", "when": [">= 18"], "then": ['"Approved"', '"Standard"']},
        {"id": "b", "when": [">= 21"], "then": ['"Approved"', '"Best"']},
        {"id": "c", "when": [">= 65"], "then": ['"Declined"', '"Standard"']},
    ],
}


def test_multi_output_priority_orders_columns_in_turn() -> None:
    assert run(MULTI, {"Age": 30}) == ({"status": "Approved", "rate": "Best"}, ["a", "b"])
    assert run(MULTI, {"Age": 70})[0] == {"status": "Declined", "rate": "Standard"}


def test_multi_output_defaults_when_nothing_matches() -> None:
    assert run(MULTI, {"Age": 10}) == ({"status": "Declined", "rate": "Standard"}, [])
    assert run({**MULTI, "hit_policy": "RULE ORDER"}, {"Age": 10})[0] == [{"status": "Declined", "rate": "Standard"}]


def test_output_order_sorts_multi_output_rows() -> None:
    result, _ = run({**MULTI, "hit_policy": "OUTPUT ORDER"}, {"Age": 70})
    assert result == [
        {"status": "Declined", "rate": "Standard"},
        {"status": "Approved", "rate": "Best"},
        {"status": "Approved", "rate": "Standard"},
    ]


def test_single_output_default() -> None:
    defn = {**AGE_TABLE, "outputs": [{"name": "band", "default": '"unknown"'}], "hit_policy": "F"}
    assert run(defn, {"Age": None}) == ("unknown", [])


def test_input_outside_allowed_values() -> None:
    defn = {
        "inputs": [{"expr": "tier", "values": '"gold","silver"'}],
        "outputs": [{"name": "d"}],
        "rules": [{"when": ['"gold"'], "then": ["20"]}],
    }
    assert run(defn, {"tier": "gold"})[0] == Decimal(20)
    assert run(defn, {"tier": None})[0] is None
    with pytest.raises(EvaluationError, match="'tier' = 'bronze' is not one of its allowed values"):
        run(defn, {"tier": "bronze"})


def test_output_outside_allowed_values() -> None:
    defn = {
        "inputs": [{"expr": "Age"}],
        "outputs": [{"name": "d", "values": "0, 10, 20"}],
        "rules": [{"id": "odd", "when": ["-"], "then": ["Age"]}],
    }
    assert run(defn, {"Age": 10})[0] == 10
    with pytest.raises(EvaluationError, match="rule 'odd' gives output 'd' = 15"):
        run(defn, {"Age": 15})


def test_inputs_are_evaluated_once_and_typed() -> None:
    defn = {
        "hit_policy": "C",
        "inputs": [{"expr": "guest.attributes.joined", "type": "date"}],
        "outputs": [{"name": "era"}],
        "rules": [
            {"when": ['< date("2020-01-01")'], "then": ['"old"']},
            {"when": ['>= date("2020-01-01")'], "then": ['"new"']},
        ],
    }
    assert run(defn, {"guest": {"attributes": {"joined": "2019-05-01"}}})[0] == ["old"]


def test_cells_compare_with_other_inputs_and_expressions() -> None:
    defn = {
        "hit_policy": "F",
        "inputs": [{"expr": "Applicant Age"}],
        "outputs": [{"name": "ok"}],
        "rules": [{"when": ["> limit + 1"], "then": ["Applicant Age - limit"]}, {"when": ["-"], "then": ["0"]}],
    }
    node, problems = compile_table(defn)
    assert problems == [] and node.deps == {"Applicant Age", "limit"}
    assert node.evaluate({"Applicant Age": 30, "limit": 18}, TraceEntry("t", "table")) == Decimal(12)


def test_gate_is_compiled() -> None:
    node, problems = compile_table({**AGE_TABLE, "when": "Age > 0", "hit_policy": "F"})
    assert problems == [] and node.gate is not None and node.gate({"Age": 1}) is True


# (definition change, pointer of the expected problem)
BAD_TABLES: list[tuple[dict[str, Any], str]] = [
    ({"hit_policy": "SOMETIMES"}, "/nodes/0/hit_policy"),
    ({"hit_policy": "F", "aggregation": "SUM"}, "/nodes/0/aggregation"),
    ({"hit_policy": "P", "outputs": [{"name": "band"}]}, "/nodes/0/outputs"),
    ({"inputs": [{"expr": "Age +"}]}, "/nodes/0/inputs/0/expr"),
    ({"inputs": [{"expr": "Age", "values": "[1.."}]}, "/nodes/0/inputs/0/values"),
    ({"outputs": [{"name": "band", "default": "(("}]}, "/nodes/0/outputs/0/default"),
    (
        {"rules": [{"when": [">= 18"], "then": ['"adult"']}, {"when": ["[13..18"], "then": ['"teen"']}]},
        "/nodes/0/rules/1/when/0",
    ),
    ({"rules": [{"when": [">= 18", "-"], "then": ['"adult"']}]}, "/nodes/0/rules/0/when"),
    ({"rules": [{"when": [">= 18"], "then": ['"adult" +']}]}, "/nodes/0/rules/0/then/0"),
    ({"rules": [{"when": [">= 18"]}]}, "/nodes/0/rules/0/then"),
    (
        {"rules": [{"id": "x", "when": ["1"], "then": ["1"]}, {"id": "x", "when": ["2"], "then": ["2"]}]},
        "/nodes/0/rules/1/id",
    ),
    ({"outputs": []}, "/nodes/0/outputs"),
    ({"colour": "red"}, "/nodes/0/colour"),
    (
        {"hit_policy": "C+", "outputs": [{"name": "a"}, {"name": "b"}], "rules": [{"when": ["1"], "then": ["1", "2"]}]},
        "/nodes/0/hit_policy",
    ),
]


@pytest.mark.parametrize(("change", "pointer"), BAD_TABLES, ids=[c[1] for c in BAD_TABLES])
def test_compile_problems_carry_pointers(change: dict[str, Any], pointer: str) -> None:
    node, problems = compile_table({**AGE_TABLE, **change})
    assert node is None
    assert pointer in [p.pointer for p in problems], problems


def test_index_agrees_with_a_plain_scan() -> None:
    """Random tables mixing literal, list, comparison, range, negated and wildcard cells: the indexed
    evaluation must match exactly the rules a cell-by-cell scan matches."""
    seed = 20240611
    rng = random.Random(seed)
    cells = [
        '"a"',
        '"b"',
        '"a","c"',
        "-",
        'not("a")',
        "1",
        "2",
        "[1..2]",
        "< 2",
        "null",
        "true",
        "> 1",
        "<= 1",
        "(1..2]",
        "]0..1[",
        "[1..1]",
        "2.5",
        ">= 2.5",
        "< 0, > 2",
        "= 1",
    ]
    values = ["a", "b", "c", 0, 1, 2, 3, Decimal("1.0"), 1.0, 1.5, 2.5, -1, True, None, [1]]
    for _ in range(400):
        rules = [
            {"id": str(i), "when": [rng.choice(cells) for _ in range(3)], "then": [str(i)]}
            for i in range(rng.randint(1, 12))
        ]
        defn = {
            "hit_policy": "R",
            "inputs": [{"expr": "x"}, {"expr": "y"}, {"expr": "z"}],
            "outputs": [{"name": "o"}],
            "rules": rules,
        }
        node, problems = compile_table(defn, frozenset({"x", "y", "z"}))
        assert problems == []
        for _ in range(10):
            scope = {"x": rng.choice(values), "y": rng.choice(values), "z": rng.choice(values)}
            trace = TraceEntry("t", "table")
            node.evaluate(scope, trace)
            expected = [
                r["id"]
                for r in rules
                if all(compile_unary_tests(c).matches(v, scope) for c, v in zip(r["when"], scope.values(), strict=True))
            ]
            assert trace.matched == expected, f"seed {seed}: {rules} {scope}"


def test_expression_node() -> None:
    ctx = CompileContext(frozenset({"a", "b"}), {}, [])
    node = expression.compile({"id": "x", "kind": "expression", "expr": "a + b", "type": "number"}, "/nodes/1", ctx)
    assert ctx.problems == [] and node is not None
    assert node.deps == {"a", "b"} and node.gate is None
    assert node.evaluate({"a": 1, "b": 0.5}, TraceEntry("x", "expression")) == Decimal("1.5")
    bad = expression.compile({"id": "y", "kind": "expression", "expr": "a +"}, "/nodes/2", ctx)
    assert bad is None and ctx.problems[0].pointer == "/nodes/2/expr"


def test_constant_rule_outputs_are_fresh_per_hit_and_computed_ones_per_request() -> None:
    """A rule whose outputs are all constants answers a prepared result: a copy per hit, so a caller that changes
    one answer does not change the next; a rule with a computed or mutable output is evaluated every time."""
    defn = {
        "hit_policy": "FIRST",
        "inputs": [{"expr": "Age"}],
        "outputs": [{"name": "band"}, {"name": "limit"}],
        "rules": [
            {"id": "adult", "when": [">= 18"], "then": ['"adult"', "100"]},
            {"id": "teen", "when": ["[13..18)"], "then": ['"teen"', "Age * 2"]},
            {"id": "child", "when": ["< 13"], "then": ['"child"', "[1, 2]"]},
        ],
    }
    node, problems = compile_table(defn)
    assert problems == [] and node is not None
    first = node.evaluate({"Age": Decimal(30)}, TraceEntry("t", "table"))
    assert first == {"band": "adult", "limit": Decimal(100)}
    first["band"] = "changed"
    assert node.evaluate({"Age": Decimal(40)}, TraceEntry("t", "table")) == {"band": "adult", "limit": Decimal(100)}
    assert [node.evaluate({"Age": Decimal(a)}, TraceEntry("t", "table"))["limit"] for a in (14, 15)] == [28, 30]
    kid = node.evaluate({"Age": Decimal(5)}, TraceEntry("t", "table"))
    kid["limit"].append(3)
    assert node.evaluate({"Age": Decimal(6)}, TraceEntry("t", "table"))["limit"] == [Decimal(1), Decimal(2)]


def _number_table(typed: bool) -> dict[str, Any]:
    """Interval cells whose ends no float holds exactly, two that one float stands for, and a literal column."""
    number: dict[str, Any] = {"type": "number"} if typed else {}
    return {
        "hit_policy": "R",
        "inputs": [{"expr": "guest.facts.spend", **number}, {"expr": "guest.facts.channel"}],
        "outputs": [{"name": "o"}],
        "rules": [
            {"id": "tiny", "when": ["< 0.1", "-"], "then": ["1"]},
            {"id": "near", "when": [">= 0.10000000000000000001", '"WEB"'], "then": ["2"]},
            {"id": "band", "when": ["[0.3..100)", '"APP"'], "then": ["3"]},
            {"id": "open", "when": ["]0.000000000000000000000000000001..0.3]", "-"], "then": ["4"]},
            {"id": "big", "when": ["> 100", "-"], "then": ["5"]},
            {"id": "any", "when": ["-", '"WEB"'], "then": ["6"]},
        ],
    }


NUMBERS = [0.1, 0.3, 0.30000000000000004, 0.29999999999999993, 1e-30, 1e-31, 0.0, -0.0, 100.0, 99.99999999999999]
NUMBERS += [100.00000000000001, 42.5, -3.25, float("nan"), float("inf"), float("-inf"), 7, 100, 0, True, "5", None]


@pytest.mark.parametrize("typed", [True, False])
def test_an_interval_index_places_a_float_as_its_decimal(typed: bool) -> None:
    """A float an interval index places without converting it lands where Decimal(repr(x)) — what a number
    input converts it to — lands, on and beside ends that floats hold only approximately; and a typed column
    read only by that index is not converted at all."""
    node, problems = compile_table(_number_table(typed), frozenset({"guest"}))
    assert problems == [] and node is not None
    assert node.checks == ()
    for x in NUMBERS:
        for channel in ("WEB", "APP", None):
            trace, converted = TraceEntry("t", "table"), TraceEntry("t", "table")
            got = node.evaluate({"guest": {"facts": {"spend": x, "channel": channel}}}, trace)
            as_decimal = Decimal(repr(x)) if type(x) is float else x
            want = node.evaluate({"guest": {"facts": {"spend": as_decimal, "channel": channel}}}, converted)
            assert (got, trace.matched) == (want, converted.matched), (x, channel)


def test_inputs_read_in_one_call_answer_as_one_call_per_column() -> None:
    """The inputs read together (``guest.facts`` once) and, when that call fails, column by column: the same
    rules, results and errors (an input outside its allowed values), whatever the guest looks like."""
    defn = {
        "hit_policy": "C",
        "inputs": [
            {"expr": "guest.facts.spend", "type": "number"},
            {"expr": "guest.facts.tier", "values": '"gold","silver"'},
            {"expr": "guest.facts.since", "type": "date"},
            {"expr": "guest.facts.visits"},
        ],
        "outputs": [{"name": "o"}],
        "rules": [
            {"id": "a", "when": ["> 10", '"gold"', "-", "-"], "then": ['"a"']},
            {"id": "b", "when": ["-", "-", '< date("2020-01-01")', "-"], "then": ['"b"']},
            {"id": "c", "when": ["[1..50]", "-", "-", ">= 3"], "then": ["guest.facts.spend * 2"]},
            {"id": "d", "when": ["-", '"silver"', "-", "-"], "then": ['"d"']},
        ],
    }
    node, problems = compile_table(defn, frozenset({"guest"}))
    assert problems == [] and node is not None and node.inputs is not None and node.inputs.together is not None
    one_by_one = dataclasses.replace(node, inputs=None)
    broken = dataclasses.replace(node.inputs.together, fn=lambda scope: None)
    failed = dataclasses.replace(node, inputs=dataclasses.replace(node.inputs, together=broken))
    seed = 20261203
    rng = random.Random(seed)
    errors = 0
    for _ in range(400):
        facts: Any = {
            "spend": rng.choice([None, 5, 12.5, 40, "x", Decimal("11")]),
            "tier": rng.choice(["gold", "silver", "bronze", None]),
            "since": rng.choice(["2019-05-01", "2021-01-01", "nonsense", None]),
            "visits": rng.choice([0, 3, 4.5, None]),
        }
        facts = rng.choice([facts, [facts, facts], None, "flat"])
        outcomes = []
        for n in (node, one_by_one, failed):
            trace = TraceEntry("t", "table")
            try:
                outcomes.append((n.evaluate({"guest": {"facts": facts}}, trace), trace.matched))
            except EvaluationError as exc:
                outcomes.append((type(exc), str(exc)))
        assert outcomes[0] == outcomes[1] == outcomes[2], f"seed {seed}, facts {facts}"
        errors += outcomes[0][0] is EvaluationError
    assert 0 < errors < 400
