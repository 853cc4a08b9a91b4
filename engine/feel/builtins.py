"""FEEL's built-in functions (the subset decision tables and literal expressions use).

Each entry is ``name → (function, min args, max args)``. Functions take FEEL values and may raise on the
wrong kinds of value: the compiled call site turns any exception into null, as FEEL requires.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)
from functools import reduce
from typing import Any

from engine.feel import ops
from engine.feel.values import (
    DECIMAL,
    YearsMonthsDuration,
    as_int,
    format_date,
    format_datetime,
    format_dt_duration,
    format_time,
    format_ym_duration,
    number,
    parse_date,
    parse_datetime,
    parse_duration,
    parse_time,
)

MANY = 99
_ZERO = Decimal(0)
_INTS = {int}
_EXACT_INT_SUM = 10**34
"""Below this, an int sum is exact in DECIMAL's 34 digits."""


def _num(v: Any) -> Decimal:
    n = number(v)
    if n is None:
        raise TypeError("not a number")
    return n


def _items(args: tuple[Any, ...]) -> list[Any]:
    """Aggregates accept either one list or the values themselves: ``max([1, 2])`` = ``max(1, 2)``."""
    if len(args) == 1 and isinstance(args[0], list):
        return args[0]
    return list(args)


def _date(*args: Any) -> date | None:
    if len(args) == 3:
        y, m, d = (as_int(a) for a in args)
        return None if y is None or m is None or d is None else date(y, m, d)
    v = args[0]
    if isinstance(v, str):
        return parse_date(v)
    if isinstance(v, datetime):
        return v.date()
    return v if type(v) is date else None


def _time(*args: Any) -> time | None:
    if len(args) >= 3:
        sec = _num(args[2])
        tz = None
        if len(args) == 4 and args[3] is not None:
            tz = timezone(args[3])
        return time(as_int(args[0]), as_int(args[1]), int(sec), int((sec % 1) * 1_000_000), tzinfo=tz)  # type: ignore[arg-type]
    v = args[0]
    if isinstance(v, str):
        return parse_time(v)
    if isinstance(v, datetime):
        return v.timetz()
    if type(v) is date:
        return time(0, 0, 0, tzinfo=UTC)
    return v if isinstance(v, time) else None


def _date_and_time(*args: Any) -> datetime | None:
    if len(args) == 2:
        d, t = args
        if not isinstance(d, date) or not isinstance(t, time):
            return None
        return datetime.combine(d.date() if isinstance(d, datetime) else d, t)
    v = args[0]
    if isinstance(v, str):
        return parse_datetime(v)
    if isinstance(v, datetime):
        return v
    return None


def _duration(v: Any) -> timedelta | YearsMonthsDuration | None:
    return parse_duration(v) if isinstance(v, str) else None


def _ym_between(a: Any, b: Any) -> YearsMonthsDuration:
    months = (b.year - a.year) * 12 + b.month - a.month
    start_rest = (a.day, getattr(a, "hour", 0), getattr(a, "minute", 0), getattr(a, "second", 0))
    end_rest = (b.day, getattr(b, "hour", 0), getattr(b, "minute", 0), getattr(b, "second", 0))
    if months > 0 and end_rest < start_rest:
        months -= 1
    elif months < 0 and end_rest > start_rest:
        months += 1
    return YearsMonthsDuration(months)


def _string(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if number(v) is not None:
        n = _num(v)
        return format(n.normalize(), "f") if n == n.to_integral_value() else format(n, "f")
    if isinstance(v, datetime):
        return format_datetime(v)
    if isinstance(v, date):
        return format_date(v)
    if isinstance(v, time):
        return format_time(v)
    if isinstance(v, timedelta):
        return format_dt_duration(v)
    if isinstance(v, YearsMonthsDuration):
        return format_ym_duration(v)
    return str(v)


def _number(text: Any, grouping: Any = None, decimal_sep: Any = None) -> Decimal | None:
    if not isinstance(text, str):
        return None
    if grouping:
        text = text.replace(grouping, "")
    if decimal_sep:
        text = text.replace(decimal_sep, ".")
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text.strip()):
        return None
    return DECIMAL.create_decimal(text.strip())


