"""Results statistics, tested by simulation with seeded generators and stated tolerances.

Each tolerance is at least four binomial standard deviations of the simulated quantity, so a correct
implementation fails with probability below 1e-4 for any seed; the seeds are fixed, so runs are repeatable.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import stats
from engine.bandit import Tally
from engine.experiments import compile_experiment
from engine.results import analyse

SEED = 20240611


def binary(n: int, conversions: int) -> Tally:
    return Tally(n, conversions, float(conversions), float(conversions))


def revenue(values: np.ndarray) -> Tally:
    return Tally(len(values), len(values), float(values.sum()), float((values**2).sum()))


def test_aa_two_proportion_false_positive_rate_is_nominal() -> None:
    rng = np.random.default_rng(SEED)
    runs, n = 4000, 2000
    a, b = rng.binomial(n, 0.1, runs), rng.binomial(n, 0.1, runs)
    rejections = sum(
        stats.two_proportion_z(binary(n, x), binary(n, y)).p_value < 0.05 for x, y in zip(a, b, strict=True)
    )
    # Nominal 5 %; sd over 4000 runs is 0.34 %: ±1.5 % is over four sd.
    assert abs(rejections / runs - 0.05) < 0.015


def test_aa_welch_false_positive_rate_is_nominal_on_skewed_revenue() -> None:
    rng = np.random.default_rng(SEED + 1)
    runs, n = 2000, 1000
    rejections = 0
    for _ in range(runs):
        x = rng.lognormal(3, 1, n) * rng.binomial(1, 0.2, n)
        y = rng.lognormal(3, 1, n) * rng.binomial(1, 0.2, n)
        rejections += stats.welch(revenue(x), revenue(y)).p_value < 0.05
    # sd over 2000 runs is 0.49 %: ±2 % is four sd.
    assert abs(rejections / runs - 0.05) < 0.02


def test_two_proportion_test_has_power_against_a_real_lift() -> None:
    rng = np.random.default_rng(SEED + 2)
    n = stats.min_sample_size("binary", binary(10_000, 1000), 0.1)
    assert n is not None
    hits = sum(
        stats.two_proportion_z(binary(n, rng.binomial(n, 0.10)), binary(n, rng.binomial(n, 0.11))).p_value < 0.05
        for _ in range(1000)
    )
    # Sized for 80 % power; sd over 1000 runs is 1.3 %.
    assert abs(hits / 1000 - 0.8) < 0.06


def test_min_sample_size_matches_the_textbook_value() -> None:
    # Baseline 10 %, +10 % relative, alpha 0.05 two-sided, power 0.8: 14,749 per arm (Fleiss, unpooled).
    assert stats.min_sample_size("binary", binary(100_000, 10_000), 0.1) == pytest.approx(14_749, rel=0.002)


def test_beta_credible_interval_covers_the_truth_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(SEED + 3)
    runs, n, p = 2000, 500, 0.07
    covered = 0
    for c in rng.binomial(n, p, runs):
        lo, hi = stats.credible_interval("binary", binary(n, int(c)))
        covered += lo <= p <= hi
    # sd over 2000 runs is 0.49 %; the discrete binomial makes coverage slightly conservative.
    assert 0.93 < covered / runs < 0.975


def test_srm_is_detected_when_planted_and_quiet_otherwise() -> None:
    rng = np.random.default_rng(SEED + 4)
    expected = stats.expected_exposures([(20_000, [0.5, 0.5])])
    planted = [10_400, 9_600]  # a 52/48 split where 50/50 was configured
    assert stats.srm(planted, expected).p_value < stats.SRM_ALPHA
    alarms = sum(
        stats.srm(list(rng.multinomial(20_000, [0.5, 0.5])), expected).p_value < stats.SRM_ALPHA for _ in range(2000)
    )
    # Expected 0.1 % false alarms: two in 2000; nine or more has probability below 1e-4.
    assert alarms < 9


def test_srm_uses_each_epochs_own_weights() -> None:
    rng = np.random.default_rng(SEED + 5)
    epochs = [(10_000, [0.5, 0.5]), (10_000, [0.9, 0.1]), (10_000, [0.2, 0.8])]
    observed = sum(rng.multinomial(n, w) for n, w in epochs)
    assert stats.srm(list(observed), stats.expected_exposures(epochs)).p_value > stats.SRM_ALPHA
    # Judged against the last epoch's weights alone, the same honest traffic would raise a false alarm.
    assert stats.srm(list(observed), stats.expected_exposures([(30_000, [0.2, 0.8])])).p_value < stats.SRM_ALPHA


def _fixed(**over: object):  # type: ignore[no-untyped-def]
    doc = {"status": "running", "arms": [{"id": "a"}, {"id": "b"}], "control": "a", "allocation": {"mode": "fixed"}}
    doc.update(over)
    return compile_experiment(doc, "ab")


def test_verdicts_winner_inconclusive_keep_running_and_srm() -> None:
    exp = _fixed()
    rng = np.random.default_rng(SEED + 6)
    weights = {"1": [0.5, 0.5]}

    def run(n: int, pa: float, pb: float, nb: int | None = None) -> dict:
        nb = n if nb is None else nb
        per_epoch = {"1": {"a": binary(n, int(rng.binomial(n, pa))), "b": binary(nb, int(rng.binomial(nb, pb)))}}
        return analyse(exp, per_epoch, weights, np.random.default_rng(1))

    assert run(100, 0.1, 0.1)["verdict"]["status"] == "keep_running"
    win = run(40_000, 0.10, 0.13)
    assert (win["verdict"]["status"], win["verdict"]["arm"]) == ("winner", "b")
    assert win["arms"][1]["vs_control"]["p_value"] < 1e-6
    same = {"1": {"a": binary(40_000, 4000), "b": binary(40_000, 4010)}}
    assert analyse(exp, same, weights, np.random.default_rng(1))["verdict"]["status"] == "inconclusive"
    assert run(20_000, 0.1, 0.1, nb=18_000)["verdict"]["status"] == "sample_ratio_mismatch"


def test_bandit_results_report_probability_best_and_expected_loss() -> None:
    exp = compile_experiment(
        {"status": "running", "arms": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "allocation": {"mode": "bandit"}}, "mab"
    )
    per_epoch = {"1.0": {"a": binary(3000, 150), "b": binary(3000, 240), "c": binary(3000, 160)}}
    r = analyse(exp, per_epoch, {"1.0": [1 / 3] * 3}, np.random.default_rng(1))
    best = max(r["arms"], key=lambda a: a["probability_best"])
    assert best["arm"] == "b" and best["probability_best"] > 0.99 and best["expected_loss"] < 1e-3
    assert r["verdict"]["status"] == "winner"
    assert sum(a["probability_best"] for a in r["arms"]) == pytest.approx(1.0)
