"""``expression``: a computed value — a DMN literal expression, or any FEEL expression over the scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import Problem
from engine.feel import Expression
from engine.nodes.base import CompileContext, Node, TraceEntry, known_keys, references
from engine.types import JSONObject, Scope

KIND = "expression"


@dataclass(frozen=True, slots=True)
class ExpressionNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    expr: Expression
    type: str | None

    def evaluate(self, scope: Scope, trace: TraceEntry) -> Any:
        # FEEL semantics: a type error inside the expression is null, not a failed node.
        return self.expr.fn(scope)


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    """Compile ``{"id", "kind": "expression", "expr": "<FEEL>", "type"?: "<type name>"}``."""
    known_keys(defn, ("expr", "type"), pointer, ctx)
    expr = ctx.expression(defn.get("expr"), f"{pointer}/expr")
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    type_name = defn.get("type")
    if type_name is not None and not isinstance(type_name, str):
        ctx.problems.append(Problem(f"{pointer}/type", "must be a type name"))
        return None
    if expr is None:
        return None
    return ExpressionNode(defn["id"], KIND, references(expr, gate) & ctx.names, gate, expr, type_name)
