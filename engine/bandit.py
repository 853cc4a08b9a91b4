"""Thompson sampling: posteriors over each arm's reward and the allocation they imply.

Conversion goals use a Beta-Bernoulli model (prior Beta(1, 1)); revenue goals a Normal-Gamma model of the
mean reward per exposure (a weak prior centred on the pooled mean). Posterior draws are taken with the
``np.random.Generator`` the caller passes (``rt.rng``), never a global seed.

The allocation is computed here, off the request path, once per allocation epoch: the probability that
each arm is best under the posterior (by Monte-Carlo), mixed with an exploration floor so no arm starves,
and an even split during burn-in. A request then only samples an arm with these probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MC_DRAWS = 10_000
"""Posterior draws per allocation: the Monte-Carlo error of P(best) is at most 0.5/sqrt(10,000) = 0.005."""


@dataclass(frozen=True, slots=True)
class Tally:
    """What is known about one arm: exposures and rewards, summed over epochs (or within one)."""

    exposures: int = 0
    rewarded: int = 0
    """Exposures whose reward arrived (each counted once)."""
    reward_sum: float = 0.0
    reward_sumsq: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.exposures + other.exposures,
            self.rewarded + other.rewarded,
            self.reward_sum + other.reward_sum,
            self.reward_sumsq + other.reward_sumsq,
        )

    def with_default(self, default_reward: float) -> Tally:
        """Exposures without a reward count as ``default_reward`` (the no-show reward).

        Counting them from exposure on, rather than when the attribution window closes, biases an arm's
        estimate down only by its rewards still in flight — the same for every arm when rewards arrive at
        a similar pace — and needs no sweeper.
        """
        missing = max(self.exposures - self.rewarded, 0)
        return Tally(
            self.exposures,
            self.rewarded,
            self.reward_sum + missing * default_reward,
            self.reward_sumsq + missing * default_reward * default_reward,
        )

    @property
    def mean(self) -> float:
        return self.reward_sum / self.exposures if self.exposures else 0.0


@dataclass(frozen=True, slots=True)
class Policy:
    """How a bandit turns posteriors into traffic."""

    goal_type: str = "binary"
    """``binary`` (conversions, Beta-Bernoulli) or ``revenue`` (Normal-Gamma)."""
    exploration_floor: float = 0.01
    """Every arm keeps at least this share of traffic."""
    burn_in_exposures: int = 100
    """Split evenly until every arm has this many exposures."""
    top_two: float | None = None
    """Top-two Thompson sampling: the leader gets this share of its draws, the runner-up the rest."""
    default_reward: float = 0.0


def posterior_draws(
    policy: Policy, tallies: Sequence[Tally], rng: np.random.Generator, draws: int = MC_DRAWS
) -> np.ndarray:
    """A ``draws × arms`` matrix of posterior samples of each arm's mean reward."""
    effective = [t.with_default(policy.default_reward) for t in tallies]
    if policy.goal_type == "binary":
        n = np.array([t.exposures for t in effective], dtype=float)
        s = np.clip(np.array([t.reward_sum for t in effective]), 0.0, n)
        return rng.beta(1.0 + s, 1.0 + n - s, size=(draws, len(effective)))
    return _normal_gamma_draws(effective, rng, draws)


def _normal_gamma_draws(tallies: Sequence[Tally], rng: np.random.Generator, draws: int) -> np.ndarray:
    n = np.array([t.exposures for t in tallies], dtype=float)
    total = n.sum()
    sums = np.array([t.reward_sum for t in tallies])
    sumsq = np.array([t.reward_sumsq for t in tallies])
    pooled_mean = sums.sum() / total if total else 0.0
    pooled_var = max(sumsq.sum() / total - pooled_mean**2, 1e-9) if total else 1.0
    # Prior worth one observation at the pooled mean and variance: weak, but on the data's scale, so the
    # posterior of an arm with no data is neither absurdly wide nor centred on zero revenue.
    mu0, kappa0, alpha0, beta0 = pooled_mean, 1.0, 1.0, pooled_var
    xbar = np.divide(sums, n, out=np.zeros_like(sums), where=n > 0)
    ss = np.maximum(sumsq - n * xbar**2, 0.0)
    kappa_n = kappa0 + n
    mu_n = (kappa0 * mu0 + n * xbar) / kappa_n
    alpha_n = alpha0 + n / 2
    beta_n = beta0 + ss / 2 + kappa0 * n * (xbar - mu0) ** 2 / (2 * kappa_n)
    tau = rng.gamma(alpha_n, 1.0 / beta_n, size=(draws, len(tallies)))
    means: np.ndarray = rng.normal(mu_n, 1.0 / np.sqrt(kappa_n * tau))
    return means


def probability_best(samples: np.ndarray) -> np.ndarray:
    """P(arm is best) from posterior samples; ties (rare, continuous draws) go to the lower index."""
    winners = np.argmax(samples, axis=1)
    shares: np.ndarray = np.bincount(winners, minlength=samples.shape[1]) / samples.shape[0]
    return shares


def expected_loss(samples: np.ndarray) -> np.ndarray:
    """E[max_j θ_j − θ_i]: what choosing arm i costs, in reward per exposure, if it is not the best."""
    loss: np.ndarray = np.mean(samples.max(axis=1, keepdims=True) - samples, axis=0)
    return loss


def top_two_probabilities(samples: np.ndarray, leader_share: float) -> np.ndarray:
    """Top-two Thompson sampling allocation, estimated from the same draws.

    Each draw credits its best arm with ``leader_share`` and its runner-up with the rest, which keeps a
    clear leader from starving the challenger that best-arm identification needs.
    """
    order = np.argsort(samples, axis=1)
    k = samples.shape[1]
    first = np.bincount(order[:, -1], minlength=k)
    second = np.bincount(order[:, -2], minlength=k)
    shares: np.ndarray = (leader_share * first + (1 - leader_share) * second) / samples.shape[0]
    return shares


def allocate(policy: Policy, tallies: Sequence[Tally], rng: np.random.Generator, draws: int = MC_DRAWS) -> list[float]:
    """The traffic share of each arm for the next epoch."""
    k = len(tallies)
    if k == 1:
        return [1.0]
    if min(t.exposures for t in tallies) < policy.burn_in_exposures:
        return [1.0 / k] * k
    samples = posterior_draws(policy, tallies, rng, draws)
    if policy.top_two is not None:
        p = top_two_probabilities(samples, policy.top_two)
    else:
        p = probability_best(samples)
    return with_floor(p, policy.exploration_floor)


def with_floor(p: Sequence[float] | np.ndarray, floor: float) -> list[float]:
    """Mix ``p`` with the uniform split so every arm gets at least ``floor``; still sums to 1."""
    arr = np.asarray(p, dtype=float)
    k = arr.size
    mixed = floor + (1.0 - k * floor) * arr / arr.sum()
    return [float(x) for x in mixed]
