"""``output``: the model's one answer, shaped as the storefront wants it.

``value`` is a JSON template whose string leaves are FEEL expressions (a literal string is quoted:
``"\\"hero\\""``); objects and arrays keep their shape. Compiled once into a tree of closures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import Problem
from engine.feel import Expression, compile_list, to_json
from engine.nodes.base import CompileContext, Node, TraceEntry, known_keys
from engine.types import JSONObject, Scope

KIND = "output"

Builder = Callable[[Scope], Any]
_PLAIN = frozenset({str, bool, int, float, type(None)})
"""The kinds :func:`to_json` returns unchanged."""


@dataclass(frozen=True, slots=True)
class OutputNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    build: Builder
    leaves: Expression | None
    """Every FEEL leaf of the template in one generated call (each shared path read once), or None."""
    assemble: Callable[[list[Any]], Any] | None
    """The template's shape, filled from the leaves' values in order, each as JSON."""
    json_output = True
    """What ``evaluate`` returns is JSON already: the plan does not convert the answer again."""

    def evaluate(self, scope: Scope, trace: TraceEntry) -> Any:
        if self.leaves is not None and self.assemble is not None:
            values = self.leaves.fn(scope)
            if type(values) is list:
                return self.assemble(values)
            # Something in the one call raised (its guard gave null): leaf by leaf, as each is guarded.
        return to_json(self.build(scope))


def _assembler(value: Any, leaves: list[str]) -> Callable[[list[Any]], Any] | None:
    """A function building ``value``'s shape from its leaves' values (``leaves`` collects their sources, in
    order), one generated expression rather than a closure per object and list; None if Python cannot
    compile it (absurd nesting): the closures then serve."""
    constants: dict[str, Any] = {"_json": to_json, "_plain": _PLAIN}

    def source(v: Any) -> str:
        if isinstance(v, str):
            leaves.append(v)
            # A leaf of a kind to_json returns as it is (most: ids, names, flags) skips the call.
            return f"(x if type(x := v[{len(leaves) - 1}]) in _plain else _json(x))"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{str(k)!r}: {source(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(source(x) for x in v) + "]"
        name = f"_c{len(constants)}"
        constants[name] = v
        return name

    try:
        fn: Callable[[list[Any]], Any] = eval(f"lambda v: {source(value)}", constants)  # noqa: S307 — our own source
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    return fn


def template(value: Any, pointer: str, ctx: CompileContext, refs: set[str]) -> Builder:
    """Compile a JSON template whose string leaves are FEEL expressions; shared with request templates."""
    if isinstance(value, str):
        expr = ctx.expression(value, pointer)
        if expr is None:
            return lambda scope: None
        refs |= expr.references
        return expr.fn  # never raises, and one call less than the Expression
    if isinstance(value, dict):
        parts = [(k, template(v, f"{pointer}/{k}", ctx, refs)) for k, v in value.items()]
        return lambda scope: {k: build(scope) for k, build in parts}
    if isinstance(value, list):
        items = [template(v, f"{pointer}/{i}", ctx, refs) for i, v in enumerate(value)]
        return lambda scope: [build(scope) for build in items]
    if value is None or isinstance(value, bool | int | float):
        return lambda scope: value
    ctx.problems.append(Problem(pointer, f"unsupported template value of type {type(value).__name__}"))
    return lambda scope: None


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    known_keys(defn, ("value",), pointer, ctx)
    if "value" not in defn:
        ctx.problems.append(Problem(f"{pointer}/value", "'value' is required"))
        return None
    refs: set[str] = set()
    before = len(ctx.problems)
    build = template(defn["value"], f"{pointer}/value", ctx, refs)
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    if gate is not None:
        refs |= gate.references
    if len(ctx.problems) > before:
        return None
    sources: list[str] = []
    assemble = _assembler(defn["value"], sources)
    leaves = compile_list(sources, names=ctx.names) if assemble is not None and sources else None
    return OutputNode(defn["id"], KIND, frozenset(refs), gate, build, leaves, assemble)
