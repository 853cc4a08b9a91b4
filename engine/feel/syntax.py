"""The FEEL syntax tree: what the parser produces and the compiler consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class Path:
    base: Expr
    key: str


@dataclass(frozen=True, slots=True)
class Filter:
    """``base[expr]``: an index when ``expr`` is a number, else a filter over the list's items."""

    base: Expr
    condition: Expr


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Expr


@dataclass(frozen=True, slots=True)
class Arithmetic:
    op: str  # + - * / **
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Comparison:
    op: str  # = != < <= > >=
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Logical:
    op: str  # and / or
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class If:
    condition: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Between:
    value: Expr
    low: Expr
    high: Expr


@dataclass(frozen=True, slots=True)
class In:
    value: Expr
    tests: tuple[Test, ...]


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class ContextLiteral:
    entries: tuple[tuple[str, Expr], ...]


Expr: TypeAlias = (
    Literal
    | Name
    | Path
    | Filter
    | Call
    | Negate
    | Arithmetic
    | Comparison
    | Logical
    | If
    | Between
    | In
    | ListLiteral
    | ContextLiteral
)


@dataclass(frozen=True, slots=True)
class CompareTest:
    """``< e``, ``>= e``, ``= e``, ``!= e`` against the input value."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class RangeTest:
    low: Expr
    high: Expr
    low_closed: bool
    high_closed: bool


@dataclass(frozen=True, slots=True)
class ExprTest:
    """A bare expression: equality with the input, membership if it is a list, truth if it reads ``?``."""

    expr: Expr


@dataclass(frozen=True, slots=True)
class NotTest:
    tests: tuple[Test, ...]


@dataclass(frozen=True, slots=True)
class AnyTest:
    """``-``: matches everything."""


Test: TypeAlias = CompareTest | RangeTest | ExprTest | NotTest | AnyTest
