"""Syntax tree → Python source → one function per expression, compiled once at publish time.

The closure compiler (:mod:`engine.feel.compiler`) turns every syntax node into a Python call at request
time; on the benchmark scenario that was ~890 Python calls per evaluation. Here a whole expression becomes
one ``def`` whose body is a single Python expression: paths, comparisons with constants, connectives,
``if`` and filters are inlined, and only the FEEL operators that really need code (arithmetic, built-ins,
comparisons of mixed kinds) are called — the very same total helpers the closure compiler calls, so the
two can only agree. Constant folding is the closure compiler's: a node it folds is emitted as its value.

Names resolve lexically where FEEL allows it — an entry of an enclosing context literal is a Python
variable — and dynamically where it does not: inside a filter an item's own fields shadow outer names, so
each name read there tests the item first, exactly as ``{**item, "item": item}`` over the scope did, without
building that dict for every item. Anything this generator does not inline (``in`` tests) runs as its
closure, given the scope it would have seen. Source Python cannot compile (absurd nesting) falls back to
the closures entirely.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.feel import ops
from engine.feel import syntax as s
from engine.feel.builtins import BUILTINS, IMPURE
from engine.feel.compiler import (
    ARITHMETIC,
    Code,
    Fn,
    Scope,
    and3,
    between,
    compare_fn,
    compile_node,
    index,
    item_scope,
)
from engine.feel.scope import Bound, member, references, walk
from engine.feel.unary import compile_tests
from engine.feel.values import as_int


@dataclass(frozen=True, slots=True)
class _Entries:
    """Names bound by the earlier entries of an enclosing context literal → their Python variables."""

    names: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Item:
    """A filter's item, in a Python variable; its fields shadow outer names."""

    var: str


_Env = tuple[_Entries | _Item, ...]
"""Innermost frame first."""

_PLACEHOLDER = re.compile("\x00([0-9]+)\x00")
_ORDERING = ("<", "<=", ">", ">=")
_EXACT = "(type({t}) is int or type({t}) is Decimal)"
_SHARED: dict[str, Any] = {
    "Decimal": Decimal,
    "Mapping": Mapping,
    "_UNSET": object(),
    "_Bound": Bound,
    "_member": member,
    "_equal": ops.equal,
    "_negate": ops.negate,
    "_and": and3,
    "_between": between,
    "_index": index,
    "_item_scope": item_scope,
    "_has": lambda item, key: isinstance(item, Mapping) and key in item,
    **{f"_op{i}": fn for i, fn in enumerate(ARITHMETIC.values())},
    **{f"_cmp{i}": compare_fn(op) for i, op in enumerate(("=", "!=", *_ORDERING))},
}
_ARITH_NAME = {op: f"_op{i}" for i, op in enumerate(ARITHMETIC)}
_CMP_NAME = {op: f"_cmp{i}" for i, op in enumerate(("=", "!=", *_ORDERING))}


def _guarded(fn: Any) -> Any:
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # a built-in given the wrong kinds of value yields null (as the closures do)
            return None

    return call


