"""FEEL expressions and unary tests, pinned as data: (source, scope, expected)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from engine.errors import FeelError
from engine.feel import coerce, compile_expression, compile_unary_tests, to_feel, to_json
from engine.feel.values import YearsMonthsDuration

NAMES = {"Applicant Age", "Monthly Salary", "Full Name", "guest", "structA", "Another Date and Time"}

# (expression, scope, expected FEEL value). Decimal results compare exactly.
EXPRESSIONS: list[tuple[str, dict[str, Any], Any]] = [
    # literals
    ("42", {}, Decimal(42)),
    (".872", {}, Decimal("0.872")),
    ("-125.4321987654", {}, Decimal("-125.4321987654")),
    ('"foo bar"', {}, "foo bar"),
    ('"say \\"hi\\"\\n"', {}, 'say "hi"\n'),
    ('"\\u6a2a"', {}, "横"),
    ("true", {}, True),
    ("null", {}, None),
    # decimal arithmetic
    ("0.1 + 0.2", {}, Decimal("0.3")),
    ("x + y", {"x": 0.1, "y": 0.2}, Decimal("0.3")),
    ("x * 3", {"x": 1.1}, Decimal("3.3")),
    ("10 + 20 / -5 - 3", {}, Decimal(3)),
    ("(10+20)/(-5*3)", {}, Decimal(-2)),
    ("-10--5", {}, Decimal(-5)),
    ("10**-5", {}, Decimal("0.00001")),
    ("5+2**5+3", {}, Decimal(40)),
    ("1.2*10**3", {}, Decimal(1200)),
    ("1/3", {}, Decimal("0.3333333333333333333333333333333333")),
    ("(10+20)/0", {}, None),
    ("10 + null", {}, None),
    ("-x", {"x": 5}, Decimal(-5)),
    ("12 * Monthly Salary", {"Monthly Salary": 10000}, Decimal(120000)),
    # strings
    ('"Hello " + Full Name', {"Full Name": "John Doe"}, "Hello John Doe"),
    ('"a" + 1', {}, None),
    # names and paths
    ("Applicant Age", {"Applicant Age": 30}, 30),
    ("guest.attributes.tier", {"guest": {"attributes": {"tier": "gold"}}}, "gold"),
    ("guest.attributes.tier", {"guest": {"attributes": None}}, None),
    ("guest.missing.deeper", {"guest": {}}, None),
    ("unknown", {}, None),
    ("structA.price > 10", {"structA": {"price": 20}}, True),
    ("Applicant.member since < x", {"Applicant": {"member since": 1}, "x": 2}, True),
    ('date("2018-07-30").year', {}, Decimal(2018)),
    # comparisons, including mixed number types and mismatched kinds
    ("x = 1", {"x": 1.0}, True),
    ("x = 1", {"x": Decimal("1.00")}, True),
    ('x = "1"', {"x": 1}, None),
    ("x = null", {"x": None}, True),
    ("x != null", {"x": 3}, True),
    ('"a" < "b"', {}, True),
    ('1 < "b"', {}, None),
    ("x >= 18", {"x": 18}, True),
    # three-valued logic
    ("a and b", {"a": True, "b": None}, None),
    ("a and b", {"a": False, "b": None}, False),
    ("a or b", {"a": True, "b": None}, True),
    ("a or b", {"a": False, "b": None}, None),
    ("a or b", {"a": False, "b": False}, False),
    ("a and b", {"a": True, "b": "yes"}, None),
    ("not(a)", {"a": True}, False),
    ("not(a)", {"a": None}, None),
    ("not(a)", {"a": 1}, None),
    # if, in, between
    ('if x > 1 then "big" else "small"', {"x": 5}, "big"),
    ('if x > 1 then "big" else "small"', {"x": None}, "small"),
    ("x in (1..10]", {"x": 10}, True),
    ("x in (1..10]", {"x": 1}, False),
    ("x in (<5, >8)", {"x": 9}, True),
    ('x in ("a", "b")', {"x": "b"}, True),
    ("x in [1, 2, 3]", {"x": 2}, True),
    ("x in <= 10", {"x": 11}, False),
    ("x between 1 and 10", {"x": 10}, True),
    ("x between 1 and 10", {"x": 11}, False),
    ('"c" between "b" and "d"', {}, True),
    # lists and contexts
    ("[1, x, 3]", {"x": 2}, [Decimal(1), 2, Decimal(3)]),
    ("[1, 2, 3][1]", {}, Decimal(1)),
    ("[1, 2, 3][-1]", {}, Decimal(3)),
    ("[1, 2, 3][4]", {}, None),
    ("[1, 2, 3, 4][item > 2]", {}, [Decimal(3), Decimal(4)]),
    ("orders[amount > 10].id", {"orders": [{"id": "a", "amount": 5}, {"id": "b", "amount": 50}]}, ["b"]),
    ('{a: 1, "b c": a + 1}', {}, {"a": Decimal(1), "b c": Decimal(2)}),
    ("{total: x}.total", {"x": 7}, 7),
    # dates, times, durations
    ('date("2020-01-01") < date("2020-01-02")', {}, True),
    ('date("2020-01-31") + duration("P1M")', {}, date(2020, 2, 29)),
    ('date("2020-03-01") - date("2020-02-01")', {}, timedelta(days=29)),
    ('date and time("2018-12-08T10:30:00Z") + duration("PT1H")', {}, datetime(2018, 12, 8, 11, 30, tzinfo=UTC)),
    ('time("23:00:00") + duration("PT2H")', {}, time(1, 0)),
    ('duration("P1D") > duration("PT23H")', {}, True),
    ('duration("P1Y") = duration("P12M")', {}, True),
    ('duration("P1Y") + duration("P2M")', {}, YearsMonthsDuration(14)),
    ('duration("PT1H") * 2', {}, timedelta(hours=2)),
    ('years and months duration(date("2011-12-22"), date("2013-08-24"))', {}, YearsMonthsDuration(20)),
    ('Another Date and Time > @"2018-01-01T00:00:00"', {"Another Date and Time": datetime(2019, 1, 1)}, True),
    ('date("2020-13-01")', {}, None),
    ('date("2020-01-01") < 5', {}, None),
    # built-ins
    ('substring("foobar", 3)', {}, "obar"),
    ('substring("foobar", -2, 1)', {}, "a"),
    ('string length("abc")', {}, Decimal(3)),
    ('upper case("abc") + lower case("DEF")', {}, "ABCdef"),
    ('contains("foobar", "oba") and starts with("foo", "f") and ends with("foo", "oo")', {}, True),
    ("count([1, 2, 3])", {}, Decimal(3)),
    ("min([3, 1, 2]) + max(3, 1, 2)", {}, Decimal(4)),
    ("sum([1, 2, 3.5])", {}, Decimal("6.5")),
    ("mean([1, 2, 3])", {}, Decimal(2)),
    ("sum([])", {}, None),
    ("abs(-2) + floor(1.5) + ceiling(1.5)", {}, Decimal(5)),
    ("decimal(1/3, 2)", {}, Decimal("0.33")),
    ("round half up(2.5, 0)", {}, Decimal(3)),
    ('number("1,000.5", ",", ".")', {}, Decimal("1000.5")),
    ("string(1.50)", {}, "1.50"),
    ('string(date("2020-01-02"))', {}, "2020-01-02"),
    ('flatten([["w", "x"], "y"])', {}, ["w", "x", "y"]),
    ("substring(5, 1)", {}, None),
    # aggregates over JSON data, as guests bring it (floats, ints, ISO date strings): each kind's fast path
    ("sum(guest.orders.total)", {"guest": {"orders": [{"total": 0.1}, {"total": 0.2}]}}, Decimal("0.3")),
    ("sum(guest.xs)", {"guest": {"xs": [0.1, 2, Decimal("0.3")]}}, Decimal("2.4")),
    ("sum(guest.xs)", {"guest": {"xs": [1e308, 1e308]}}, Decimal("2E+308")),
    ("sum(guest.xs)", {"guest": {"xs": [1.5, float("inf")]}}, None),
    ("sum(guest.xs)", {"guest": {"xs": [float("nan")]}}, None),
    ("sum(guest.xs)", {"guest": {"xs": [1.5, True]}}, None),
    ("sum(guest.xs)", {"guest": {"xs": [1.5, "2"]}}, None),
    ("sum(guest.xs)", {"guest": {"xs": [3, 12, -29, 7]}}, Decimal(-7)),
    ("sum(guest.xs)", {"guest": {"xs": [3, True]}}, None),
    # Past 34 digits DECIMAL rounds each partial sum, as adding one by one does: 10**40 + 1 loses the 1.
    ("sum(guest.xs)", {"guest": {"xs": [10**40, 1, -(10**40)]}}, Decimal("0E+7")),
    ("sum(guest.xs)", {"guest": {"xs": [10**33, 10**33, 1]}}, Decimal(2 * 10**33 + 1)),
    ("max(guest.xs)", {"guest": {"xs": ["2026-01-02", "2026-03-01", "2025-12-31"]}}, "2026-03-01"),
    ("min(guest.xs)", {"guest": {"xs": ["b", "a", "c"]}}, "a"),
    ("max(guest.xs)", {"guest": {"xs": [2, Decimal("2.5"), 1]}}, Decimal("2.5")),
    ("max(guest.xs)", {"guest": {"xs": [1, 2.5]}}, 2.5),  # the item itself, as before the fast paths
    ("max(guest.xs)", {"guest": {"xs": ["a", 1]}}, None),
    ("min(guest.xs)", {"guest": {"xs": [True, False]}}, None),
]


@pytest.mark.parametrize(("source", "scope", "expected"), EXPRESSIONS, ids=[c[0] for c in EXPRESSIONS])
def test_expression(source: str, scope: dict[str, Any], expected: Any) -> None:
    result = compile_expression(source, names=NAMES)(scope)
    assert result == expected
    assert type(result) is type(expected) or isinstance(expected, int)


# (unary tests, input value, scope, matches?)
UNARY: list[tuple[str, Any, dict[str, Any], bool]] = [
    ("-", None, {}, True),
    ("-", "anything", {}, True),
    ("< 18", 17, {}, True),
    ("< 18", 18, {}, False),
    ("< 18", 17.5, {}, True),
    ("< 18", Decimal("17.99"), {}, True),
    ("< 18", "17", {}, False),
    ("< 18", None, {}, False),
    ("< 18", True, {}, False),
    (">= 18", 18, {}, True),
    ("<=10", 10.0, {}, True),
    ("> 0.1", 0.1, {}, False),
    ("[1..10]", 1, {}, True),
    ("[1..10]", 10, {}, True),
    ("(1..10]", 1, {}, False),
    ("]1..10[", 10, {}, False),
    ("]1..10[", 5.5, {}, True),
    ("[1..10)", 10, {}, False),
    ("[numB..numC]", 9.5, {"numB": 9, "numC": 10}, True),
    ("[numB..numC]", 20, {"numB": 9, "numC": 10}, False),
    ('["b".."d"]', "c", {}, True),
    ('"gold"', "gold", {}, True),
    ('"gold"', "silver", {}, False),
    ('"a","b"', "b", {}, True),
    ('"a","b"', "c", {}, False),
    ('not("a","b")', "c", {}, True),
    ('not("a","b")', "a", {}, False),
    ("not(< 5)", 7, {}, True),
    ("not(< 5)", None, {}, False),  # not(null) is null: no match
    ('not("a")', None, {}, True),  # null = "a" is false, so not(...) is true
    ("not([1..10])", "x", {}, False),
    ("= [1, 2]", [1, 2], {}, True),  # `=` compares whole lists…
    ("= [1, 2]", 1, {}, False),
    ("[1, 2]", 1, {}, True),  # …a bare list is membership
    ("10", Decimal("10.0"), {}, True),
    ("10", 10.0, {}, True),
    ("true", True, {}, True),
    ("true", 1, {}, False),
    ("null", None, {}, True),
    ("null", 0, {}, False),
    ("< 5, > 10", 11, {}, True),
    ("< 5, > 10", 7, {}, False),
    ('>= date("2020-01-01")', date(2020, 1, 1), {}, True),
    ('>= date("2020-01-01")', date(2019, 12, 31), {}, False),
    ('>= date("2020-01-01")', "2020-01-01", {}, False),
    ('[date("2020-01-01")..date("2020-12-31")]', date(2020, 6, 1), {}, True),
    ("> Complex.aNumber", 15, {"Complex": {"aNumber": 10}}, True),
    ("Complex.aBoolean", False, {"Complex": {"aBoolean": True}}, False),
    ("not(Complex.aBoolean)", False, {"Complex": {"aBoolean": True}}, True),
    ("Another Date and Time", datetime(2019, 1, 1), {"Another Date and Time": datetime(2019, 1, 1)}, True),
    ("? > 5", 6, {}, True),
    ("? > 5", 4, {}, False),
    ('starts with(?, "ab")', "abc", {}, True),
    ("[1, 2, 3]", 2, {}, True),
    ("limit", 3, {"limit": [1, 2, 3]}, True),
    ('> duration("PT1H")', timedelta(hours=2), {}, True),
    ('< time("10:30:05")', time(10, 30, 4), {}, True),
]


@pytest.mark.parametrize(("source", "value", "scope", "expected"), UNARY, ids=[f"{c[0]} ? {c[1]!r}" for c in UNARY])
def test_unary_tests(source: str, value: Any, scope: dict[str, Any], expected: bool) -> None:
    assert compile_unary_tests(source, names=NAMES).matches(value, scope) is expected


def test_unary_test_shape() -> None:
    assert compile_unary_tests("-").is_wildcard
    assert not compile_unary_tests("< 5").is_wildcard
    assert compile_unary_tests('"a", "b"').literals == ("a", "b")
    assert compile_unary_tests("< 5").literals is None
    assert compile_unary_tests("[numB..numC]").references == {"numB", "numC"}


def test_expression_shape() -> None:
    expr = compile_expression("Applicant Age + guest.age * 2", names=NAMES)
    assert expr.source == "Applicant Age + guest.age * 2"
    assert expr.references == {"Applicant Age", "guest"}
    folded = compile_expression('1 + 2 * 3 + string length("ab")')
    assert folded.is_constant and folded.value == Decimal(9)
    assert compile_expression("[x][item > 1]").references == {"x"}


def test_multi_word_names_take_the_longest_match() -> None:
    names = {"Age", "Age Limit"}
    assert compile_expression("Age Limit - Age", names=names)({"Age": 30, "Age Limit": 65}) == 35


def test_scope_values_never_raise() -> None:
    expr = compile_expression("a / b + c.d[1] * e")
    for scope in ({"a": 1, "b": 0}, {"a": "x", "b": [1]}, {"c": 5, "e": object()}, {}):
        assert expr(scope) is None


# (source, position of the fault)
SYNTAX_ERRORS: list[tuple[str, int]] = [
    ("1 +", 3),
    ("(1 + 2", 6),
    ('"unterminated', 0),
    ("a $ b", 2),
    ("if x then 1", 11),
    ("1 2", 2),
    ("", 0),
    ("foo(1)", 0),
    ('substring("a")', 0),
]


@pytest.mark.parametrize(("source", "position"), SYNTAX_ERRORS, ids=[c[0] or "<empty>" for c in SYNTAX_ERRORS])
def test_syntax_errors_carry_positions(source: str, position: int) -> None:
    with pytest.raises(FeelError) as info:
        compile_expression(source)
    assert info.value.position == position
    assert info.value.source == source
    assert info.value.detail


@pytest.mark.parametrize(("source", "position"), [("[1..", 4), ("< ", 2), ("]1..2", 5), ("", 0), ('"a",', 4)])
def test_unary_syntax_errors(source: str, position: int) -> None:
    with pytest.raises(FeelError) as info:
        compile_unary_tests(source)
    assert info.value.position == position


def test_json_round_trip() -> None:
    value = to_feel({"n": 1.5, "items": [1, 2], "s": "x", "b": True, "nothing": None})
    assert value == {"n": Decimal("1.5"), "items": [Decimal(1), Decimal(2)], "s": "x", "b": True, "nothing": None}
    assert to_json(value) == {"n": 1.5, "items": [1, 2], "s": "x", "b": True, "nothing": None}
    assert to_json([time(12, 0, tzinfo=UTC), time(10, 30, tzinfo=timezone(timedelta(hours=2)))]) == [
        "12:00:00Z",
        "10:30:00+02:00",
    ]
    assert to_json([timedelta(days=1, hours=2), timedelta(0), -timedelta(minutes=90), YearsMonthsDuration(14)]) == [
        "P1DT2H",
        "PT0S",
        "-PT1H30M",
        "P1Y2M",
    ]
    assert to_json(datetime(2020, 1, 2, 3, 4, 5)) == "2020-01-02T03:04:05"


COERCIONS: list[tuple[Any, str, Any]] = [
    (18, "number", Decimal(18)),
    (0.1, "number", Decimal("0.1")),
    ("12.5", "number", Decimal("12.5")),
    ("abc", "number", None),
    ("x", "string", "x"),
    (5, "string", None),
    ("true", "boolean", True),
    ("2020-01-02", "date", date(2020, 1, 2)),
    ("10:30:00+02:00", "time", time(10, 30, tzinfo=timezone(timedelta(hours=2)))),
    ("2020-01-02T03:04:05Z", "dateTime", datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2020-01-02T03:04:05", "date and time", datetime(2020, 1, 2, 3, 4, 5)),
    ("P1DT2H", "dayTimeDuration", timedelta(days=1, hours=2)),
    ("P1Y2M", "years and months duration", YearsMonthsDuration(14)),
    ("P1Y2M", "days and time duration", None),
    ({"a": 1}, "context", {"a": Decimal(1)}),
    ([1, "x"], "list", [Decimal(1), "x"]),
    ({"a": [1.5]}, "Any", {"a": [Decimal("1.5")]}),
    ({"a": 1}, "tCustom", {"a": Decimal(1)}),
    (None, "number", None),
]


@pytest.mark.parametrize(("value", "type_name", "expected"), COERCIONS, ids=[f"{c[1]}:{c[0]!r}" for c in COERCIONS])
def test_coerce(value: Any, type_name: str, expected: Any) -> None:
    assert coerce(value, type_name) == expected
