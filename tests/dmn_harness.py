"""Evaluate an imported DMN model in tests, without the engine's API.

The one place tests reach for an executor: it delegates to ``engine.tck.evaluate_model`` (the provisional
one, until the table and expression kinds are registered with ``engine.model``/``engine.plan``). Swap the
body of :func:`evaluate` for the real plan executor and every DMN test follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.dmn import dmn_to_model
from engine.tck import evaluate_model

CASES = Path(__file__).resolve().parent / "cases" / "dmn"


def load(name: str) -> dict[str, Any]:
    return dmn_to_model((CASES / name).read_bytes())


def evaluate(model: dict[str, Any], inputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Outputs by decision name and the errors of the decisions that failed."""
    return evaluate_model(model, inputs)
