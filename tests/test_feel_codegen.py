"""The generated Python (engine.feel.codegen) must give exactly what the closures give, corner by corner."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest

from engine.feel import compile_expression
from engine.feel.builtins import BUILTINS
from engine.feel.codegen import generate
from engine.feel.compiler import compile_node
from engine.feel.parser import parse_expression


class Record(Mapping[str, Any]):
    """A context that is not a dict: items of this kind take the generic (isinstance) paths."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


NAMES = frozenset({"guest", "context", "xs", "n", "total", "tier", "s", "item"})
SCOPES: list[dict[str, Any]] = [
    {},
    {
        "guest": {"orders": [{"total": 200.5, "at": "2026-01-01"}, {"total": 3, "at": "2026-07-01"}, None]},
        "xs": [1, 2.5, Decimal("3"), "a", None, True, {"total": 7, "item": "shadow"}, Record(total=151, n=2)],
        "n": 2,
        "total": 1000,
        "tier": {"rank": Decimal(3), "name": "gold"},
        "context": {"channel": "WEB", "price": 80.0},
        "s": "abc",
    },
    {"guest": {"orders": "not a list"}, "xs": 5, "n": Decimal("Infinity"), "total": None, "tier": Record(rank=1)},
    {"guest": None, "xs": [[1, 2], [3]], "n": -1, "tier": 3, "context": {"channel": None, "price": 0.1}},
    {"guest": {"orders": [{"total": 0.1}, {"total": 150}, {"total": 150.0}, {"total": "150"}]}, "n": 0.5},
    # floats next to the constants they are compared with, and the ones FEEL has no number for
    *(
        {"context": {"price": p}, "n": p}
        for p in (0.1 + 0.2, 0.3, 150.0, 150.00000000000003, -0.0, float("inf"), float("nan"))
    ),
]
EXPRESSIONS = [
    "guest.orders[total > 150]",
    "count(guest.orders[total > 150])",
    "sum(guest.orders.total)",
    'max(guest.orders.at) < "2026-06-01"',
    "xs[item > 1]",
    "xs[total > 5]",  # the item's field shadows the outer name; items without it read the outer total
    'xs[item = "shadow"]',  # `item` is the item even when it has a field named item
    "xs[n = 2]",
    "xs[true]",
    "xs[false]",
    "xs[item = null]",
    "xs[n]",
    "xs[-1]",
    "xs[1]",
    "xs[2].total",
    "xs[-2]",
    "xs[3]",
    "xs[0]",
    "xs[1.5]",
    'xs["1"]',
    "[1, 2, 3][-3]",
    "guest.orders[1].total",
    "xs[n + 1]",
    "[1, 2, 3][n]",
    "xs[item[item > 1] != null]",
    "xs[count(item[item > 0]) > 1]",
    "guest.orders[item.total between 1 and 200]",
    "guest.orders[total in [3, 200.5]]",
    "guest.orders[total in (1..200]]",
    "sum(xs[n])",
    "count(xs[n])",
    "{a: n, b: a + 1, c: xs[item = b], a: a * 10, d: a}",
    "{a: 1, f: xs[a = 1]}",
    "{total: 1, f: xs[total > 5]}",
    'if tier.rank >= 3 then "hi" else "lo"',
    "if n > 1 then xs else []",
    'tier.rank <= 3 and context.channel = "WEB"',
    'tier.rank > 3 or context.channel != "WEB"',
    "n and true",
    "true and n",
    "false or n",
    "n or false",
    "null and n > 1",
    "3 <= tier.rank",
    '"gold" = tier.name',
    'tier.name < "h"',
    "context.price > 0.1",
    "context.price = 0.1",
    "context.price = 0.3",
    "context.price != 0.3",
    "context.price < 0.3",
    "0.3 >= context.price",
    "context.price <= 150",
    "150 < context.price",
    "n > 0",
    "n >= 2",
    "n != 2",
    "-n",
    "n ** 2",
    "n / 0",
    's + "x"',
    "upper case(s)",
    "substring(s, n)",
    "string length(xs)",
    "not(n > 1)",
    "n in (1..3)",
    "n in [1, 2]",
    '[n, n + 1, "x"]',
    "[1, 2, 3]",
    "{x: [1, 2]}.x",
    "tier.rank.year",
    "guest.orders.total",
    "xs.total",
    'date("2026-01-02").month + n',
    # a path read more than once is read once per evaluation, whichever read runs first
    "{a: count(guest.orders), b: guest.orders[total > 1], c: sum(guest.orders.total)}",
    "if n > 1 then tier.rank else tier.rank + 1",
    "if n > 1 then 0 else tier.rank + tier.rank",
    "{a: guest.orders, guest: {orders: 5}, b: guest.orders, c: xs[guest.orders = 5]}",  # shadowed roots
    "xs[tier.rank = 3] = xs[tier.rank = 3]",
    "guest.orders.total.year",
    # an aggregate or comparison met more than once is computed once per evaluation, where its names read the scope
    "{spent: sum(guest.orders.total), big: count(guest.orders[total > 150]), last: if count(guest.orders) > 0 then "
    'max(guest.orders.at) else null, dormant: count(guest.orders) > 0 and max(guest.orders.at) < "2026-06-01"}',
    "{a: count(xs) > 0, b: if count(xs) > 0 then max(xs) else null, c: count(xs) > 0 and max(xs) > 1}",
    "{a: count(xs), xs: [1, 2, 3], b: count(xs), c: count(xs) > 2, d: min(xs) = min(xs)}",  # shadowed after a
    "{total: 1, a: count(xs[total > 0]), b: count(xs[total > 0])}",
    "[max(xs[n]), max(xs[n]), sum(xs[n]) > 1, sum(xs[n]) > 1, mean(xs) = mean(xs)]",  # failing arguments
    "xs[count(item[item > 0]) > 1] = xs[count(item[item > 0]) > 1]",
    "if n > 1 then max(guest.orders.total) else max(guest.orders.total) + n",
]


