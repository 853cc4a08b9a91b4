"""The load harness at toy scale, so it does not rot: it must produce a well-formed report.

No timings are asserted (benchmarks/RESULTS.md holds the numbers); only the report's shape.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import loadtest

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")]


def test_load_harness_reports(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["--guests", "300", "--duration", "1", "--warmup", "1", "--connections", "4", "--fractions", "0.1"]
    assert loadtest.main([*args, "--workers", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for target in ("floor", "decide"):
        sat = report[target]["saturation"]
        assert sat["requests"] > 0 and sat["non2xx"] == 0
        (fixed,) = report[target]["fixed_rate"]
        assert fixed["sent"] > 0 and fixed["errors"] == 0 and fixed["timeouts"] == 0
        assert {"p50_ms", "p90_ms", "p99_ms", "p99.9_ms"} <= fixed.keys()
    assert report["ratios"]["decide_over_floor_throughput"] > 0
    assert {n["node"] for n in report["nodes"]} >= {"segment", "candidates", "answer"}
    assert "events" in report
