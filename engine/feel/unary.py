"""Unary tests (decision-table input entries) compiled to ``test(value, scope) -> bool``.

These run once per rule per cell on the request path, so the common shapes — a comparison or a range
against constants, a list of literals — get closures specialised on the constant's type; the general
shapes fall back to :mod:`engine.feel.ops`. A FEEL null result counts as "no match".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.feel import ops
from engine.feel import syntax as s
from engine.feel.compiler import Bound, Code, Scope, TestFn, _compile, reads_input
from engine.feel.values import number


@dataclass(frozen=True, slots=True)
class UnaryTests:
    """A compiled list of unary tests.

    For the indexes of decision tables: ``literals`` lists the values of a test made only of equalities
    (``"a","b"``), ``interval`` is the one numeric interval a constant comparison or range accepts.
    """

    source: str
    references: frozenset[str]
    is_wildcard: bool
    test: TestFn = field(repr=False, compare=False)
    literals: tuple[Any, ...] | None = None
    interval: Interval | None = None

    def matches(self, value: Any, scope: Scope) -> bool:
        try:
            return self.test(value, scope)
        except Exception:  # a FEEL evaluation never raises; a failing test just does not match
            return False


Interval = tuple[Decimal | None, bool, Decimal | None, bool]
"""(low, low closed, high, high closed); None is unbounded."""


def literal_key(v: Any) -> Any:
    """A hashable key under which equal FEEL values meet: 1, 1.0 and Decimal('1.00') share one; True does not."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return (bool, v)  # True == 1 in Python; FEEL keeps booleans apart from numbers
    n = number(v)
    if n is not None:
        return n
    return (t, v) if t.__hash__ is not None else None


def _always(_v: Any, _s: Scope) -> bool:
    return True


def _numeric_compare(op: str, k: Decimal) -> TestFn:
    """``< 18`` and friends against a number: the hot case, kept to a type check and one comparison."""
    num = number
    if op == "<":

        def lt(v: Any, _s: Scope) -> bool:
            t = type(v)
            return (v < k) if (t is Decimal or t is int) else (t is float and num(v) < k)  # type: ignore[operator]

        return lt
    if op == "<=":

        def le(v: Any, _s: Scope) -> bool:
            t = type(v)
            return (v <= k) if (t is Decimal or t is int) else (t is float and num(v) <= k)  # type: ignore[operator]

        return le
    if op == ">":

        def gt(v: Any, _s: Scope) -> bool:
            t = type(v)
            return (v > k) if (t is Decimal or t is int) else (t is float and num(v) > k)  # type: ignore[operator]

        return gt

    def ge(v: Any, _s: Scope) -> bool:
        t = type(v)
        return (v >= k) if (t is Decimal or t is int) else (t is float and num(v) >= k)  # type: ignore[operator]

    return ge


def _equals_constant(k: Any) -> TestFn:
    if k is None:
        return lambda v, _s: v is None
    t = type(k)
    if t is str:
        return lambda v, _s: type(v) is str and v == k
    if t is bool:
        return lambda v, _s: v is k
    if t is Decimal:

        def eq_num(v: Any, _s: Scope) -> bool:
            tv = type(v)
            return (v == k) if (tv is Decimal or tv is int) else (tv is float and number(v) == k)

        return eq_num
    if isinstance(k, list):  # `"a" in ["a", "b"]`: membership
        return lambda v, _s: any(ops.equal(v, x) is True for x in k)
    return lambda v, _s: ops.equal(v, k) is True


def _compare_test(op: str, operand: Code) -> TestFn:
    if op == "=":
        if operand.constant and not isinstance(operand.value, list):  # `= [1, 2]` is equality, not membership
            return _equals_constant(operand.value)
        f = operand.fn
        return lambda v, sc: ops.equal(v, f(sc)) is True
    if op == "!=":
        if operand.constant:
            k = operand.value
            return lambda v, _s: ops.equal(v, k) is False
        f = operand.fn
        return lambda v, sc: ops.equal(v, f(sc)) is False
    check = ops.ORDER_CHECKS[op]
    if operand.constant and type(operand.value) is Decimal:
        return _numeric_compare(op, operand.value)
    if operand.constant:
        k = operand.value

        def against_constant(v: Any, _s: Scope) -> bool:
            c = ops.compare(v, k)
            return c is not None and check(c)

        return against_constant
    f = operand.fn

    def against_value(v: Any, sc: Scope) -> bool:
        c = ops.compare(v, f(sc))
        return c is not None and check(c)

    return against_value


def _range_test(test: s.RangeTest, text: str) -> TestFn:
    lo, hi = _compile(test.low, text), _compile(test.high, text)
    low_ok: Callable[[int], bool] = (lambda c: c >= 0) if test.low_closed else (lambda c: c > 0)
    high_ok: Callable[[int], bool] = (lambda c: c <= 0) if test.high_closed else (lambda c: c < 0)
    if lo.constant and hi.constant and type(lo.value) is Decimal and type(hi.value) is Decimal:
        a, b, lc, hc = lo.value, hi.value, test.low_closed, test.high_closed

        def in_numbers(v: Any, _s: Scope) -> bool:
            t = type(v)
            if t is float:
                v = number(v)
            elif t is not Decimal and t is not int:
                return False
            return bool((a <= v if lc else a < v) and (v <= b if hc else v < b))

        return in_numbers

    def in_range(v: Any, sc: Scope) -> bool:
        c1 = ops.compare(v, lo.fn(sc))
        if c1 is None or not low_ok(c1):
            return False
        c2 = ops.compare(v, hi.fn(sc))
        return c2 is not None and high_ok(c2)

    return in_range


