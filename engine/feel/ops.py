"""FEEL operator semantics: equality, ordering and arithmetic over :mod:`engine.feel.values`.

Every function here is total: a type mismatch or an arithmetic fault (1/0, overflow) yields ``None``,
FEEL's null, never a Python exception. Numbers may arrive as int/float/Decimal in any mix.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from engine.feel.values import DECIMAL, YearsMonthsDuration, number

# Families of values that FEEL can compare with each other. Keyed by exact type because bool is an int
# subclass and datetime a date subclass, and both must stay apart from their bases.
NUM, STR, BOOL, DATE, DATETIME, TIME, DT_DUR, YM_DUR, LIST, CONTEXT = range(10)
_FAMILY: dict[type, int] = {
    Decimal: NUM,
    int: NUM,
    float: NUM,
    str: STR,
    bool: BOOL,
    date: DATE,
    datetime: DATETIME,
    time: TIME,
    timedelta: DT_DUR,
    YearsMonthsDuration: YM_DUR,
    list: LIST,
    tuple: LIST,
    dict: CONTEXT,
}
_ORDERED = frozenset({NUM, STR, DATE, DATETIME, TIME, DT_DUR, YM_DUR})
# Fast paths for the common case (model literals are Decimal, JSON data int or str): Python's own ``==`` and
# ``<`` already give FEEL's answer for these pairs (Decimal compares exactly with int), so the family
# lookups and Decimal conversions are skipped. float stays on the slow path: FEEL reads 0.1 as Decimal('0.1').
# Measured with the offers change on benchmarks/scenario/realistic.json: 159 → 112 µs per evaluation.
_SAME_TYPE_EQ = frozenset({str, bool, int, Decimal})
SAME_TYPE_ORDERED = frozenset({str, int, Decimal})
_EXACT_NUM = frozenset({int, Decimal})
_EPOCH = date(2000, 1, 1)
_ARITH_ERRORS = (ArithmeticError, OverflowError, ValueError, TypeError)


def family(v: Any) -> int | None:
    f = _FAMILY.get(type(v))
    if f is None and isinstance(v, Mapping):
        return CONTEXT
    return f


def equal(a: Any, b: Any) -> bool | None:
    """FEEL ``=``: null equals only null; values of different kinds are incomparable (null)."""
    ta, tb = type(a), type(b)
    if (ta is tb and ta in _SAME_TYPE_EQ) or (ta in _EXACT_NUM and tb in _EXACT_NUM):
        return bool(a == b)
    if a is None or b is None:
        return a is None and b is None
    fa, fb = family(a), family(b)
    if fa != fb or fa is None:
        return None
    if fa == NUM:
        return number(a) == number(b)
    if fa == LIST:
        if len(a) != len(b):
            return False
        return all(equal(x, y) is True for x, y in zip(a, b, strict=True))
    if fa == CONTEXT:
        if a.keys() != b.keys():
            return False
        return all(equal(a[k], b[k]) is True for k in a)
    try:
        return bool(a == b)
    except TypeError:
        return None


def compare(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 when ``a`` and ``b`` are ordered values of one kind; None otherwise."""
    ta, tb = type(a), type(b)
    if (ta is tb and ta in SAME_TYPE_ORDERED) or (ta in _EXACT_NUM and tb in _EXACT_NUM):
        return -1 if a < b else (1 if a > b else 0)
    fa = family(a)
    if fa is None or fa != family(b) or fa not in _ORDERED:
        return None
    if fa == NUM:
        a, b = number(a), number(b)
    try:
        return -1 if a < b else (1 if a > b else 0)
    except TypeError:  # naive vs zoned date-time or time
        return None


def _shift_months(d: date, months: int) -> date:
    """Calendar month arithmetic, clamping the day (Jan 31 + 1 month = Feb 28/29)."""
    total = d.year * 12 + d.month - 1 + months
    year, month = divmod(total, 12)
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return d.replace(year=year, month=month + 1, day=day)


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def _on_epoch(t: time) -> datetime:
    return datetime.combine(_EPOCH, t)


def _plus_duration(a: Any, fa: int, d: Any, fd: int) -> Any:
    """A temporal value moved by a duration (negated already for subtraction)."""
    if fd == DT_DUR:
        if fa == DATETIME:
            return a + d
        if fa == DATE:
            return (_midnight(a) + d).date()
        if fa == TIME:
            return (_on_epoch(a) + d).timetz()
        if fa == DT_DUR:
            return a + d
    elif fd == YM_DUR:
        if fa in (DATETIME, DATE):
            return _shift_months(a, d.months)
        if fa == YM_DUR:
            return YearsMonthsDuration(a.months + d.months)
    return None


