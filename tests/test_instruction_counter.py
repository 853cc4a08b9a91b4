"""The instruction counter's timing-neutral model copy (benchmarks/instructions.py); no valgrind needed."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import instructions

SCENARIO = Path(instructions.__file__).parent / "scenario" / "realistic.json"


def test_timing_neutral_relaxes_only_the_clocks() -> None:
    # What valgrind's slowdown would otherwise change: the deadline, external calls' timeouts, retries and
    # cache lifetimes. Everything else (and the original) stays as it was.
    scenario = json.loads(SCENARIO.read_text())
    neutral = instructions.timing_neutral(scenario)
    assert neutral["deadline_ms"] == 10_000 and "deadline_ms" not in scenario
    externals = [n for n in neutral["nodes"] if n["kind"] == "external"]
    assert externals and all(
        (n["timeout_ms"], n["retries"], n["cache_ttl_s"]) == (10_000, 0, 86_400) for n in externals
    )
    assert [n for n in neutral["nodes"] if n["kind"] != "external"] == [
        n for n in scenario["nodes"] if n["kind"] != "external"
    ]
    assert next(n for n in scenario["nodes"] if n["kind"] == "external")["timeout_ms"] == 20