def _not(v: Any) -> bool | None:
    return (not v) if isinstance(v, bool) else None


def _substring(text: str, start: Any, length: Any = None) -> str | None:
    i = as_int(start)
    if not isinstance(text, str) or i is None or i == 0:
        return None
    chars = list(text)  # FEEL counts code points, as Python str does
    begin = i - 1 if i > 0 else len(chars) + i
    if length is None:
        return "".join(chars[max(begin, 0) :])
    n = as_int(length)
    return None if n is None else "".join(chars[max(begin, 0) : max(begin, 0) + n])


def _round(mode: str) -> Callable[..., Decimal]:
    def rnd(n: Any, scale: Any = 0) -> Decimal:
        return _num(n).quantize(Decimal(1).scaleb(-int(_num(scale))), rounding=mode, context=DECIMAL)

    return rnd


def _sum(*args: Any) -> Decimal | None:
    items = _items(args)
    if not items:
        return None
    if type(items[0]) is int and set(map(type, items)) == _INTS:
        # Whole JSON numbers (``sum(guest.sessions.pages)``): Python's exact int sum. Equal to adding them one by one
        # under DECIMAL while no partial sum can pass its 34 digits, which the bound below ensures.
        if max(map(abs, items)) * len(items) < _EXACT_INT_SUM:
            return Decimal(sum(items))
    add = DECIMAL.add
    try:
        # JSON numbers with a fraction arrive as floats (`sum(guest.orders.total)`): when every item is one,
        # convert them as number() does (the shortest repr round-trips: 0.1 stays 0.1) and add them, all in C;
        # float.__repr__ refuses anything else. A third of the loop below's cost on 18 orders.
        total = reduce(add, map(Decimal, map(float.__repr__, items)), _ZERO)
    except TypeError:
        total = _ZERO
        for x in items:
            t = type(x)
            total = add(total, x if t is Decimal else Decimal(x) if t is int else _num(x))
    if not total.is_finite():  # an infinite float among the items: not a FEEL number
        raise TypeError("not a number")
    return total


def _mean(*args: Any) -> Decimal | None:
    items = _items(args)
    return DECIMAL.divide(_sum(items), Decimal(len(items))) if items else None  # type: ignore[arg-type]


def _extreme(sign: int) -> Callable[..., Any]:
    def pick(*args: Any) -> Any:
        items = _items(args)
        if not items:
            return None
        best = items[0]
        kind = type(best)
        if kind in ops.SAME_TYPE_ORDERED:
            # One kind ordered by Python exactly as by ops.compare (`max(guest.orders.at)`: ISO date
            # strings): the builtin, which like the loop below keeps the first of equal extremes.
            for x in items:
                if type(x) is not kind:
                    break
            else:
                return max(items) if sign > 0 else min(items)
        for x in items[1:]:
            c = ops.compare(x, best)
            if c is None:
                return None
            if c == sign:
                best = x
        return best if len(items) > 1 or ops.compare(best, best) == 0 else None

    return pick


def _flatten(v: Any) -> list[Any]:
    out: list[Any] = []
    for x in v if isinstance(v, list) else [v]:
        out.extend(_flatten(x) if isinstance(x, list) else [x])
    return out


def _contains_item(items: list[Any], v: Any) -> bool:
    return any(ops.equal(x, v) is True for x in items)


