"""Thompson-sampling allocation: floors, burn-in, top-two, posteriors — with seeded generators."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bandit import Policy, Tally, allocate, expected_loss, posterior_draws, probability_best, with_floor

SEED = 7


def binary(n: int, c: int) -> Tally:
    return Tally(n, c, float(c), float(c))


def test_floor_keeps_every_arm_alive_and_sums_to_one() -> None:
    w = with_floor([1.0, 0.0, 0.0], 0.01)
    assert sum(w) == pytest.approx(1.0) and min(w) == pytest.approx(0.01)
    assert with_floor([0.5, 0.5], 0.0) == [0.5, 0.5]


def test_burn_in_splits_evenly() -> None:
    rng = np.random.default_rng(SEED)
    assert allocate(Policy(burn_in_exposures=100), [binary(99, 50), binary(500, 1)], rng) == [0.5, 0.5]


def test_allocation_favours_the_clearly_better_arm() -> None:
    rng = np.random.default_rng(SEED)
    w = allocate(Policy(), [binary(2000, 100), binary(2000, 160), binary(2000, 90)], rng)
    assert w[1] > 0.95 and min(w) >= 0.01 - 1e-12


def test_top_two_keeps_the_challenger_in_play() -> None:
    rng = np.random.default_rng(SEED)
    tallies = [binary(2000, 100), binary(2000, 160), binary(2000, 90)]
    plain = allocate(Policy(exploration_floor=0.0), tallies, rng)
    top_two = allocate(Policy(exploration_floor=0.0, top_two=0.5), tallies, rng)
    assert plain[1] > 0.99
    # The leader gets about half; the runner-up arms share the rest.
    assert top_two[1] == pytest.approx(0.5, abs=0.02) and top_two[0] + top_two[2] == pytest.approx(0.5, abs=0.02)


def test_probability_best_matches_an_analytic_case() -> None:
    # Two arms with identical posteriors: P(best) is 1/2 each (MC error sd 0.005 at 10,000 draws).
    rng = np.random.default_rng(SEED)
    p = probability_best(posterior_draws(Policy(), [binary(100, 10), binary(100, 10)], rng))
    assert p[0] == pytest.approx(0.5, abs=0.025)


def test_revenue_posterior_centres_on_the_sample_mean() -> None:
    rng = np.random.default_rng(SEED)
    values = [rng.gamma(2.0, 10.0, 4000), rng.gamma(2.0, 12.0, 4000)]
    tallies = [Tally(len(v), len(v), float(v.sum()), float((v**2).sum())) for v in values]
    draws = posterior_draws(Policy(goal_type="revenue"), tallies, rng)
    for i, v in enumerate(values):
        # The posterior mean sits on the sample mean; its sd is the standard error (~0.22 and ~0.27 here).
        assert draws[:, i].mean() == pytest.approx(v.mean(), abs=0.05)
        assert draws[:, i].std() == pytest.approx(v.std() / np.sqrt(len(v)), rel=0.1)
    assert probability_best(draws)[1] > 0.99
    assert expected_loss(draws)[1] < 0.01


def test_default_reward_counts_unrewarded_exposures() -> None:
    assert Tally(10, 2, 7.0, 25.0).with_default(1.0).reward_sum == 15.0


def test_thompson_sampling_regret_beats_an_even_split() -> None:
    """In-process simulation: 40 epochs of 250 decisions over conversion rates 4 %, 5 %, 8 %.

    An even split loses (0.08 − mean rate) × 10,000 ≈ 233 conversions; Thompson sampling should lose far
    fewer. Regret is measured in expectation (by rates, not draws) so only the policy's choices count.
    """
    rng = np.random.default_rng(SEED)
    rates = np.array([0.04, 0.05, 0.08])
    policy = Policy(burn_in_exposures=50)
    tallies = [Tally() for _ in rates]
    regret = 0.0
    for _ in range(40):
        w = allocate(policy, tallies, rng)
        counts = rng.multinomial(250, w)
        conversions = rng.binomial(counts, rates)
        regret += float(counts @ (rates.max() - rates))
        tallies = [t + binary(int(n), int(c)) for t, n, c in zip(tallies, counts, conversions, strict=True)]
    even_regret = 10_000 * (rates.max() - rates.mean())
    assert regret < 0.35 * even_regret
    assert int(np.argmax(allocate(policy, tallies, rng))) == 2
