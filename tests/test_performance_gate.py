"""The performance budget (benchmarks/gate.py): a realistic decision costs at most so many floor requests, in
instructions counted by valgrind — deterministic, unlike any timing on a shared machine."""

from __future__ import annotations

import shutil

import pytest

from benchmarks import gate


def test_the_verdict_passes_at_the_budget_and_fails_past_it() -> None:
    ok, line = gate.verdict(gate.Measured(decide=1_850_000, floor=1_000_000), budget=1.85)
    assert ok and "1.850× the floor (within the budget of 1.85×)" in line
    ok, line = gate.verdict(gate.Measured(decide=1_851_000, floor=1_000_000), budget=1.85)
    assert not ok and "OVER the budget" in line
    assert gate.Measured(decide=900.0, floor=500.0).ratio == pytest.approx(1.8)


@pytest.mark.e2e
@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed (make test installs it as root)"
)
def test_a_realistic_decision_keeps_its_instruction_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARBITER_REDIS_URL", "ARBITER_PUBLIC_KEY", "ARBITER_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)  # the in-process app sets them; restored after the test
    measured = gate.measure(guests=2_000)
    ok, line = gate.verdict(measured)
    # What the ratio stands for: both counts are whole requests (a floor request is half a million instructions).
    assert measured.floor > 100_000 and measured.decide > measured.floor
    assert ok, line
