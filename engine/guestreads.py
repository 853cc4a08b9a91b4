"""What of a guest a decision needs: everything, or everything but its sessions' events and the experiment
assignments of experiments it does not choose in.

A guest's session events are most of its stored bytes (up to ``max_closed_session_events`` of closed sessions
plus the open ones'), and parsing them was a fifth of a decision's instructions on guests with two dozen of them
(benchmarks/RESULTS.md) for models that never read them. A model, or an experiment's targeting, can reach them
only through FEEL text: a path through ``events``, the whole ``guest`` or the whole ``guest.sessions`` handed to
something (a script input, a function, a context entry, an output). So the check is a scan of the definition's
strings, made at compile time, and it errs one way only: any string that *could* reach the events — the word
``events`` anywhere, ``guest`` or ``sessions`` not followed by ``.field`` — keeps them. Lua sources are not
scanned: a script sees the guest only through its inputs, which are FEEL and are scanned.

Assignments (one hash field per experiment, :data:`engine.store.redis.ASSIGNMENT_FIELD`) are checked the same way:
the word ``assignments`` anywhere, or the whole ``guest``, reads them all; otherwise a decision reads only the
entries of the experiments it chooses in (a fixed split keeps the arm its guest holds).
"""

from __future__ import annotations

import re
from typing import Any

_EVENTS = re.compile(r"\bevents\b")
_WHOLE = re.compile(r"\b(?:guest|sessions)\b(?!\s*\.\s*[^\W\d]\w*)")
"""``guest`` or ``sessions`` not followed by a ``.field``: the whole value goes somewhere, events and all."""
_SESSION_EVENTS = (_EVENTS, _WHOLE)
_ASSIGNMENTS = (re.compile(r"\bassignments\b"), re.compile(r"\bguest\b(?!\s*\.\s*[^\W\d]\w*)"))
_NOT_EVALUATED = frozenset({"name", "description", "tests"})
"""Top-level keys of a model or an experiment that decisions never evaluate: labels, and a model's test cases."""


def reads_session_events(definition: Any) -> bool:
    """Whether anything in a model's or an experiment's definition may read a guest's session events."""
    return _reads(definition, _SESSION_EVENTS)


def reads_assignments(definition: Any) -> bool:
    """Whether anything in a model's or an experiment's definition may read a guest's experiment assignments."""
    return _reads(definition, _ASSIGNMENTS)


def _reads(definition: Any, patterns: tuple[re.Pattern[str], ...]) -> bool:
    if not isinstance(definition, dict):
        return _reaches(definition, patterns)
    for key, value in definition.items():
        if key in _NOT_EVALUATED:
            continue
        if key == "nodes" and isinstance(value, list):
            if any(_reaches(_evaluated(node), patterns) for node in value):
                return True
        elif _reaches(value, patterns):
            return True
    return False


def _evaluated(node: Any) -> Any:
    """A node without its label, and a script node without its Lua (its inputs, FEEL, are scanned)."""
    if not isinstance(node, dict):
        return node
    skip = ("description", "source") if node.get("kind") == "script" else ("description",)
    return {k: v for k, v in node.items() if k not in skip}


def _reaches(value: Any, patterns: tuple[re.Pattern[str], ...]) -> bool:
    if isinstance(value, str):
        return any(p.search(value) for p in patterns)
    if isinstance(value, dict):
        return any(_reaches(v, patterns) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_reaches(v, patterns) for v in value)
    return False
