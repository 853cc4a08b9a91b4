"""Model lifecycle rules: draft → test (shadow) → production → archived, and rollback.

Pure functions over a model's pointers and version states, shared by both stores so the rules are
written once; each store applies the result atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import BadRequest, Conflict, NotFound
from engine.store.base import MODEL_STATES, ModelPointers


@dataclass(frozen=True, slots=True)
class Transition:
    pointers: ModelPointers
    states: dict[int, str]
    """Only the versions whose state changes."""


def transition(pointers: ModelPointers, states: dict[int, str], version: int, state: str) -> Transition:
    """Compute the effect of moving ``version`` to ``state``.

    Invariants: at most one production and one test version; a production version is never archived or
    shadowed directly (publish or roll back another version first) so a model never loses its answer.
    """
    if state not in MODEL_STATES:
        raise BadRequest(f"unknown state '{state}'; one of {', '.join(MODEL_STATES)}", pointer="/state")
    current = states.get(version)
    if current is None:
        raise NotFound(f"version {version} does not exist")
    production, test, history = pointers.production, pointers.test, list(pointers.history)
    changes: dict[int, str] = {}
    if state == current:
        return Transition(pointers, changes)
    if current == "production":
        raise Conflict(f"version {version} serves production; publish or roll back to another version first")
    if state == "production":
        if production is not None:
            changes[production] = "archived"
        production = version
        history.append(version)
        if test == version:
            test = None
    elif state == "test":
        if test is not None:
            changes[test] = "draft"
        test = version
    elif test == version:
        test = None
    changes[version] = state
    return Transition(ModelPointers(production, test, tuple(history), pointers.latest), changes)


def rollback_target(pointers: ModelPointers) -> int:
    """The version that served production before the current one."""
    for v in reversed(pointers.history):
        if v != pointers.production:
            return v
    raise Conflict("no earlier production version to roll back to")
