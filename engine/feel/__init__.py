"""FEEL (DMN's expression language): S-FEEL plus the simple FEEL that decision tables meet in practice.

Compile once, evaluate many::

    expr = compile_expression("Applicant Age >= 18 and guest.attributes.tier = \\"gold\\"",
                              names={"Applicant Age", "guest"})
    expr({"Applicant Age": 20, "guest": {"attributes": {"tier": "gold"}}})  # True

    tests = compile_unary_tests("[18..65)")
    tests.matches(30, {})  # True

Numbers are ``Decimal`` with DMN's 34-digit precision; type errors evaluate to null (None) and never raise.
Syntax errors raise :class:`engine.errors.FeelError` with the position of the offending token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.feel.codegen import generate
from engine.feel.compiler import Expression, compile_node, guarded, references
from engine.feel.convert import coerce, to_feel, to_json
from engine.feel.lexer import complex_names
from engine.feel.parser import parse_expression, parse_unary_tests
from engine.feel.partial import bind
from engine.feel.syntax import (
    AnyTest,
    Arithmetic,
    Between,
    Call,
    Comparison,
    Filter,
    If,
    ListLiteral,
    Literal,
    Logical,
    Negate,
    Path,
)
from engine.feel.unary import UnaryTests, compile_tests, equality_literals, numeric_interval

__all__ = [
    "Expression",
    "UnaryTests",
    "coerce",
    "compile_conjuncts",
    "compile_list",
    "compile_together",
    "compile_expression",
    "compile_unary_tests",
    "to_feel",
    "to_json",
]


def _names(names: Iterable[str]) -> frozenset[str]:
    return complex_names(names if isinstance(names, frozenset) else frozenset(names))


def compile_expression(
    text: str, *, names: Iterable[str] = (), bindings: Mapping[str, Any] | None = None
) -> Expression:
    """Compile a FEEL expression. ``names`` are the names in scope, needed to read multi-word names;
    ``bindings`` are names whose values are known now (partial evaluation: they fold into constants)."""
    tree = parse_expression(text, _names(names))
    if bindings:
        tree = bind(tree, bindings)
    return _expression(tree, text)


def compile_conjuncts(
    text: str, *, names: Iterable[str] = (), bindings: Mapping[str, Any] | None = None
) -> list[tuple[str, Any, Expression]] | None:
    """Compile a condition as its top-level ``and`` operands, those that fold to true dropped.

    The condition is true exactly when every operand is (FEEL's three-valued ``and`` is true only then), so
    a caller testing many conditions can evaluate an operand they share once: each comes with a canonical
    key (its syntax tree with constants folded), equal for equal operands. None when an operand folds to anything but
    true: the condition can never hold.
    """
    tree = parse_expression(text, _names(names))
    if bindings:
        tree = bind(tree, bindings)
    out = []
    for operand in _conjuncts(tree):
        expr = _expression(operand, text)
        if expr.is_constant:
            if expr.value is not True:
                return None
            continue
        out.append((repr(_folded(operand, text)), operand, expr))
    return out


def compile_list(texts: Sequence[str], *, names: Iterable[str] = ()) -> Expression:
    """Several FEEL expressions as one function returning their values as a list (see
    :func:`compile_together`, which it shares its failure rule with)."""
    scope_names = _names(names)
    return compile_together([parse_expression(t, scope_names) for t in texts], "; ".join(texts))


def compile_together(trees: Sequence[Any], text: str) -> Expression:
    """One function computing the values of several syntax trees (from :func:`compile_conjuncts`) as a
    list: each path they share is read once, and it is one call instead of one per tree. If anything in
    it raises, the whole call yields null (the generated function's guard): callers then evaluate the
    trees one by one, so a failing tree never takes the others with it."""
    return _expression(ListLiteral(tuple(trees)), text)


_FOLDABLE = (Path, Filter, Call, Negate, Arithmetic, Comparison, Logical, If, Between, ListLiteral)


def _conjuncts(tree: Any) -> list[Any]:
    if isinstance(tree, Logical) and tree.op == "and":
        return _conjuncts(tree.left) + _conjuncts(tree.right)
    return [tree]


def _expression(tree: Any, text: str) -> Expression:
    code = compile_node(tree, text)
    fn = code.fn if code.constant else (generate(tree, text) or guarded(code.fn))
    return Expression(text, references(tree), fn, code.constant, code.value)


def _folded(tree: Any, text: str) -> Any:
    """``tree`` with every constant subtree replaced by its value: the bound offer a path was read from
    disappears, so ``offer.min_rank <= x`` for two offers of rank 2 becomes the same ``2 <= x``. Kinds not
    listed keep their bound form (less sharing, never a wrong one)."""
    code = compile_node(tree, text)
    if code.constant:
        return Literal(code.value)
    if isinstance(tree, _FOLDABLE):
        parts = {f.name: _folded_part(getattr(tree, f.name), text) for f in dataclasses.fields(tree)}
        return dataclasses.replace(tree, **parts)
    return tree


def _folded_part(part: Any, text: str) -> Any:
    if isinstance(part, str):  # an operator, a key, a function name
        return part
    if isinstance(part, tuple):  # arguments, list items
        return tuple(_folded(p, text) for p in part)
    return _folded(part, text)


def compile_unary_tests(text: str, *, names: Iterable[str] = ()) -> UnaryTests:
    """Compile a decision-table input entry (``< 18``, ``[1..10]``, ``"a","b"``, ``not("x")``, ``-``)."""
    tests = parse_unary_tests(text, _names(names))
    wildcard = len(tests) == 1 and isinstance(tests[0], AnyTest)
    if wildcard:
        return UnaryTests(text, frozenset(), True, compile_tests(tests, text))
    return UnaryTests(
        text,
        references(tests),
        False,
        compile_tests(tests, text),
        equality_literals(tests, text),
        numeric_interval(tests, text),
    )
