"""Syntax tree → Python closures, once, at publish time.

Each node becomes a ``Code``: a closure ``fn(scope) -> value`` plus, when the node does not depend on the
scope, its value computed here — so ``1 + 2``, ``date("2020-01-01")`` or ``-5`` cost a constant load at
request time. Closures never raise on FEEL type errors (the ops are total); :class:`Expression` still
guards the call because a FEEL evaluation must never raise out of ``expr(scope)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.errors import FeelError
from engine.feel import ops
from engine.feel import syntax as s
from engine.feel.builtins import BUILTINS, IMPURE
from engine.feel.scope import Bound, member, reads_input, references
from engine.feel.values import as_int

Scope = Mapping[str, Any]
Fn = Callable[[Scope], Any]
TestFn = Callable[[Any, Scope], bool]


class Code(NamedTuple):
    fn: Fn
    constant: bool = False
    value: Any = None


def constant(value: Any) -> Code:
    if isinstance(value, list):
        items: list[Any] = value

        def fresh(_s: Scope) -> list[Any]:
            return list(items)  # a fresh list each time: callers may keep or extend results

        return Code(fresh, True, value)

    def const(_s: Scope) -> Any:
        return value

    return Code(const, True, value)


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled FEEL expression. Call it with a scope mapping names to values."""

    source: str
    references: frozenset[str]
    fn: Fn = field(repr=False, compare=False)
    """The expression as a plain function that never raises: hot loops call it to skip ``__call__``."""
    is_constant: bool = False
    value: Any = None

    def __call__(self, scope: Scope) -> Any:
        try:
            return self.fn(scope)
        except Exception:  # a FEEL evaluation yields null rather than raising
            return None


def guarded(fn: Fn) -> Fn:
    """``fn`` with any exception turned into null, FEEL's answer to a faulty evaluation."""

    def safe(scope: Scope) -> Any:
        try:
            return fn(scope)
        except Exception:
            return None

    return safe


def _path(node: s.Path) -> Code | None:
    """Flatten ``a.b.c`` on a name into one closure: the common case for ``guest.attributes.tier``."""
    keys: list[str] = []
    base: s.Expr = node
    while isinstance(base, s.Path):
        keys.append(base.key)
        base = base.base
    if not isinstance(base, s.Name):
        return None
    root = base.name
    keys.reverse()
    if len(keys) == 1:
        k = keys[0]

        def get1(sc: Scope) -> Any:
            v = sc.get(root)
            return v.get(k) if type(v) is dict else member(v, k)

        return Code(get1)
    path = tuple(keys)

    def get_path(sc: Scope) -> Any:
        v = sc.get(root)
        for k in path:
            v = v.get(k) if type(v) is dict else member(v, k)
        return v

    return Code(get_path)


ARITHMETIC = {"+": ops.add, "-": ops.subtract, "*": ops.multiply, "/": ops.divide, "**": ops.power}


def compare_fn(op: str) -> Callable[[Any, Any], bool | None]:
    if op == "=":
        return ops.equal
    if op == "!=":

        def not_equal(a: Any, b: Any) -> bool | None:
            e = ops.equal(a, b)
            return None if e is None else not e

        return not_equal
    return ops.ordered(op)


def compile_node(node: s.Expr, text: str) -> Code:
    return _compile(node, text)


def _fold(code: Code, children: list[Code]) -> Code:
    """Evaluate now when every input is a constant."""
    if all(c.constant for c in children):
        return constant(code.fn({}))
    return code


def _compile(node: s.Expr, text: str) -> Code:  # noqa: C901 - one dispatch over the node kinds
    match node:
        case s.Literal(value):
            return constant(value)
        case s.Name(name):
            return Code(lambda sc: sc.get(name))
        case s.Path(base, key):
            flat = _path(node)
            if flat is not None:
                return flat
            b = _compile(base, text)
            return _fold(Code(lambda sc: member(b.fn(sc), key)), [b])
        case s.Filter(base, cond):
            return _filter(_compile(base, text), cond, text)
        case s.Call(name, args):
            return _call(name, [_compile(a, text) for a in args], text)
        case s.Negate(operand):
            o = _compile(operand, text)
            return _fold(Code(lambda sc: ops.negate(o.fn(sc))), [o])
        case s.Arithmetic(op, left, right):
            return _binary(ARITHMETIC[op], _compile(left, text), _compile(right, text))
        case s.Comparison(op, left, right):
            return _binary(compare_fn(op), _compile(left, text), _compile(right, text))
        case s.Logical(op, left, right):
            return _logical(op, _compile(left, text), _compile(right, text))
        case s.If(cond, then, otherwise):
            c, t, e = _compile(cond, text), _compile(then, text), _compile(otherwise, text)
            if c.constant:
                return t if c.value is True else e
            return Code(lambda sc: t.fn(sc) if c.fn(sc) is True else e.fn(sc))
        case s.Between(value, low, high):
            v, lo, hi = _compile(value, text), _compile(low, text), _compile(high, text)
            return _fold(Code(lambda sc: between(v.fn(sc), lo.fn(sc), hi.fn(sc))), [v, lo, hi])
        case s.In(value, tests):
            from engine.feel.unary import compile_tests

            v = _compile(value, text)
            matcher = compile_tests(tests, text)
            return Code(lambda sc: matcher(v.fn(sc), sc))
        case s.ListLiteral(items):
            fns = [_compile(i, text) for i in items]
            if all(f.constant for f in fns):
                return constant([f.value for f in fns])
            item_fns = tuple(f.fn for f in fns)
            return Code(lambda sc: [f(sc) for f in item_fns])
        case s.ContextLiteral(entries):
            return _context(entries, text)
    raise FeelError(f"cannot compile {type(node).__name__}", source=text)


