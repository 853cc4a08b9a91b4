"""``rule``: a boolean condition. Other nodes name it in their ``when`` to be gated by it (targeting)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.feel import Expression
from engine.nodes.base import CompileContext, Node, TraceEntry, known_keys, references
from engine.types import JSONObject, Scope

KIND = "rule"


@dataclass(frozen=True, slots=True)
class RuleNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    condition: Expression

    def evaluate(self, scope: Scope, trace: TraceEntry) -> bool:
        # FEEL three-valued logic: null (unknown) does not pass a gate.
        return self.condition.fn(scope) is True


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    known_keys(defn, ("expr",), pointer, ctx)
    condition = ctx.expression(defn.get("expr"), f"{pointer}/expr")
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    if condition is None:
        return None
    return RuleNode(defn["id"], KIND, references(condition, gate), gate, condition)
