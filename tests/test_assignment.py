"""Assignment is uniform per split, sticky, and independent across experiments — tested statistically.

Every test uses fixed guest ids (deterministic hashes), so a pass is reproducible; the tolerances are set
so that a correct hash would fail them with probability below 1e-6 (chi-square at p < 1e-6).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats as sp

from engine.assignment import Allocation, assign, bucket, pick
from engine.experiments import compile_experiment

GUESTS = [f"guest-{i}" for i in range(60_000)]
P_FLOOR = 1e-6
"""A correct uniform hash fails a chi-square check at this level once in a million runs."""


def experiment(**over: object):  # type: ignore[no-untyped-def]
    doc = {"status": "running", "arms": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "allocation": {"mode": "fixed"}}
    doc.update(over)
    return compile_experiment(doc, str(over.get("seed", "exp")))


def arms_of(exp, guests=GUESTS, context=None):  # type: ignore[no-untyped-def]
    alloc = Allocation("1", exp.weights)
    rng = np.random.default_rng(0)
    return [assign(exp, alloc, g, {}, context or {}, None, rng).arm for g in guests]


@pytest.mark.parametrize("weights", [(1, 1, 1), (1, 2, 7), (5, 3, 2)])
def test_split_matches_weights(weights: tuple[int, ...]) -> None:
    exp = experiment(arms=[{"id": k, "weight": w} for k, w in zip("abc", weights, strict=True)])
    counts = Counter(arms_of(exp))
    observed = [counts[k] for k in "abc"]
    expected = [len(GUESTS) * w / sum(weights) for w in weights]
    assert sp.chisquare(observed, expected).pvalue > P_FLOOR


def test_buckets_are_uniform_over_10000() -> None:
    counts = np.bincount([bucket("seed", "arm", g) for g in GUESTS], minlength=10_000)
    assert sp.chisquare(counts).pvalue > P_FLOOR


def test_universal_mode_splits_120_buckets_exactly() -> None:
    exp = experiment(bucketing="universal", arms=[{"id": k} for k in "abcde"])
    # 120 buckets / 5 arms: each arm owns exactly 24 buckets.
    owners = Counter(pick(exp.weights, (b + 0.5) / 120) for b in range(120))
    assert set(owners.values()) == {24}
    counts = Counter(arms_of(exp))
    assert sp.chisquare([counts[k] for k in "abcde"]).pvalue > P_FLOOR


def test_assignment_is_sticky_and_the_same_in_every_process() -> None:
    exp = experiment()
    first = arms_of(exp, GUESTS[:2000])
    assert arms_of(exp, GUESTS[:2000]) == first
    # A new compile (another process) of the same definition agrees.
    assert arms_of(experiment(), GUESTS[:2000]) == first


def test_a_fixed_split_guest_never_flips_when_traffic_grows() -> None:
    small, large = experiment(traffic_pct=20), experiment(traffic_pct=80)
    before = arms_of(small, GUESTS[:5000])
    after = arms_of(large, GUESTS[:5000])
    small_alloc = Allocation("1", small.weights)
    rng = np.random.default_rng(0)
    entered = [assign(small, small_alloc, g, {}, {}, None, rng).reason == "SPLIT" for g in GUESTS[:5000]]
    assert 0.17 < sum(entered) / 5000 < 0.23
    assert all(a == b for a, b, e in zip(before, after, entered, strict=True) if e)


def test_experiments_are_independent() -> None:
    """The arm in one experiment tells nothing about the arm in another (chi-square on the 3×3 table)."""
    one, two = arms_of(experiment(seed="one")), arms_of(experiment(seed="two"))
    table = np.zeros((3, 3))
    for a, b in zip(one, two, strict=True):
        table["abc".index(a), "abc".index(b)] += 1
    assert sp.chi2_contingency(table).pvalue > P_FLOOR


def test_traffic_holdout_and_targeting() -> None:
    exp = experiment(traffic_pct=50, holdout_pct=10, targeting='context.channel = "WEB"')
    alloc = Allocation("1", exp.weights)
    rng = np.random.default_rng(0)
    reasons = Counter(assign(exp, alloc, g, {}, {"channel": "WEB"}, None, rng).reason for g in GUESTS[:20_000])
    # 50 % enter; 10 % of those are held out: 45 % split. Binomial sd at n=20,000 is 0.35 %.
    assert abs(reasons["SPLIT"] / 20_000 - 0.45) < 0.02
    assert all(assign(exp, alloc, g, {}, {"channel": "APP"}, None, rng).reason == "DEFAULT" for g in GUESTS[:500])


def test_layers_are_mutually_exclusive_and_split_the_layer() -> None:
    left = experiment(seed="left", layer={"id": "home", "range": [0, 3000]})
    right = experiment(seed="right", layer={"id": "home", "range": [3000, 10000]})
    in_left = [a is not None and r == "SPLIT" for a, r in _reasons(left)]
    in_right = [a is not None and r == "SPLIT" for a, r in _reasons(right)]
    assert not any(x and y for x, y in zip(in_left, in_right, strict=True))
    assert all(x or y for x, y in zip(in_left, in_right, strict=True))
    assert abs(sum(in_left) / len(GUESTS) - 0.3) < 0.01


def _reasons(exp):  # type: ignore[no-untyped-def]
    alloc = Allocation("1", exp.weights)
    rng = np.random.default_rng(0)
    return [(c.arm, c.reason) for c in (assign(exp, alloc, g, {}, {}, None, rng) for g in GUESTS)]


def test_eligibility_renormalises_propensity() -> None:
    exp = experiment(arms=[{"id": "a", "weight": 1}, {"id": "b", "weight": 1}, {"id": "c", "weight": 2}])
    alloc = Allocation("1", exp.weights)
    rng = np.random.default_rng(0)
    choices = [assign(exp, alloc, g, {}, {}, {"a", "c"}, rng) for g in GUESTS[:9000]]
    assert {c.arm for c in choices} == {"a", "c"}
    assert {c.arm: c.propensity for c in choices} == {"a": pytest.approx(1 / 3), "c": pytest.approx(2 / 3)}
    only = assign(exp, alloc, "g", {}, {}, {"b"}, rng)
    assert (only.arm, only.reason, only.propensity) == ("b", "TARGETING_MATCH", 1.0)


def test_bandit_assignment_is_sticky_within_an_epoch_and_redrawn_across() -> None:
    exp = experiment(allocation={"mode": "bandit"})
    rng = np.random.default_rng(0)
    e1, e2 = Allocation("1.0", exp.weights), Allocation("1.1", exp.weights)
    same = [assign(exp, e1, g, {}, {}, None, rng).arm for g in GUESTS[:3000]]
    assert same == [assign(exp, e1, g, {}, {}, None, rng).arm for g in GUESTS[:3000]]
    nxt = [assign(exp, e2, g, {}, {}, None, rng).arm for g in GUESTS[:3000]]
    agree = sum(a == b for a, b in zip(same, nxt, strict=True)) / 3000
    assert abs(agree - 1 / 3) < 0.05  # independent redraw: agreement by chance only