def _binary(fn: Callable[[Any, Any], Any], lc: Code, rc: Code) -> Code:
    """``fn(left, right)``; a constant operand is captured as a value, not called as a closure per request
    (the offers node's folded conditions are mostly ``<constant> op <path>``)."""
    if lc.constant and rc.constant:
        return constant(fn(lc.value, rc.value))
    lf, rf = lc.fn, rc.fn
    if rc.constant:
        rv = rc.value
        return Code(lambda sc: fn(lf(sc), rv))
    if lc.constant:
        lv = lc.value
        return Code(lambda sc: fn(lv, rf(sc)))
    return Code(lambda sc: fn(lf(sc), rf(sc)))


def _boolean(code: Code) -> Code:
    """``x and true`` / ``x or false``: x itself when it is a boolean, else null (FEEL's connectives)."""
    f = code.fn

    def as_bool(sc: Scope) -> bool | None:
        v = f(sc)
        return v if v is True or v is False else None

    return Code(as_bool)


def and3(a: Any, b: Any) -> bool | None:
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return None


_GE, _LE = ops.ordered(">="), ops.ordered("<=")


def between(x: Any, low: Any, high: Any) -> bool | None:
    """``x between low and high``."""
    return and3(_GE(x, low), _LE(x, high))


def index(items: Any, position: Any) -> Any:
    """``items[position]``: 1-based, negative from the end, null out of range."""
    i = as_int(position)
    if not isinstance(items, list) or i is None or i == 0 or abs(i) > len(items):
        return None
    return items[i - 1] if i > 0 else items[i]


def item_scope(item: Any) -> dict[str, Any]:
    """The names a filter condition binds for one item: its fields (if it is a context) and ``item``."""
    return {**item, "item": item} if isinstance(item, Mapping) else {"item": item}


def _or(a: Any, b: Any) -> bool | None:
    if a is True or b is True:
        return True
    if a is False and b is False:
        return False
    return None


def _logical(op: str, lf: Code, rf: Code) -> Code:
    # A constant that decides the result folds the whole connective, whatever the other side is:
    # in FEEL's three-valued logic false and x = false, true or x = true.
    decisive = op == "or"
    if (lf.constant and lf.value is decisive) or (rf.constant and rf.value is decisive):
        return constant(decisive)
    if lf.constant and lf.value is (not decisive) and not rf.constant:
        return _boolean(rf)
    if rf.constant and rf.value is (not decisive) and not lf.constant:
        return _boolean(lf)
    if op == "and":

        def conj(sc: Scope) -> bool | None:
            a = lf.fn(sc)
            if a is False:
                return False
            return and3(a, rf.fn(sc))

        return _fold(Code(conj), [lf, rf])

    def disj(sc: Scope) -> bool | None:
        a = lf.fn(sc)
        if a is True:
            return True
        return _or(a, rf.fn(sc))

    return _fold(Code(disj), [lf, rf])


def _call(name: str, args: list[Code], text: str) -> Code:
    spec = BUILTINS.get(name)
    if spec is None:
        raise FeelError(f"unknown function '{name}'", source=text, position=text.find(name))
    fn, lo, hi = spec
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}" if hi < 99 else f"at least {lo}"
        raise FeelError(
            f"function '{name}' takes {want} argument(s), got {len(args)}", source=text, position=text.find(name)
        )
    arg_fns = tuple(a.fn for a in args)

    def call(sc: Scope) -> Any:
        try:
            return fn(*[f(sc) for f in arg_fns])
        except Exception:  # a built-in given the wrong kinds of value yields null
            return None

    if name in IMPURE:
        return Code(call)
    return _fold(Code(call), args)


def _filter(base: Code, cond: s.Expr, text: str) -> Code:
    c = _compile(cond, text)
    by_index = not isinstance(cond, (s.Comparison, s.Logical, s.In, s.Between)) and not (
        isinstance(cond, s.Literal) and isinstance(cond.value, bool)
    )

    if by_index:
        return Code(lambda sc: index(base.fn(sc), c.fn(sc)))

    def keep(sc: Scope) -> Any:
        items = base.fn(sc)
        if items is None:
            return None
        if not isinstance(items, list):
            items = [items]
        out = []
        for item in items:
            if c.fn(Bound(item_scope(item), sc)) is True:
                out.append(item)
        return out

    return Code(keep)


def _context(entries: tuple[tuple[str, s.Expr], ...], text: str) -> Code:
    compiled = [(k, _compile(e, text)) for k, e in entries]
    if all(c.constant for _, c in compiled):
        return constant({k: c.value for k, c in compiled})
    pairs = tuple((k, c.fn) for k, c in compiled)

    def build(sc: Scope) -> dict[str, Any]:
        out: dict[str, Any] = {}
        inner = Bound(out, sc)  # later entries may read earlier ones: {a: 1, b: a + 1}
        for k, f in pairs:
            out[k] = f(inner)
        return out

    return Code(build)


__all__ = ["Bound", "Code", "Expression", "compile_node", "member", "reads_input", "references"]
