"""The statistics behind experiment results: intervals, tests, sample sizes, the SRM alarm, a verdict.

Pure functions over tallies (see :mod:`engine.bandit`), so they are tested directly with seeded
simulations. Quantiles and tail probabilities come from scipy rather than hand-rolled series.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.bandit import Tally


@functools.cache
def _sp() -> Any:  # scipy ships no type hints
    # Imported on first use: scipy.stats adds ~72 MB to every worker's RSS (benchmarks/memory.py: 129 → 57 MB
    # with one model), and only the experiment results endpoint needs it.
    from scipy import stats

    return stats


SRM_ALPHA = 0.001
"""SRM is a bug alarm, not a discovery: a strict threshold keeps false alarms to one run in a thousand."""


@dataclass(frozen=True, slots=True)
class TestResult:
    statistic: float
    p_value: float


def credible_interval(goal_type: str, t: Tally, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed posterior interval of the arm's mean reward per exposure."""
    tail = (1 - level) / 2
    if goal_type == "binary":
        s = min(max(t.reward_sum, 0.0), t.exposures)
        a, b = 1 + s, 1 + t.exposures - s
        return float(_sp().beta.ppf(tail, a, b)), float(_sp().beta.ppf(1 - tail, a, b))
    if t.exposures < 2:
        return (-math.inf, math.inf)
    # The Normal-Gamma posterior of the mean with a vague prior is Student-t around the sample mean.
    half = float(_sp().t.ppf(1 - tail, t.exposures - 1)) * math.sqrt(sample_variance(t) / t.exposures)
    return t.mean - half, t.mean + half


def sample_variance(t: Tally) -> float:
    if t.exposures < 2:
        return 0.0
    return max(t.reward_sumsq - t.exposures * t.mean**2, 0.0) / (t.exposures - 1)


def two_proportion_z(control: Tally, variant: Tally) -> TestResult:
    """Two-sided two-proportion z-test with the pooled variance (variant minus control)."""
    n1, n2 = control.exposures, variant.exposures
    if n1 == 0 or n2 == 0:
        return TestResult(0.0, 1.0)
    p1, p2 = control.reward_sum / n1, variant.reward_sum / n2
    pooled = (control.reward_sum + variant.reward_sum) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return TestResult(0.0, 1.0)
    z = (p2 - p1) / se
    return TestResult(z, float(2 * _sp().norm.sf(abs(z))))


def welch(control: Tally, variant: Tally) -> TestResult:
    """Two-sided Welch t-test on the mean reward per exposure (variant minus control)."""
    n1, n2 = control.exposures, variant.exposures
    if n1 < 2 or n2 < 2:
        return TestResult(0.0, 1.0)
    v1, v2 = sample_variance(control) / n1, sample_variance(variant) / n2
    if v1 + v2 == 0:
        return TestResult(0.0, 1.0)
    t = (variant.mean - control.mean) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / ((v1**2 / (n1 - 1) if n1 > 1 else 0) + (v2**2 / (n2 - 1) if n2 > 1 else 0))
    return TestResult(t, float(2 * _sp().t.sf(abs(t), df)))


def min_sample_size(
    goal_type: str, control: Tally, mde_relative: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Exposures per arm needed to detect a relative lift of ``mde_relative`` over the control's mean.

    None while the control has no data to estimate its baseline from.
    """
    if control.exposures == 0 or control.mean == 0:
        return None
    z = float(_sp().norm.ppf(1 - alpha / 2) + _sp().norm.ppf(power))
    base = control.mean
    delta = abs(base * mde_relative)
    if goal_type == "binary":
        p2 = min(base * (1 + mde_relative), 1.0)
        variance = base * (1 - base) + p2 * (1 - p2)
    else:
        variance = 2 * sample_variance(control)
    return math.ceil(z * z * variance / (delta * delta)) if delta > 0 else None


def srm(observed: Sequence[int], expected: Sequence[float]) -> TestResult:
    """Pearson chi-square of observed exposures against the exposures the allocation implied."""
    obs = np.asarray(observed, dtype=float)
    exp = np.asarray(expected, dtype=float)
    keep = exp > 0
    if keep.sum() < 2 or obs.sum() == 0:
        return TestResult(0.0, 1.0)
    chi2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return TestResult(chi2, float(_sp().chi2.sf(chi2, int(keep.sum()) - 1)))


def expected_exposures(epochs: Sequence[tuple[int, Sequence[float]]]) -> list[float]:
    """Σ over epochs of (exposures in the epoch × the epoch's weight of each arm).

    Using each epoch's own weights keeps the SRM test honest when a bandit (or an admin) moves traffic.
    """
    if not epochs:
        return []
    k = len(epochs[0][1])
    out = np.zeros(k)
    for n, weights in epochs:
        w = np.asarray(weights, dtype=float)
        out += n * w / w.sum()
    return [float(x) for x in out]


def stratified_mean(per_epoch: Sequence[Sequence[Tally]], arm: int) -> float | None:
    """The arm's mean reward with every epoch weighted by its share of all traffic.

    When a bandit moves traffic over time, pooling counts lets a change in the audience over time leak
    into the comparison (Simpson's paradox); weighting epochs equally across arms does not. Epochs where
    the arm had no exposures are left out.
    """
    total = 0.0
    acc = 0.0
    for epoch in per_epoch:
        n_epoch = sum(t.exposures for t in epoch)
        t = epoch[arm]
        if t.exposures == 0:
            continue
        acc += n_epoch * t.mean
        total += n_epoch
    return acc / total if total else None