class _Generator:
    def __init__(self, text: str) -> None:
        self.text = text
        self.namespace: dict[str, Any] = dict(_SHARED)
        self.count = 0
        self.risky = False
        self.shared: dict[tuple[str, ...], str] = {}
        """Path from the scope (root name and keys) → the variable that holds it once read."""
        self.computed: dict[str, str] = {}
        """A shareable sub-expression (its tree's repr) → the variable that holds it once computed."""
        self.reads: list[tuple[str, str]] = []
        """Each path read from the scope and shareable sub-expression, in order: its shared variable and its code."""
        """Does the code generated since this was last cleared contain a part that may raise?"""

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def value(self, v: Any) -> str:
        name = self.fresh("_k")
        self.namespace[name] = v
        return name

    def expr(self, node: s.Expr, env: _Env) -> str:
        code = compile_node(node, self.text)
        if code.constant:
            v = self.value(code.value)
            return f"list({v})" if isinstance(code.value, list) else v  # a fresh list, as the closures give
        source = self.node(node, code, env)
        if not self.shareable(node, env):
            return source
        # The same aggregate or comparison twice (``count(guest.orders)`` three times and ``max(guest.orders.at)``
        # twice in the benchmark's recency) is computed once per evaluation, as a path is read once (see path):
        # recency 85.7 k → 79.3 k instructions per evaluation.
        var = self.computed.setdefault(repr(node), self.fresh("_c"))
        self.reads.append((var, source))
        return f"\x00{len(self.reads) - 1}\x00"

    def shareable(self, node: s.Expr, env: _Env) -> bool:
        """Is ``node`` a pure scalar-valued computation whose every name reads the scope here? Then every
        occurrence has the same value in one evaluation (a list is never shared: a caller may keep it)."""
        if isinstance(node, s.Call):
            if node.function not in _SCALAR_CALLS:
                return False
        elif not isinstance(node, s.Comparison):
            return False
        if any(isinstance(f, _Item) for f in env) or not _pure(node):
            return False
        return all(self.name(n, env) == _read(n) for n in references(node))

    def node(self, node: s.Expr, code: Code, env: _Env) -> str:  # noqa: C901 - one dispatch over the node kinds
        match node:
            case s.Name(name):
                return self.name(name, env)
            case s.Path(base, key):
                return self.path(node, base, key, env)
            case s.Filter(base, cond):
                return self.filter(base, cond, env)
            case s.Call(name, args):
                outer_risky, self.risky = self.risky, False
                sources = [self.expr(a, env) for a in args]
                risky, self.risky = self.risky, outer_risky
                if risky:  # the closure's guard covers the evaluation of its arguments too: keep it
                    return f"{self.value(code.fn)}({self.scope(env)})"
                return self.call(name, sources)
            case s.Negate(operand):
                return f"_negate({self.expr(operand, env)})"
            case s.Arithmetic(op, left, right):
                return f"{_ARITH_NAME[op]}({self.expr(left, env)}, {self.expr(right, env)})"
            case s.Comparison(op, left, right):
                return self.comparison(op, left, right, env)
            case s.Logical(op, left, right):
                return self.logical(op, left, right, env)
            case s.If(cond, then, otherwise):
                c = compile_node(cond, self.text)
                if c.constant:
                    return self.expr(then if c.value is True else otherwise, env)
                return f"({self.expr(then, env)} if {self.expr(cond, env)} is True else {self.expr(otherwise, env)})"
            case s.Between(value, low, high):
                return f"_between({self.expr(value, env)}, {self.expr(low, env)}, {self.expr(high, env)})"
            case s.In(value, tests):
                self.risky = True
                matcher = self.value(compile_tests(tests, self.text))
                return f"{matcher}({self.expr(value, env)}, {self.scope(env)})"
            case s.ListLiteral(items):
                return "[" + ", ".join(self.expr(i, env) for i in items) + "]"
            case s.ContextLiteral(entries):
                return self.context(entries, env)
        self.risky = True
        return f"{self.value(code.fn)}({self.scope(env)})"

    def path(self, node: s.Path, base: s.Expr, key: str, env: _Env) -> str:
        t, x = self.fresh("_t"), self.fresh("_x")
        k = repr(key)
        # member() inlined for a context and for a list of contexts (``guest.orders.total``).
        plain = (
            f"({t}.get({k}) if type({t} := {self.expr(base, env)}) is dict else "
            f"([{x}.get({k}) if type({x}) is dict else _member({x}, {k}) for {x} in {t}] if type({t}) is list "
            f"else _member({t}, {k})))"
        )
        chain = _chain(node)
        if chain is None or any(isinstance(f, _Item) for f in env) or self.name(chain[0], env) != _read(chain[0]):
            return plain
        # The same path read twice from the scope (``guest.orders`` six times in the benchmark's recency) is
        # read once per evaluation: the first read to run stores it. Whether a path is shared is only
        # known once the whole expression is generated, so each read is a placeholder until then.
        var = self.shared.setdefault(chain, self.fresh("_p"))
        self.reads.append((var, plain))
        return f"\x00{len(self.reads) - 1}\x00"

    def resolve(self, source: str) -> str:
        """Replace the placeholders of path reads and shareable sub-expressions: a shared variable where read
        more than once."""
        uses = Counter(var for var, _ in self.reads)

        def read(m: re.Match[str]) -> str:
            var, plain = self.reads[int(m[1])]
            plain = _PLACEHOLDER.sub(read, plain)
            return f"({var} if {var} is not _UNSET else ({var} := {plain}))" if uses[var] > 1 else plain

        return _PLACEHOLDER.sub(read, source)

    def name(self, name: str, env: _Env) -> str:
        for i, frame in enumerate(env):
            if isinstance(frame, _Entries):
                if name in frame.names:
                    return frame.names[name]
                continue
            if name == "item":
                return frame.var
            v = frame.var
            outer = self.name(name, env[i + 1 :])
            return f"({v}[{name!r}] if ({name!r} in {v} if type({v}) is dict else _has({v}, {name!r})) else {outer})"
        return _read(name)

    def scope(self, env: _Env) -> str:
        """The scope mapping a closure would see here (only built for the rare nodes run as closures)."""
        out = "sc"
        for frame in reversed(env):
            if isinstance(frame, _Entries):
                local = "{" + ", ".join(f"{k!r}: {v}" for k, v in frame.names.items()) + "}"
            else:
                local = f"_item_scope({frame.var})"
            out = f"_Bound({local}, {out})"
        return out

    def filter(self, base: s.Expr, cond: s.Expr, env: _Env) -> str:
        b = self.expr(base, env)
        by_index = not isinstance(cond, (s.Comparison, s.Logical, s.In, s.Between)) and not (
            isinstance(cond, s.Literal) and isinstance(cond.value, bool)
        )
        if by_index:
            position = compile_node(cond, self.text)
            k = as_int(position.value) if position.constant else None
            if k:  # a constant position (``candidates[1]``): inline, as _index would answer it, and total
                t = self.fresh("_t")
                at = k - 1 if k > 0 else k
                return f"({t}[{at}] if isinstance({t} := {b}, list) and len({t}) >= {abs(k)} else None)"
            self.risky = True  # as_int of an infinite position raises
            return f"_index({b}, {self.expr(cond, env)})"
        items, item = self.fresh("_t"), self.fresh("_i")
        test = self.expr(cond, (_Item(item), *env))
        return (
            f"(None if ({items} := {b}) is None else "
            f"[{item} for {item} in ({items} if isinstance({items}, list) else [{items}]) if {test} is True])"
        )

    def call(self, name: str, args: list[str]) -> str:
        if name == "count":  # total, so no guard: len of a list
            t = self.fresh("_t")
            return f"(Decimal(len({t})) if isinstance({t} := {args[0]}, list) else None)"
        fn = self.value(_guarded(BUILTINS[name][0]))
        return f"{fn}({', '.join(args)})"

    def comparison(self, op: str, left: s.Expr, right: s.Expr, env: _Env) -> str:
        lc, rc = compile_node(left, self.text), compile_node(right, self.text)
        slow = _CMP_NAME[op]
        # A constant operand of a kind Python already compares as FEEL does (see ops.equal and ops.compare)
        # is compared inline; anything else goes through the total helper.
        if rc.constant or lc.constant:
            k, other, k_left = (
                (self.value(rc.value), left, False) if rc.constant else (self.value(lc.value), right, True)
            )
            kv = rc.value if rc.constant else lc.value
            t = self.fresh("_t")
            x = self.expr(other, env)
            a, b = (k, t) if k_left else (t, k)
            py_op = {"=": "==", "!=": "!="}.get(op, op)
            if type(kv) is Decimal:
                # A JSON float is compared as FEEL reads it, Decimal(repr(x)). When x differs from the
                # constant's nearest float, comparing the floats gives the same answer (rounding to the
                # nearest float is monotonic), without the conversion; equal ones and inf/nan take the
                # slow path. Measured on `orders[total > 150]`: ~3 calls less per item.
                kf = self.value(float(kv))
                fa, fb = (kf, t) if k_left else (t, kf)
                near = f"type({t}) is float and {t} != {kf} and {t} - {t} == 0.0"
                as_float = f"({fa} {py_op} {fb} if {near} else {slow}({a}, {b}))"
                exact = _EXACT.format(t=t).replace(t, f"({t} := {x})", 1)
                return f"({a} {py_op} {b} if {exact} else {as_float})"
            if type(kv) is str:
                return f"({a} {py_op} {b} if type({t} := {x}) is str else {slow}({a}, {b}))"
            return f"{slow}({k}, {x})" if k_left else f"{slow}({x}, {k})"
        return f"{slow}({self.expr(left, env)}, {self.expr(right, env)})"

    def logical(self, op: str, left: s.Expr, right: s.Expr, env: _Env) -> str:
        # Mirrors compiler._logical: a deciding constant was folded already; a neutral one leaves the other
        # side, which must still be a boolean.
        lc, rc = compile_node(left, self.text), compile_node(right, self.text)
        neutral = op == "and"
        t = self.fresh("_t")
        if lc.constant and lc.value is neutral:
            return f"({t} if ({t} := {self.expr(right, env)}) is True or {t} is False else None)"
        if rc.constant and rc.value is neutral:
            return f"({t} if ({t} := {self.expr(left, env)}) is True or {t} is False else None)"
        a, b = self.expr(left, env), self.expr(right, env)
        u = self.fresh("_t")
        if op == "and":
            return (
                f"(False if ({t} := {a}) is False else "
                f"(False if ({u} := {b}) is False else (True if {t} is True and {u} is True else None)))"
            )
        return (
            f"(True if ({t} := {a}) is True else "
            f"(True if ({u} := {b}) is True else (False if {t} is False and {u} is False else None)))"
        )

    def context(self, entries: tuple[tuple[str, s.Expr], ...], env: _Env) -> str:
        names: dict[str, str] = {}
        parts = []
        for key, e in entries:
            value = self.expr(e, (_Entries(dict(names)), *env))  # later entries read earlier ones
            var = self.fresh("_e")
            names[key] = var
            parts.append(f"{key!r}: ({var} := {value})")
        return "{" + ", ".join(parts) + "}"


