"""``output``: the model's one answer, shaped as the storefront wants it.

``value`` is a JSON template whose string leaves are FEEL expressions (a literal string is quoted:
``"\\"hero\\""``); objects and arrays keep their shape. Compiled once into a tree of closures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import Problem
from engine.feel import Expression
from engine.nodes.base import CompileContext, Node, TraceEntry, known_keys
from engine.types import JSONObject, Scope

KIND = "output"

Builder = Callable[[Scope], Any]


@dataclass(frozen=True, slots=True)
class OutputNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    build: Builder

    def evaluate(self, scope: Scope, trace: TraceEntry) -> Any:
        return self.build(scope)


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
    return OutputNode(defn["id"], KIND, frozenset(refs), gate, build)