def _expr_test(expr: s.Expr, text: str) -> TestFn:
    code = _compile(expr, text)
    if reads_input(expr):  # `? > 5`, `starts with(?, "A")`: a boolean about the input
        f = code.fn
        return lambda v, sc: f(Bound({"?": v}, sc)) is True
    if code.constant:
        return _equals_constant(code.value)
    g = code.fn

    def equals_value(v: Any, sc: Scope) -> bool:
        x = g(sc)
        if isinstance(x, list):
            return any(ops.equal(v, i) is True for i in x)
        return ops.equal(v, x) is True

    return equals_value


def _one(test: s.Test, text: str) -> TestFn:
    match test:
        case s.AnyTest():
            return _always
        case s.CompareTest(op, operand):
            return _compare_test(op, _compile(operand, text))
        case s.RangeTest():
            return _range_test(test, text)
        case s.ExprTest(expr):
            return _expr_test(expr, text)
        case s.NotTest(tests):
            # not(null) is null: `not(< 5)` does not match a null input, while `not("a")` does (null = "a"
            # is false, not null). So the negated tests are evaluated three-valued.
            inner = compile_tests_3vl(tests, text)
            return lambda v, sc: inner(v, sc) is False
    raise TypeError(test)


TestFn3 = Callable[[Any, Scope], "bool | None"]


def _one_3vl(test: s.Test, text: str) -> TestFn3:
    """A positive unary test as FEEL's ``?`` in test: true, false or null (incomparable values)."""
    match test:
        case s.AnyTest():
            return lambda _v, _s: True
        case s.CompareTest(op, operand):
            f = _compile(operand, text).fn
            if op in ("=", "!="):
                negate = op == "!="

                def equality(v: Any, sc: Scope) -> bool | None:
                    e = ops.equal(v, f(sc))
                    return None if e is None else e != negate

                return equality
            cmp = ops.ordered(op)
            return lambda v, sc: cmp(v, f(sc))
        case s.RangeTest(low, high, low_closed, high_closed):
            lo, hi = _compile(low, text).fn, _compile(high, text).fn
            above, below = ops.ordered(">=" if low_closed else ">"), ops.ordered("<=" if high_closed else "<")

            def in_range(v: Any, sc: Scope) -> bool | None:
                a, b = above(v, lo(sc)), below(v, hi(sc))
                return False if a is False or b is False else (None if a is None or b is None else True)

            return in_range
        case s.ExprTest(expr):
            g = _compile(expr, text).fn
            if reads_input(expr):
                return lambda v, sc: g(Bound({"?": v}, sc))

            def equals(v: Any, sc: Scope) -> bool | None:
                x = g(sc)
                if isinstance(x, list):  # membership, as `list contains`: not found is false, never null
                    return any(ops.equal(v, i) is True for i in x)
                return ops.equal(v, x)

            return equals
    raise TypeError(test)


def _disjunction(results: Iterable[Any]) -> bool | None:
    unknown = False
    for r in results:
        if r is True:
            return True
        unknown = unknown or r is not False
    return None if unknown else False


def compile_tests_3vl(tests: tuple[s.Test, ...], text: str) -> TestFn3:
    """The tests of a ``not(...)``, as a three-valued disjunction."""
    fns = tuple(_one_3vl(t, text) for t in tests)
    if len(fns) == 1:
        return fns[0]
    return lambda v, sc: _disjunction(f(v, sc) for f in fns)


def compile_tests(tests: tuple[s.Test, ...], text: str) -> TestFn:
    """OR of the positive tests (the comma in ``"a","b"``)."""
    fns = [_one(t, text) for t in tests]
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        f1, f2 = fns
        return lambda v, sc: f1(v, sc) or f2(v, sc)
    all_fns = tuple(fns)
    return lambda v, sc: any(f(v, sc) for f in all_fns)


def equality_literals(tests: tuple[s.Test, ...], text: str) -> tuple[Any, ...] | None:
    """The constants of a test that is only equalities (``"a","b"``, ``10``), else None."""
    out: list[Any] = []
    for t in tests:
        if isinstance(t, s.ExprTest):
            expr = t.expr
        elif isinstance(t, s.CompareTest) and t.op == "=":
            expr = t.operand
        else:
            return None
        if reads_input(expr):
            return None
        code = _compile(expr, text)
        if not code.constant or isinstance(code.value, (list, dict)) or literal_key(code.value) is None:
            return None
        out.append(code.value)
    return tuple(out)


def numeric_interval(tests: tuple[s.Test, ...], text: str) -> Interval | None:
    """The interval of a single comparison, range or number literal with constant numeric ends, else None."""
    if len(tests) != 1:
        return None
    t = tests[0]
    if isinstance(t, s.RangeTest):
        lo, hi = _compile(t.low, text), _compile(t.high, text)
        if lo.constant and hi.constant and type(lo.value) is Decimal and type(hi.value) is Decimal:
            return (lo.value, t.low_closed, hi.value, t.high_closed)
        return None
    if isinstance(t, s.CompareTest):
        op, expr = t.op, t.operand
    elif isinstance(t, s.ExprTest):
        op, expr = "=", t.expr
    else:
        return None
    if reads_input(expr):
        return None
    code = _compile(expr, text)
    if not code.constant or type(code.value) is not Decimal:
        return None
    k = code.value
    return {
        "<": (None, False, k, False),
        "<=": (None, False, k, True),
        ">": (k, False, None, False),
        ">=": (k, True, None, False),
        "=": (k, True, k, True),
    }.get(op)
