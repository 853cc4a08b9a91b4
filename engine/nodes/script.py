"""``script``: a Lua function, compiled once at publish, called per request with plain values.

Definition::

    {"id": "score", "kind": "script", "returns": "number",
     "inputs": ["guest.facts", "tier", "context"],
     "source": "return function(facts, tier, context) ... end",
     "fallback": 0}

Each ``inputs`` entry is a FEEL expression (usually just a name); its value is passed positionally to
the function the chunk returns. ``returns`` is a type name or a list of them (``string``, ``number``,
``integer``, ``boolean``, ``list``, ``map``, ``null``, ``any``); a result of another type is an error.
The script runs in :mod:`engine.sandbox` with its instruction budget and memory cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import Problem, ScriptError
from engine.feel import Expression, to_feel
from engine.nodes.base import CompileContext, Inputs, Node, TraceEntry, compile_inputs, known_keys, references, require
from engine.sandbox import Sandbox, Script, sandbox_for
from engine.types import JSONObject, Scope

KIND = "script"
MAX_SOURCE_BYTES = 64 * 1024


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": lambda v: _is_number(v) and float(v).is_integer(),
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list) or v == {},
    "map": lambda v: isinstance(v, dict) or v == [],
    "null": lambda v: v is None,
    "any": lambda v: True,
}


@dataclass(frozen=True, slots=True)
class ScriptNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    script: Script
    inputs: Inputs
    returns: tuple[str, ...]
    fallback: Any

    def evaluate(self, scope: Scope, trace: TraceEntry) -> Any:
        # FEEL values (Decimal, dates) become plain data on their way into Lua (engine.sandbox._encode).
        value = self.script.sandbox.call(self.script, self.inputs.read(scope))
        for type_name in self.returns:
            if _CHECKS[type_name](value):
                return to_feel(_shape(value, type_name))
        raise ScriptError(f"{self.id}: returned {_json_type(value)}, declared {' or '.join(self.returns)}")


def _shape(value: Any, type_name: str) -> Any:
    # An empty Lua table is both an empty list and an empty map; the declared type decides.
    if value == {} and type_name == "list":
        return []
    if value == [] and type_name == "map":
        return {}
    if type_name == "integer":
        return int(value)
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a map"


def _returns(raw: Any, pointer: str, ctx: CompileContext) -> tuple[str, ...]:
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n in _CHECKS for n in names):
        ctx.problems.append(Problem(pointer, f"must be a type name or a list of them: {', '.join(_CHECKS)}"))
        return ()
    return tuple(names)


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    known_keys(defn, ("source", "inputs", "returns", "fallback"), pointer, ctx)
    before = len(ctx.problems)
    source = require(defn, "source", pointer, ctx, str)
    raw_inputs = defn.get("inputs", [])
    if not isinstance(raw_inputs, list):
        ctx.problems.append(Problem(f"{pointer}/inputs", "must be a list of FEEL expressions (usually names)"))
        raw_inputs = []
    inputs = [ctx.expression(text, f"{pointer}/inputs/{i}") for i, text in enumerate(raw_inputs)]
    returns = _returns(defn.get("returns", "any"), f"{pointer}/returns", ctx)
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    script = None
    if isinstance(source, str):
        if len(source.encode()) > MAX_SOURCE_BYTES:
            ctx.problems.append(Problem(f"{pointer}/source", f"longer than {MAX_SOURCE_BYTES} bytes"))
        else:
            script = _compile_source(source, defn["id"], f"{pointer}/source", ctx)
    if script is None or len(ctx.problems) > before:
        return None
    exprs = tuple(e for e in inputs if e is not None)
    deps = references(*exprs, gate) & ctx.names
    read = compile_inputs(exprs, ctx)
    return ScriptNode(defn["id"], KIND, deps, gate, script, read, returns, to_feel(defn.get("fallback")))


def _compile_source(source: str, name: str, pointer: str, ctx: CompileContext) -> Script | None:
    sandbox: Sandbox = sandbox_for(ctx.services)
    try:
        return sandbox.compile(source, name)
    except ScriptError as exc:
        where = f" (line {exc.line})" if exc.line is not None else ""
        ctx.problems.append(Problem(pointer, f"{exc.detail}{where}"))
        return None
