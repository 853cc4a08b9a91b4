"""The performance budget (benchmarks/gate.py): a realistic decision costs at most so many instructions, counted by
valgrind — steady to ±0.5 %, unlike any timing on a shared machine."""

from __future__ import annotations

import shutil

import pytest

from benchmarks import gate


def test_the_verdict_passes_at_the_budget_and_fails_past_it() -> None:
    ok, line = gate.verdict(1_000_000, budget=1_000_000)
    assert ok and line == "a realistic decision: 1,000,000 instructions (within the budget of 1,000,000)"
    ok, line = gate.verdict(1_000_001, budget=1_000_000)
    assert not ok and "OVER the budget" in line


@pytest.mark.e2e
@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed (make test installs it as root)"
)
def test_a_realistic_decision_keeps_its_instruction_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARBITER_REDIS_URL", "ARBITER_PUBLIC_KEY", "ARBITER_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)  # the in-process app sets them; restored after the test
    instructions = gate.measure(guests=2_000)
    ok, line = gate.verdict(instructions)
    assert instructions > 300_000  # a whole decision was counted (a floor request alone is ~520 k)
    assert ok, line
