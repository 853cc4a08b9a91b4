"""Crossing the JSON boundary: JSON → FEEL values, FEEL → JSON-able values, and typed input coercion."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from engine.feel.values import (
    YearsMonthsDuration,
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
from engine.types import JSONObject


def to_feel(value: Any) -> Any:
    """A JSON value as a FEEL value: numbers become Decimal, recursively through lists and objects."""
    t = type(value)
    if t is int or t is float:
        return number(value)
    if t is list or t is tuple:
        return [to_feel(v) for v in value]
    if t is dict:
        # Members that stay as they are, and whole numbers, without a call each: a script's result, a response.
        out = {}
        for k, v in value.items():
            tv = type(v)
            out[k] = v if tv is str or v is None or tv is bool else Decimal(v) if tv is int else to_feel(v)
        return out
    if isinstance(value, Mapping):
        return {k: to_feel(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> Any:
    """A FEEL value as something orjson can write: integral Decimals as int, temporals as ISO strings."""
    t = type(value)
    if t is Decimal:
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if value is None or t is str or t is bool or t is int or t is float:
        return value
    if t is list or t is tuple:
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if t is datetime:
        return format_datetime(value)
    if t is date:
        return format_date(value)
    if t is time:
        return format_time(value)
    if t is timedelta:
        return format_dt_duration(value)
    if t is YearsMonthsDuration:
        return format_ym_duration(value)
    return str(value)


def _to_number(v: Any) -> Decimal | None:
    n = number(v)
    if n is None and isinstance(v, str):
        try:
            n = Decimal(v.strip())
        except ArithmeticError:
            return None
        return n if n.is_finite() else None
    return n


def _to_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def _parsing(kind: type, parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if type(v) is kind:
            return v
        return parse(v) if isinstance(v, str) else None

    return convert


def _to_date(v: Any) -> date | None:
    if type(v) is datetime:
        return v.date()
    return v if type(v) is date else (parse_date(v) if isinstance(v, str) else None)


def _to_dt_duration(v: Any) -> timedelta | None:
    d = parse_duration(v) if isinstance(v, str) else v
    return d if type(d) is timedelta else None


def _to_ym_duration(v: Any) -> YearsMonthsDuration | None:
    d = parse_duration(v) if isinstance(v, str) else v
    return d if type(d) is YearsMonthsDuration else None


def _to_list(v: Any) -> list[Any] | None:
    if isinstance(v, (list, tuple)):
        return [to_feel(x) for x in v]
    return None if v is None else [to_feel(v)]  # FEEL: a single value where a list is expected is a singleton


def _to_context(v: Any) -> dict[str, Any] | None:
    return to_feel(v) if isinstance(v, Mapping) else None


_COERCE: dict[str, Callable[[Any], Any]] = {
    "number": _to_number,
    "integer": _to_number,  # Camunda's type names
    "long": _to_number,
    "double": _to_number,
    "string": lambda v: v if isinstance(v, str) else None,
    "boolean": _to_bool,
    "date": _to_date,
    "time": _parsing(time, parse_time),
    "dateTime": _parsing(datetime, parse_datetime),
    "date and time": _parsing(datetime, parse_datetime),
    "dayTimeDuration": _to_dt_duration,
    "days and time duration": _to_dt_duration,
    "yearMonthDuration": _to_ym_duration,
    "years and months duration": _to_ym_duration,
    "duration": lambda v: parse_duration(v) if isinstance(v, str) else v,
    "list": _to_list,
    "context": _to_context,
    "Any": to_feel,
}

BUILTIN_TYPES = frozenset(_COERCE)


def coerce(value: Any, type_name: str | None) -> Any:
    """Convert an input ``value`` to the FEEL type ``type_name`` declares; null when it cannot conform.

    ISO strings become dates, times and durations; JSON numbers (and numeric strings) become Decimal.
    An unknown type name (a model's own item definition) converts the value generically with
    :func:`to_feel`; resolving such types to their base types is the model compiler's job.
    """
    if value is None:
        return None
    if type_name is None:
        return to_feel(value)
    convert = _COERCE.get(type_name.removeprefix("feel:"))
    return to_feel(value) if convert is None else convert(value)


def coerce_input(value: Any, type_ref: str | JSONObject | None, types: Mapping[str, Any]) -> Any:
    """Convert a request value to a DMN input's declared type, resolving the model's item definitions.

    Built-in type names go to :func:`engine.feel.coerce`; a structure coerces each component it declares
    (undeclared keys pass through as FEEL values); a collection coerces each item.
    """
    spec: Any = types.get(type_ref) if isinstance(type_ref, str) else type_ref
    if spec is None:
        return coerce(value, type_ref if isinstance(type_ref, str) else None)
    if value is None:
        return None
    if spec.get("list"):
        items = value if isinstance(value, list) else [value]
        return [coerce_input(v, {**spec, "list": False}, types) for v in items]
    components = spec.get("components")
    if components:
        if not isinstance(value, Mapping):
            return None
        out = {k: to_feel(v) for k, v in value.items()}
        for k, t in components.items():
            if k in value:
                out[k] = coerce_input(value[k], t, types)
        return out
    return coerce_input(value, spec.get("base"), types)
