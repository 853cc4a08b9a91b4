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

from collections.abc import Iterable, Mapping
from typing import Any

from engine.feel.codegen import generate
from engine.feel.compiler import Expression, compile_node, references
from engine.feel.convert import coerce, to_feel, to_json
from engine.feel.lexer import complex_names
from engine.feel.parser import parse_expression, parse_unary_tests
from engine.feel.partial import bind
from engine.feel.syntax import AnyTest
from engine.feel.unary import UnaryTests, compile_tests, equality_literals, numeric_interval

__all__ = ["Expression", "UnaryTests", "coerce", "compile_expression", "compile_unary_tests", "to_feel", "to_json"]


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
    code = compile_node(tree, text)
    fn = code.fn if code.constant else (generate(tree, text) or code.fn)
    return Expression(text, references(tree), fn, code.constant, code.value)


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
