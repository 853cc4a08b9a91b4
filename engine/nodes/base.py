"""The contract every node kind implements.

A node definition (a dict from a model file) is compiled once by its kind's ``compile`` function into an
immutable node object. Per-evaluation state lives in the :class:`TraceEntry` handed to ``evaluate`` and
in the scope, never on the node: one compiled plan serves every concurrent request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from engine.errors import FeelError, Problem
from engine.feel import Expression, UnaryTests, compile_expression, compile_list, compile_unary_tests
from engine.types import JSONObject, Scope

T = TypeVar("T")

MISS: Any = object()
"""What an I/O node's ``cached(scope, trace)`` returns when it cannot answer without its I/O."""


@dataclass(slots=True)
class TraceEntry:
    """What one node did in one evaluation. Created per request; rendered when ``explain`` is on."""

    id: str
    kind: str
    output: Any = None
    time_us: int = 0
    matched: list[str] | None = None
    error: str | None = None
    skipped: bool = False
    fallback: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> JSONObject:
        out: JSONObject = {"id": self.id, "kind": self.kind, "output": self.output, "time_us": self.time_us}
        if self.matched is not None:
            out["matched"] = self.matched
        if self.error is not None:
            out["error"] = self.error
        if self.skipped:
            out["skipped"] = True
        if self.fallback is not None:
            out["fallback"] = self.fallback
        if self.detail:
            out.update(self.detail)
        return out


class Node(Protocol):
    """A compiled node. ``deps`` are the ids of nodes (and declared inputs) it reads.

    Members are read-only properties so frozen dataclasses satisfy the protocol.
    """

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def deps(self) -> frozenset[str]: ...

    @property
    def gate(self) -> Expression | None: ...

    def evaluate(self, scope: Scope, trace: TraceEntry) -> Any:
        """Compute this node's output from ``scope``. Raise EvaluationError on failure."""
        ...


class AsyncNode(Node, Protocol):
    """A node that waits on I/O (external calls). The executor runs these concurrently.

    ``fallback`` is what the node yields when it fails, times out or the request deadline passes.
    """

    @property
    def fallback(self) -> Any: ...

    async def evaluate_async(self, scope: Scope, trace: TraceEntry, deadline_s: float) -> Any:
        """``deadline_s`` is an absolute ``time.monotonic()`` value this node must finish by."""
        ...


@dataclass(frozen=True, slots=True)
class CompileContext:
    """What a node compiler may know about the model it is part of.

    ``names`` are every top-level name in scope (node ids, declared inputs, ``guest``, ``context``):
    the FEEL parser needs them to read multi-word names such as ``Applicant Age``.
    """

    names: frozenset[str]
    model: JSONObject
    problems: list[Problem]
    services: Any = None  # engine-level services a kind may bind at compile time (e.g. Lua runtime, HTTP pool)

    def expression(self, text: Any, pointer: str) -> Expression | None:
        """Compile ``text`` as a FEEL expression, recording a located problem instead of raising."""
        return self._compile(compile_expression, "a FEEL expression", text, pointer)

    def unary_tests(self, text: Any, pointer: str) -> UnaryTests | None:
        """Compile ``text`` as FEEL unary tests (a decision-table cell), recording a problem instead of raising."""
        return self._compile(compile_unary_tests, "FEEL unary tests", text, pointer)

    def _compile(self, compiler: Callable[..., T], what: str, text: Any, pointer: str) -> T | None:
        if not isinstance(text, str):
            self.problems.append(Problem(pointer, f"must be {what} (a string)"))
            return None
        try:
            return compiler(text, names=self.names)
        except FeelError as exc:
            self.problems.append(Problem(pointer, f"{exc.detail} in {text!r}"))
            return None


NodeCompiler = Callable[[JSONObject, str, CompileContext], Node | None]
"""``compile(definition, pointer, ctx)`` → node, or None after appending problems to ``ctx.problems``."""


def references(*exprs: Expression | None) -> frozenset[str]:
    """Union of the root names the given expressions read."""
    out: set[str] = set()
    for e in exprs:
        if e is not None:
            out |= e.references
    return frozenset(out)


def require(defn: JSONObject, key: str, pointer: str, ctx: CompileContext, types: type | tuple[type, ...]) -> Any:
    """Fetch a required field of a node definition, recording a located problem when absent or mistyped."""
    if key not in defn:
        ctx.problems.append(Problem(f"{pointer}/{key}", f"'{key}' is required"))
        return None
    value = defn[key]
    if not isinstance(value, types):
        ctx.problems.append(Problem(f"{pointer}/{key}", f"'{key}' has the wrong type ({type(value).__name__})"))
        return None
    return value


def known_keys(defn: JSONObject, allowed: Iterable[str], pointer: str, ctx: CompileContext) -> None:
    """Unknown keys are a typo more often than not: report them."""
    allowed_set = set(allowed) | {"id", "kind", "when", "description", "label"}
    for k in defn:
        if k not in allowed_set:
            ctx.problems.append(Problem(f"{pointer}/{k}", f"unknown field '{k}'"))


@dataclass(frozen=True, slots=True)
class Inputs:
    """A node's input expressions, read in one generated call: each path they share (``guest.facts``) is read once,
    and it is one call instead of one per input. Input expressions never raise or change anything, so reading them
    all at once answers as reading each in turn."""

    exprs: tuple[Expression, ...]
    together: Expression | None
    """Every input as one list, or None (no inputs, or all constant: a constant list is shared, never filled in)."""

    def read(self, scope: Scope) -> list[Any]:
        """The inputs' values, a fresh list. Anything but a list from the one call means something in it raised
        (its guard made the whole call null): then one call per input, each null on its own."""
        values = self.together.fn(scope) if self.together is not None else None
        if type(values) is not list:
            values = [e.fn(scope) for e in self.exprs]
        return values


def compile_inputs(exprs: tuple[Expression, ...], ctx: CompileContext) -> Inputs:
    together = compile_list([e.source for e in exprs], names=ctx.names) if exprs else None
    return Inputs(exprs, None if together is None or together.is_constant else together)
