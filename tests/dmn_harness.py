"""Evaluate an imported DMN model in tests, without the engine's API.

The one place DMN tests reach for an executor: ``engine.tck.evaluate_model``, which compiles the model with
``engine.model.compile_model`` and runs the engine's plan, coercing inputs by their DMN item definitions
first. If the engine's way of running a DMN model changes, change it here and every DMN test follows.
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
