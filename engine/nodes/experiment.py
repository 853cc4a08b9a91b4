"""``experiment``: choose one arm of an experiment for this guest.

``{"id": "hero", "kind": "experiment", "experiment": "hero-banner", "eligible": "<FEEL list of arm ids>"}``

Outputs ``{"experiment", "arm", "payload", "propensity", "reason", "epoch"}``. The definition and the
current allocation come from the experiments feature's in-process cache, bound at compile time, so
evaluating reads no Redis. ``eligible`` (optional) narrows the arms per request; the propensity is then
the arm's share among the eligible ones. Exposures are recorded when the decision is served, from the
decision record (see ``engine.lab.Lab.observe``), never by evaluation itself — testing a model or
shadowing it counts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.errors import EvaluationError, Problem
from engine.feel import Expression
from engine.nodes.base import CompileContext, Node, TraceEntry, known_keys, references, require
from engine.types import JSONObject, Scope

KIND = "experiment"


@dataclass(frozen=True, slots=True)
class ExperimentNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    experiment: str
    eligible: Expression | None
    lab: Any
    """The :class:`engine.lab.Lab` of this process, or None where experiments are not running (CLI)."""

    def evaluate(self, scope: Scope, trace: TraceEntry) -> JSONObject:
        if self.lab is None:
            raise EvaluationError("experiments are not available here (no running experiments feature)")
        eligible = _arm_ids(self.eligible.fn(scope)) if self.eligible is not None else None
        guest = scope.get("guest") or {}
        context = scope.get("context") or {}
        choice = self.lab.choose(self.experiment, guest, context, eligible)
        trace.matched = [choice.arm] if choice.arm is not None else []
        output: JSONObject = choice.as_output()
        return output


def _arm_ids(value: Any) -> frozenset[str] | None:
    """A FEEL list of arm ids; null (unknown) means no restriction, as FEEL null does elsewhere."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((value,))
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str))
    if isinstance(value, int | float | Decimal):
        raise EvaluationError("'eligible' must be a list of arm ids, not a number")
    raise EvaluationError(f"'eligible' must be a list of arm ids, not {type(value).__name__}")


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    known_keys(defn, ("experiment", "eligible"), pointer, ctx)
    key = require(defn, "experiment", pointer, ctx, str)
    eligible = ctx.expression(defn["eligible"], f"{pointer}/eligible") if "eligible" in defn else None
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    lab = ctx.services.get("experiments") if isinstance(ctx.services, dict) else None
    if key is None:
        return None
    if not key:
        ctx.problems.append(Problem(f"{pointer}/experiment", "name the experiment"))
        return None
    return ExperimentNode(defn["id"], KIND, references(eligible, gate) & ctx.names, gate, key, eligible, lab)