def negate(a: Any) -> Any:
    f = family(a)
    if f == NUM:
        return DECIMAL.minus(number(a))  # type: ignore[arg-type]
    if f == DT_DUR:
        return -a
    if f == YM_DUR:
        return YearsMonthsDuration(-a.months)
    return None


ORDER_CHECKS: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}
"""How each ordering operator reads the sign :func:`compare` returns."""


def ordered(op: str) -> Callable[[Any, Any], bool | None]:
    """``a op b`` for ``<``, ``<=``, ``>``, ``>=``: null when the values are not comparable (FEEL)."""
    check = ORDER_CHECKS[op]

    def test(a: Any, b: Any) -> bool | None:
        c = compare(a, b)
        return None if c is None else check(c)

    return test


def add(a: Any, b: Any) -> Any:
    if type(a) is Decimal and type(b) is Decimal:
        return DECIMAL.add(a, b)
    fa, fb = family(a), family(b)
    if fa is None or fb is None:
        return None
    try:
        if fa == NUM and fb == NUM:
            return DECIMAL.add(number(a), number(b))  # type: ignore[arg-type]
        if fa == STR and fb == STR:
            return a + b
        if fb in (DT_DUR, YM_DUR):
            return _plus_duration(a, fa, b, fb)
        if fa in (DT_DUR, YM_DUR):
            return _plus_duration(b, fb, a, fa)
    except _ARITH_ERRORS:
        pass
    return None


def subtract(a: Any, b: Any) -> Any:
    if type(a) is Decimal and type(b) is Decimal:
        return DECIMAL.subtract(a, b)
    fa, fb = family(a), family(b)
    if fa is None or fb is None:
        return None
    try:
        if fa == NUM and fb == NUM:
            return DECIMAL.subtract(number(a), number(b))  # type: ignore[arg-type]
        if fa == fb == DATETIME:
            return a - b
        if fa == fb == DATE:
            return _midnight(a) - _midnight(b)
        if fa == fb == TIME:
            return _on_epoch(a) - _on_epoch(b)
        if fb in (DT_DUR, YM_DUR):
            return _plus_duration(a, fa, negate(b), fb)
    except _ARITH_ERRORS:
        pass
    return None


def _scale_dt(td: timedelta, factor: Decimal) -> timedelta:
    micros = Decimal((td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds)
    return timedelta(microseconds=int(DECIMAL.multiply(micros, factor)))


def _scale_ym(d: YearsMonthsDuration, factor: Decimal) -> YearsMonthsDuration:
    months = DECIMAL.multiply(Decimal(d.months), factor).to_integral_value(rounding=ROUND_DOWN)
    return YearsMonthsDuration(int(months))


def multiply(a: Any, b: Any) -> Any:
    if type(a) is Decimal and type(b) is Decimal:
        return DECIMAL.multiply(a, b)
    fa, fb = family(a), family(b)
    try:
        if fa == NUM and fb == NUM:
            return DECIMAL.multiply(number(a), number(b))  # type: ignore[arg-type]
        if fa == NUM:
            a, b, fa, fb = b, a, fb, fa
        if fb == NUM:
            if fa == DT_DUR:
                return _scale_dt(a, number(b))  # type: ignore[arg-type]
            if fa == YM_DUR:
                return _scale_ym(a, number(b))  # type: ignore[arg-type]
    except _ARITH_ERRORS:
        pass
    return None


def divide(a: Any, b: Any) -> Any:
    fa, fb = family(a), family(b)
    try:
        if fa == NUM and fb == NUM:
            return DECIMAL.divide(number(a), number(b))  # type: ignore[arg-type]
        if fb == NUM:
            inverse = DECIMAL.divide(Decimal(1), number(b))  # type: ignore[arg-type]
            if fa == DT_DUR:
                return _scale_dt(a, inverse)
            if fa == YM_DUR:
                return _scale_ym(a, inverse)
        if fa == fb == DT_DUR:
            return DECIMAL.divide(Decimal(a // timedelta(microseconds=1)), Decimal(b // timedelta(microseconds=1)))
        if fa == fb == YM_DUR:
            return DECIMAL.divide(Decimal(a.months), Decimal(b.months))
    except _ARITH_ERRORS:
        pass
    return None


def power(a: Any, b: Any) -> Any:
    x, y = number(a), number(b)
    if x is None or y is None:
        return None
    try:
        return DECIMAL.power(x, y)
    except _ARITH_ERRORS:
        return None
