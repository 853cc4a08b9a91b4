"""DMN TCK conformance: tiers A, A3 and B must pass in full; D may not fall below what it reaches today.

The TCK subset is data outside the repository (``../shared/dmn-tck`` or ``$ARBITER_TCK_DIR``); without it
these tests fail rather than skip, so a CI box that lost it is noticed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.tck import Report, default_tck_dir, main, run_tck

# Floors: raise them when support grows; a drop means a regression.
D_FLOOR = 267  # all of D_adapted_unary_tests
D_NOT_SFEEL_FLOOR = 84  # of 98; the rest need FEEL ranges as values ([[1..2], [3..4]])


@pytest.fixture(scope="module")
def tck_dir() -> Path:
    path = default_tck_dir()
    if not (path / "SUBSETS.csv").is_file():
        pytest.fail(f"DMN TCK subset not found at {path}: check out ../shared/dmn-tck or set ARBITER_TCK_DIR")
    return path


def _failures(report: Report) -> str:
    return "\n".join(f"{r.tier} {r.folder} {r.case_id}: {r.reason}" for r in report.failed)


@pytest.mark.parametrize("tier", ["A", "A3", "B"])
def test_tier_passes_in_full(tck_dir: Path, tier: str) -> None:
    report = run_tck(tck_dir, {tier})
    assert report.results, f"no cases for tier {tier}"
    assert not report.failed, _failures(report)


def test_tier_sizes(tck_dir: Path) -> None:
    counts = run_tck(tck_dir, {"A", "A3", "B"}).counts()
    assert counts == {"A": (51, 0), "A3": (9, 0), "B": (50, 0)}


def test_unary_test_tiers_hold_their_floor(tck_dir: Path) -> None:
    counts = run_tck(tck_dir, {"D", "D_not_sfeel"}).counts()
    assert counts["D"][0] >= D_FLOOR, counts
    assert counts["D_not_sfeel"][0] >= D_NOT_SFEEL_FLOOR, counts


def test_main_prints_a_table_and_summary(tck_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tck_dir), "--tier", "A3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 + 2
    assert lines[0].split()[:2] == ["A3", "0017-tableTests"] and " PASS" in lines[0]
    assert lines[-2:] == ["tck A3: 9 passed, 0 failed", "tck: 9 passed, 0 failed"]


def test_main_reports_failures_with_exit_status(tck_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tck_dir), "--tier", "C", "--failures-only"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "PASS" not in out


def test_main_without_tck_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path)]) == 2
    assert "no SUBSETS.csv" in capsys.readouterr().err