_FUNCTION = """def _feel(sc):
    {unset}_UNSET
    try:
        return {body}
    except Exception:
        return None
"""


def _read(name: str) -> str:
    return f"sc.get({name!r})"


_SCALAR_CALLS = frozenset({"count", "sum", "mean", "min", "max"})
"""Built-ins whose value is never a list (nothing a caller could keep and change), so it may be shared."""


def _pure(node: Any) -> bool:
    """Does ``node`` call no impure built-in (``now()`` twice may differ)?"""
    return not any(isinstance(n, s.Call) and n.function in IMPURE for n in walk(node))


def _chain(node: s.Expr) -> tuple[str, ...] | None:
    """``a.b.c`` as ``("a", "b", "c")``; None when the path does not start at a name."""
    keys: list[str] = []
    while isinstance(node, s.Path):
        keys.append(node.key)
        node = node.base
    return (node.name, *reversed(keys)) if isinstance(node, s.Name) else None


def generate(tree: s.Expr, text: str) -> Fn | None:
    """A function ``fn(scope)`` equivalent to the closures of ``tree`` that never raises; None when the
    generated source does not compile (Python's parser has nesting limits the FEEL parser does not)."""
    gen = _Generator(text)
    try:
        body = gen.resolve(gen.expr(tree, ()))
        shared = {*gen.shared.values(), *gen.computed.values()}
        unset = "".join(f"{var} = " for var in sorted(shared) if var in body)
        source = _FUNCTION.format(unset=unset, body=body)
        exec(compile(source, f"<feel {text[:60]!r}>", "exec"), gen.namespace)  # noqa: S102 - our own source
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    fn: Fn = gen.namespace["_feel"]
    return fn


__all__ = ["Scope", "generate"]
