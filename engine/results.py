"""An experiment's results: per-arm numbers, Bayesian and frequentist comparisons, SRM, a verdict.

:func:`analyse` is pure (tallies by epoch + epoch weights in, a JSON document out) so it is tested on
simulated data; the API handler only fetches the tallies and calls it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from engine import stats
from engine.bandit import Tally, expected_loss, posterior_draws, probability_best
from engine.experiments import Experiment
from engine.ledger import TallyMap
from engine.types import JSONObject

RESULT_DRAWS = 40_000
"""Monte-Carlo draws for P(best) and expected loss: error at most 0.5/sqrt(40,000) = 0.0025."""
P_BEST_WINNER = 0.95
LOSS_TOLERANCE = 0.01
"""A winner's expected loss must be under 1 % of its mean: "best" and "not costly if wrong"."""


def results_rng(exp: Experiment) -> np.random.Generator:
    """Results are a report: the same counts must give the same numbers on every refresh and process."""
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(exp.seed.encode(), digest_size=8).digest(), "big"))


def analyse(
    exp: Experiment, per_epoch: TallyMap, epoch_weights: Mapping[str, Sequence[float]], rng: np.random.Generator
) -> JSONObject:
    arms = exp.arm_ids
    epochs = sorted(per_epoch)
    matrix = [[per_epoch[e].get(a, Tally()) for a in arms] for e in epochs]
    totals = [sum((row[i] for row in matrix), Tally()) for i in range(len(arms))]
    effective = [t.with_default(exp.policy.default_reward) for t in totals]
    total_n = sum(t.exposures for t in totals)
    out: JSONObject = {
        "experiment": exp.key,
        "status": exp.status,
        "mode": exp.mode,
        "goal": exp.goal_event,
        "goal_type": exp.goal_type,
        "control": exp.control,
        "exposures": total_n,
    }
    samples = posterior_draws(exp.policy, totals, rng, RESULT_DRAWS) if total_n else None
    p_best = probability_best(samples) if samples is not None else np.full(len(arms), 1 / len(arms))
    loss = expected_loss(samples) if samples is not None else np.zeros(len(arms))
    control_i = exp.index[exp.control]
    rows = []
    for i, arm in enumerate(arms):
        t = effective[i]
        lo, hi = stats.credible_interval(exp.goal_type, t)
        row: JSONObject = {
            "arm": arm,
            "exposures": t.exposures,
            "conversions": totals[i].rewarded,
            ("rate" if exp.goal_type == "binary" else "mean_revenue"): t.mean,
            "credible_interval_95": [lo, hi],
            "probability_best": float(p_best[i]),
            "expected_loss": float(loss[i]),
        }
        if exp.goal_type == "revenue":
            row["revenue"] = t.reward_sum
        if exp.mode == "bandit":
            row["stratified_mean"] = stats.stratified_mean(
                [[x.with_default(exp.policy.default_reward) for x in r] for r in matrix], i
            )
        if exp.mode == "fixed" and i != control_i:
            test = (stats.two_proportion_z if exp.goal_type == "binary" else stats.welch)(effective[control_i], t)
            base = effective[control_i].mean
            row["vs_control"] = {
                "lift": (t.mean - base) / base if base else None,
                "statistic": test.statistic,
                "p_value": test.p_value,
            }
        rows.append(row)
    out["arms"] = rows
    served = [
        (sum(t.exposures for t in r), epoch_weights.get(e) or exp.weights) for e, r in zip(epochs, matrix, strict=True)
    ]
    expected = stats.expected_exposures(served)
    srm = stats.srm([t.exposures for t in totals], expected) if expected else stats.TestResult(0.0, 1.0)
    out["srm"] = {
        "chi2": srm.statistic,
        "p_value": srm.p_value,
        "alarm": srm.p_value < stats.SRM_ALPHA,
        "expected_exposures": expected,
    }
    if exp.mode == "fixed":
        out["min_sample_size_per_arm"] = stats.min_sample_size(
            exp.goal_type, effective[control_i], exp.mde, exp.alpha, exp.power
        )
    out["verdict"] = verdict(exp, out)
    return out


def verdict(exp: Experiment, r: JSONObject) -> JSONObject:
    """A plain-language reading of the numbers: winner, keep running, or inconclusive."""
    rows = r["arms"]
    if r["exposures"] == 0:
        return {"status": "keep_running", "arm": None, "text": "No exposures yet."}
    if r["srm"]["alarm"]:
        return {
            "status": "sample_ratio_mismatch",
            "arm": None,
            "text": (
                f"Sample ratio mismatch (p = {r['srm']['p_value']:.2g}): traffic is not splitting as configured. "
                "Find the cause (targeting, caching, redirects, bots) before trusting any result."
            ),
        }
    if exp.mode == "fixed":
        return _fixed_verdict(exp, r)
    best = max(rows, key=lambda row: row["probability_best"])
    key = "rate" if exp.goal_type == "binary" else "mean_revenue"
    if best["probability_best"] >= P_BEST_WINNER and best["expected_loss"] <= LOSS_TOLERANCE * abs(best[key]):
        return {
            "status": "winner",
            "arm": best["arm"],
            "text": (
                f"'{best['arm']}' is the winner: {best['probability_best']:.0%} likely to be best, and choosing it "
                f"costs at most {best['expected_loss']:.3g} per exposure if it is not."
            ),
        }
    if all(row["expected_loss"] <= LOSS_TOLERANCE * abs(row[key]) for row in rows):
        return {
            "status": "inconclusive",
            "arm": None,
            "text": "The arms perform practically the same; keep any of them.",
        }
    return {
        "status": "keep_running",
        "arm": best["arm"],
        "text": (
            f"Keep running: '{best['arm']}' leads with a {best['probability_best']:.0%} chance of being best, "
            "not yet enough to call it."
        ),
    }


def _fixed_verdict(exp: Experiment, r: JSONObject) -> JSONObject:
    rows = [row for row in r["arms"] if row["arm"] != exp.control]
    needed = r.get("min_sample_size_per_arm")
    smallest = min(row["exposures"] for row in r["arms"])
    # Bonferroni across the variants: each compared with the control.
    threshold = exp.alpha / max(len(rows), 1)
    significant = [row for row in rows if row["vs_control"]["p_value"] < threshold]
    reached = needed is not None and smallest >= needed
    if significant and reached:
        best = max(significant, key=lambda row: row["vs_control"]["statistic"])
        direction = "better" if best["vs_control"]["statistic"] > 0 else "worse"
        if direction == "worse":
            return {
                "status": "winner",
                "arm": exp.control,
                "text": (
                    f"The control '{exp.control}' wins: '{best['arm']}' is significantly worse "
                    f"(p = {best['vs_control']['p_value']:.2g})."
                ),
            }
        return {
            "status": "winner",
            "arm": best["arm"],
            "text": (
                f"'{best['arm']}' beats the control (p = {best['vs_control']['p_value']:.2g}, "
                f"lift {best['vs_control']['lift']:+.1%})."
            ),
        }
    if reached:
        return {
            "status": "inconclusive",
            "arm": None,
            "text": (
                f"Inconclusive: every arm has the planned {needed} exposures and no difference is significant; "
                f"any effect is smaller than the {exp.mde:.0%} the test was sized for."
            ),
        }
    return {
        "status": "keep_running",
        "arm": None,
        "text": (
            f"Keep running: the smallest arm has {smallest} exposures of the {needed or 'unknown'} needed "
            f"to detect a {exp.mde:.0%} lift."
        ),
    }
