"""FEEL's value domain in Python terms, and the ISO text forms of its temporal values.

| FEEL                      | Python                                  |
|---------------------------|-----------------------------------------|
| number                    | ``Decimal`` computed in :data:`DECIMAL` |
| string, boolean, null     | ``str``, ``bool``, ``None``             |
| date / time / date & time | ``date`` / ``time`` / ``datetime``       |
| days and time duration    | ``timedelta``                           |
| years and months duration | :class:`YearsMonthsDuration`            |
| list, context             | ``list``, ``dict``                       |

Values from outside (JSON, Python callers) may carry ``int`` and ``float`` where FEEL says number;
:func:`number` is the one place that folds them into ``Decimal``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Any

DECIMAL = Context(prec=34, Emax=6144, Emin=-6143, traps=[InvalidOperation, DivisionByZero, Overflow])
"""DMN numbers are IEEE 754 decimal128: 34 significant digits. Traps turn 1/0 into an exception we map to null."""


@dataclass(frozen=True, slots=True, order=True)
class YearsMonthsDuration:
    """A FEEL years-and-months duration; only the month count matters (P1Y = P12M)."""

    months: int

    def __str__(self) -> str:
        return format_ym_duration(self)


def number(v: Any) -> Decimal | None:
    """``v`` as a FEEL number, or None when it is not one (``bool`` is not a number here)."""
    t = type(v)
    if t is Decimal:
        return v  # type: ignore[no-any-return]
    if t is int:
        return Decimal(v)
    if t is float:
        # repr gives the shortest string that round-trips, so 0.1 becomes Decimal('0.1'), not 0.1000000000000000055…
        d = Decimal(repr(v))
        return d if d.is_finite() else None
    return None


def as_int(v: Any) -> int | None:
    n = number(v)
    if n is None or n != n.to_integral_value():
        return None
    return int(n)


_DATE = re.compile(r"(-?\d{4,9})-(\d\d)-(\d\d)")
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|z|[+-]\d\d:\d\d(?::\d\d)?|@[\w/+\-]+)?")
_DURATION = re.compile(r"(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def _zone(text: str | None) -> tzinfo | None | bool:
    """Parse a time zone suffix; False means it was present but unreadable."""
    if not text:
        return None
    if text in ("Z", "z"):
        return UTC
    if text[0] == "@":
        try:
            from zoneinfo import ZoneInfo

            return ZoneInfo(text[1:])
        except (ImportError, ValueError, KeyError, OSError):
            return False
    sign = -1 if text[0] == "-" else 1
    parts = [int(p) for p in text[1:].split(":")]
    offset = timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2] if len(parts) > 2 else 0)
    if offset >= timedelta(hours=24):
        return False
    return timezone(sign * offset)


def parse_date(text: str) -> date | None:
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    m = _TIME.fullmatch(text.strip())
    if m is None:
        return None
    tz = _zone(m[5])
    if tz is False:
        return None
    micro = int(round(float(m[4]) * 1_000_000)) if m[4] else 0
    try:
        return time(int(m[1]), int(m[2]), int(m[3]), min(micro, 999_999), tzinfo=tz or None)  # type: ignore[arg-type]
    except ValueError:
        return None


def parse_datetime(text: str) -> datetime | None:
    """``YYYY-MM-DDThh:mm:ss[zone]``; a bare date means its midnight, as FEEL's ``date and time("…")`` says."""
    text = text.strip()
    if "T" not in text:
        d = parse_date(text)
        return None if d is None else datetime(d.year, d.month, d.day)
    day, _, clock = text.partition("T")
    d, t = parse_date(day), parse_time(clock)
    if d is None or t is None:
        return None
    return datetime.combine(d, t)


def parse_duration(text: str) -> timedelta | YearsMonthsDuration | None:
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if m is None or text.endswith(("P", "T")):
        return None
    sign = -1 if m[1] else 1
    has_ym = m[2] is not None or m[3] is not None
    has_dt = any(m[i] is not None for i in (4, 5, 6, 7))
    if has_ym and has_dt:
        return None  # FEEL has no duration mixing calendar months with exact days
    if has_ym:
        return YearsMonthsDuration(sign * (int(m[2] or 0) * 12 + int(m[3] or 0)))
    seconds = Decimal(m[7] or 0)
    td = timedelta(
        days=int(m[4] or 0),
        hours=int(m[5] or 0),
        minutes=int(m[6] or 0),
        seconds=int(seconds),
        microseconds=int((seconds % 1) * 1_000_000),
    )
    return -td if sign < 0 else td


def parse_temporal(text: str) -> Any:
    """The value of an ``@"…"`` literal: whichever temporal form the text has."""
    for parse in (parse_date, parse_datetime, parse_time, parse_duration):
        v = parse(text)
        if v is not None:
            return v
    return None


def _zone_text(t: time | datetime) -> str:
    tz = t.tzinfo
    if tz is None:
        return ""
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return "@" + key
    offset = t.utcoffset()
    if offset is None:
        return ""
    if offset == timedelta(0):
        return "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _clock(t: time | datetime) -> str:
    out = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        out += f".{t.microsecond:06d}".rstrip("0")
    return out


def format_date(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def format_time(t: time) -> str:
    return _clock(t) + _zone_text(t)


def format_datetime(dt: datetime) -> str:
    return f"{format_date(dt)}T{_clock(dt)}{_zone_text(dt)}"


def format_dt_duration(td: timedelta) -> str:
    micros = (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    secs, micro = divmod(micros, 1_000_000)
    days, secs = divmod(secs, 86_400)
    hours, secs = divmod(secs, 3_600)
    minutes, secs = divmod(secs, 60)
    out = f"{sign}P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if secs or micro:
        clock += f"{secs}.{micro:06d}".rstrip("0") + "S" if micro else f"{secs}S"
    if clock:
        out += "T" + clock
    return out if (days or clock) else "PT0S"


def format_ym_duration(d: YearsMonthsDuration) -> str:
    sign = "-" if d.months < 0 else ""
    years, months = divmod(abs(d.months), 12)
    out = (f"{years}Y" if years else "") + (f"{months}M" if months or not years else "")
    return f"{sign}P{out}"
