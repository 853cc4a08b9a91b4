"""Every example model in models/ compiles and passes its own embedded test cases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.cli import split_input
from engine.model import compile_model, parse_document
from tests.conftest import ROOT

MODEL_FILES = sorted(p for p in (ROOT / "models").iterdir() if p.suffix in (".json", ".yaml", ".yml", ".dmn"))


def _uses_experiments(path: Path) -> bool:
    return any(n.get("kind") == "experiment" for n in parse_document(path.read_bytes()).get("nodes", []))


# Models with an experiment node choose an arm through a running experiments feature (Redis or embedded
# ledger, seeded experiments): tests/test_experiments_api.py runs their cases against a live app instead.
CASES = [
    pytest.param(path, case, id=f"{path.stem}: {case.get('name', i)}")
    for path in MODEL_FILES
    if not _uses_experiments(path)
    for i, case in enumerate(parse_document(path.read_bytes()).get("tests", []))
]


def test_experiment_examples_are_covered_elsewhere() -> None:
    covered = (ROOT / "tests" / "test_experiments_api.py").read_text()
    for path in MODEL_FILES:
        if _uses_experiments(path):
            assert path.name in covered, f"{path.name}'s cases run nowhere"


def test_every_example_has_test_cases() -> None:
    assert MODEL_FILES
    for path in MODEL_FILES:
        if path.suffix != ".dmn":
            assert parse_document(path.read_bytes()).get("tests"), f"{path.name} has no test cases"


@pytest.mark.parametrize(("path", "case"), CASES)
def test_example_case(path: Path, case: dict) -> None:
    plan = compile_model(parse_document(path.read_bytes()), key=path.stem)
    guest, context = split_input(plan, case.get("input", {}))
    # Async plans (external calls) run without connections here, so their calls take the fallbacks.
    result = asyncio.run(plan.evaluate_async(guest, context, 1000)) if plan.is_async else plan.evaluate(guest, context)
    assert result.errors == []
    assert result.outputs == case["expect"]


def test_hit_policies_covered_by_examples() -> None:
    policies = set()
    for path in MODEL_FILES:
        for node in parse_document(path.read_bytes()).get("nodes", []):
            if node.get("kind") == "table":
                policies.add((node["hit_policy"], node.get("aggregation")))
    names = {p for p, _ in policies} | {f"COLLECT {a}" for _, a in policies if a}
    assert {
        "UNIQUE",
        "ANY",
        "PRIORITY",
        "FIRST",
        "RULE ORDER",
        "OUTPUT ORDER",
        "COLLECT",
        "C+",
        "COLLECT COUNT",
        "C<",
        "C>",
    } <= names
