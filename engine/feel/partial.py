"""Partial evaluation: bind names known at publish time into a syntax tree before it is compiled.

An offer's attributes never change between requests, so ``offer.min_rank <= tier.rank`` compiled with the
offer bound becomes ``3 <= tier.rank``, and ``offer.channel = "any" or …`` folds to ``true`` outright.
Binding rewrites ``Name`` nodes into ``Literal`` nodes; the compiler's constant folding does the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.feel import syntax as s
from engine.feel.convert import to_feel


def bind(node: Any, bindings: Mapping[str, Any]) -> Any:
    """A copy of ``node`` with every free ``Name`` in ``bindings`` replaced by its (FEEL) value."""
    if isinstance(node, s.Name):
        return s.Literal(to_feel(bindings[node.name])) if node.name in bindings else node
    if isinstance(node, s.Filter):
        # Inside a filter condition the item's own fields shadow outer names: bind only the base.
        return dataclasses.replace(node, base=bind(node.base, bindings))
    if isinstance(node, tuple):
        return tuple(bind(n, bindings) for n in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {f.name: bind(getattr(node, f.name), bindings) for f in dataclasses.fields(node)}
        return dataclasses.replace(node, **changes)
    return node