def _distinct(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if not _contains_item(out, x):
            out.append(x)
    return out


def _all_any(want: bool) -> Callable[..., bool | None]:
    def fold(*args: Any) -> bool | None:
        items = _items(args)
        if any(x is (not want) for x in items):
            return not want
        return want if all(x is want for x in items) else None

    return fold


def _modulo(a: Any, b: Any) -> Decimal:
    x, y = _num(a), _num(b)
    return DECIMAL.subtract(x, DECIMAL.multiply(y, (x / y).to_integral_value(rounding=ROUND_FLOOR)))


def _index_of(items: list[Any], v: Any) -> list[Decimal]:
    return [Decimal(i + 1) for i, x in enumerate(items) if ops.equal(x, v) is True]


BUILTINS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "date": (_date, 1, 3),
    "time": (_time, 1, 4),
    "date and time": (_date_and_time, 1, 2),
    "duration": (_duration, 1, 1),
    "years and months duration": (_ym_between, 2, 2),
    "now": (lambda: datetime.now(UTC), 0, 0),
    "today": (lambda: date.today(), 0, 0),
    "number": (_number, 1, 3),
    "string": (_string, 1, 1),
    "not": (_not, 1, 1),
    "substring": (_substring, 2, 3),
    "string length": (lambda t: Decimal(len(t)) if isinstance(t, str) else None, 1, 1),
    "upper case": (lambda t: t.upper() if isinstance(t, str) else None, 1, 1),
    "lower case": (lambda t: t.lower() if isinstance(t, str) else None, 1, 1),
    "contains": (lambda t, m: m in t if isinstance(t, str) and isinstance(m, str) else None, 2, 2),
    "starts with": (lambda t, m: t.startswith(m) if isinstance(t, str) and isinstance(m, str) else None, 2, 2),
    "ends with": (lambda t, m: t.endswith(m) if isinstance(t, str) and isinstance(m, str) else None, 2, 2),
    "substring before": (lambda t, m: t.partition(m)[0] if m in t else "", 2, 2),
    "substring after": (lambda t, m: t.partition(m)[2] if m in t else "", 2, 2),
    "matches": (lambda t, p, flags="": re.search(p, t, re.I if "i" in flags else 0) is not None, 2, 3),
    "replace": (
        lambda t, p, r, flags="": re.sub(p, re.sub(r"\$(\d)", r"\\\1", r), t, flags=re.I if "i" in flags else 0),
        3,
        4,
    ),
    "count": (lambda items: Decimal(len(items)) if isinstance(items, list) else None, 1, 1),
    "min": (_extreme(-1), 1, MANY),
    "max": (_extreme(1), 1, MANY),
    "sum": (_sum, 1, MANY),
    "mean": (_mean, 1, MANY),
    "all": (_all_any(True), 1, MANY),
    "any": (_all_any(False), 1, MANY),
    "abs": (lambda n: abs(_num(n)), 1, 1),
    "floor": (lambda n, scale=0: _round(ROUND_FLOOR)(n, scale), 1, 2),
    "ceiling": (lambda n, scale=0: _round(ROUND_CEILING)(n, scale), 1, 2),
    "decimal": (lambda n, scale: _round(ROUND_HALF_EVEN)(n, scale), 2, 2),
    "round half up": (_round(ROUND_HALF_UP), 1, 2),
    "round half down": (_round(ROUND_HALF_DOWN), 1, 2),
    "round up": (_round(ROUND_UP), 1, 2),
    "round down": (_round(ROUND_DOWN), 1, 2),
    "modulo": (_modulo, 2, 2),
    "sqrt": (lambda n: DECIMAL.sqrt(_num(n)), 1, 1),
    "odd": (lambda n: _num(n) % 2 == 1, 1, 1),
    "even": (lambda n: _num(n) % 2 == 0, 1, 1),
    "list contains": (_contains_item, 2, 2),
    "append": (lambda items, *xs: [*items, *xs], 2, MANY),
    "concatenate": (lambda *lists: [x for lst in lists for x in lst], 1, MANY),
    "reverse": (lambda items: items[::-1], 1, 1),
    "index of": (_index_of, 2, 2),
    "distinct values": (_distinct, 1, 1),
    "flatten": (_flatten, 1, 1),
    "get value": (lambda ctx, key: ctx.get(key), 2, 2),
}

IMPURE = frozenset({"now", "today"})
"""Never folded at compile time: their value belongs to the evaluation, not to the publish."""