def _closure(tree: Any, text: str, scope: dict[str, Any]) -> Any:
    try:
        return compile_node(tree, text).fn(scope)
    except Exception:
        return None


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_generated_code_agrees_with_the_closures(text: str) -> None:
    tree = parse_expression(text, NAMES)
    fn = generate(tree, text)
    assert fn is not None
    for i, scope in enumerate(SCOPES):
        assert repr(fn(scope)) == repr(_closure(tree, text, scope)), f"scope {i}"


def test_filter_items_are_not_copied() -> None:
    items = [{"total": 200}, {"total": 1}]
    out = compile_expression("xs[total > 100]", names={"xs"})({"xs": items})
    assert out == [items[0]] and out[0] is items[0]


def test_constant_lists_are_fresh_per_evaluation() -> None:
    expr = compile_expression("if n > 0 then [1, 2] else []", names={"n"})
    first = expr({"n": 1})
    first.append(3)
    assert expr({"n": 1}) == [Decimal(1), Decimal(2)]


def test_a_failing_builtin_argument_is_null_for_that_call_only() -> None:
    # as_int(Infinity) raises inside the index; the call's guard makes count(...) null, the rest survives.
    expr = compile_expression("{a: count(xs[n]), b: 1}", names={"xs", "n"})
    assert expr({"xs": [1], "n": Decimal("Infinity")}) == {"a": None, "b": Decimal(1)}


def test_impure_calls_are_not_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setitem(BUILTINS, "now", (lambda: calls.append(1) or Decimal(len(calls)), 0, 0))
    fn = generate(parse_expression("[now() > 1, now() > 1, max(now()), max(now())]", NAMES), "t")
    assert fn is not None and fn({}) == [False, True, Decimal(3), Decimal(4)] and len(calls) == 4


def test_a_shared_aggregate_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = BUILTINS["max"]
    monkeypatch.setitem(BUILTINS, "max", (lambda *a: calls.append(a) or real[0](*a), *real[1:]))
    fn = generate(parse_expression("if max(xs) > 1 then max(xs) else [max(xs), max(xs) > 1]", NAMES), "t")
    assert fn is not None and fn({"xs": [1, 2]}) == 2 and fn({"xs": [0]}) == [0, False] and len(calls) == 2
