"""How FEEL reads its scope: bound names layered over the caller's scope, member access, references."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any

from engine.feel import syntax as s
from engine.feel.values import YearsMonthsDuration


class Bound(Mapping[str, Any]):
    """A scope with a few names bound on top: ``?`` in unary tests, ``item`` in filters, context entries."""

    __slots__ = ("local", "outer")

    def __init__(self, local: Mapping[str, Any], outer: Mapping[str, Any]) -> None:
        self.local = local
        self.outer = outer

    def __getitem__(self, key: str) -> Any:
        if key in self.local:
            return self.local[key]
        return self.outer[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.local:
            return self.local[key]
        return self.outer.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter({**self.outer, **self.local})

    def __len__(self) -> int:
        return len({**self.outer, **self.local})


_TEMPORAL_PROPS: dict[str, Callable[[Any], Any]] = {
    "year": lambda v: Decimal(v.year),
    "month": lambda v: Decimal(v.month),
    "day": lambda v: Decimal(v.day),
    "hour": lambda v: Decimal(v.hour),
    "minute": lambda v: Decimal(v.minute),
    "second": lambda v: Decimal(v.second),
    "weekday": lambda v: Decimal(v.isoweekday()),
}
_DURATION_PROPS: dict[str, Callable[[timedelta], Any]] = {
    "days": lambda d: Decimal(d.days),
    "hours": lambda d: Decimal(d.seconds // 3600),
    "minutes": lambda d: Decimal(d.seconds // 60 % 60),
    "seconds": lambda d: Decimal(d.seconds % 60),
}


def member(v: Any, key: str) -> Any:
    """``v.key``: a context entry, a temporal component, or the key of every item of a list."""
    if type(v) is dict:
        return v.get(key)
    if v is None:
        return None
    if isinstance(v, Mapping):
        return v.get(key)
    if isinstance(v, list):
        return [member(x, key) for x in v]
    if isinstance(v, (date, time)) and key in _TEMPORAL_PROPS:
        if isinstance(v, time) and key in ("year", "month", "day", "weekday"):
            return None
        if type(v) is date and key in ("hour", "minute", "second"):
            return None
        return _TEMPORAL_PROPS[key](v)
    if isinstance(v, timedelta) and key in _DURATION_PROPS:
        return _DURATION_PROPS[key](v)
    if isinstance(v, YearsMonthsDuration) and key in ("years", "months"):
        return Decimal(int(v.months / 12) if key == "years" else v.months - int(v.months / 12) * 12)
    return None


def walk(tree: Any) -> Iterator[Any]:
    """Every node of a syntax tree (and the tuples and values in it), in no particular order."""
    stack = [tree]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, tuple):
            stack.extend(n)
        elif hasattr(n, "__slots__"):
            stack.extend(getattr(n, slot) for slot in n.__slots__)


def references(node: Any) -> frozenset[str]:
    """The root names an expression or test reads (``?`` and ``item`` are bindings, not references)."""
    return frozenset(n.name for n in walk(node) if isinstance(n, s.Name) and n.name not in ("?", "item"))


def reads_input(node: Any) -> bool:
    """Does this tree mention ``?`` (the input value of a unary test)?"""
    return any(isinstance(n, s.Name) and n.name == "?" for n in walk(node))
