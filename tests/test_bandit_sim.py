"""The bandit learns through the real API: two engine processes, one Redis, simulated guests.

A smaller run of ``benchmarks/bandit_sim.py`` (same code): 2,000 guests in 12 waves, arms converting at 4 %,
5 % and 15 %. An even split loses 0.07 conversions per guest; a bandit that does not learn sits near a
regret ratio of 1.0.

Tolerances come from replaying the same schedule against the policy alone over 10,000 seeds
(``python -m benchmarks.bandit_sim --guests 2000 --waves 12 --replay 10000 --seed 0
--rates classic=0.04,bold=0.05,story=0.15``): regret ratio median 0.14, p99 0.27, at or above 0.6 in 1
replay; the best arm's P(best) at or below 0.9 in 2. So a learning bandit fails this about 3 times in
10,000. The servers' own draws are not seeded and rewards reach them with whatever lag the machine has,
which the replay leaves out; four runs with both cores kept busy by other processes gave 0.10–0.18.

The 15 % arm is what makes this a test of the plumbing rather than of luck: with the benchmark's 10 % best
arm the same replay misses one of these bounds in 4.6 % of seeds (P(best) <= 0.9 in 384, ratio >= 0.6 in
117), and CI hit it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.bandit_sim import ADMIN, engines, simulate

pytestmark = pytest.mark.e2e

RATES = {"classic": 0.04, "bold": 0.05, "story": 0.15}


def test_two_processes_sharing_redis_learn_as_one(redis_url: str, tmp_path: Path) -> None:
    with engines(redis_url, 2, tmp_path) as bases:
        result = simulate(bases, rates=RATES, guests=2000, waves=12, seed=11)
        # Both processes served, and each one's view of the counts includes the other's exposures.
        assert set(result.by_server.values()) == {1000}
        for base in bases:
            r = httpx.get(f"{base}/v1/experiments/sim-hero/results", headers=ADMIN).json()
            assert r["exposures"] == 2000
            assert sum(a["conversions"] for a in r["arms"]) == result.conversions
        epochs = [httpx.get(f"{b}/v1/experiments/sim-hero", headers=ADMIN).json()["allocation_now"] for b in bases]
    assert result.regret_ratio < 0.6, result.summary()
    best = max(result.results["arms"], key=lambda a: a["probability_best"])
    assert best["arm"] == "story" and best["probability_best"] > 0.9, result.summary()
    assert result.served["story"] > result.served["classic"] + result.served["bold"]
    # Within an epoch every process uses the same weights (the first to reach it fixes them in Redis).
    if epochs[0]["epoch"] == epochs[1]["epoch"]:
        assert epochs[0]["weights"] == epochs[1]["weights"]
