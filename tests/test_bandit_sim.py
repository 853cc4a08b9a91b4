"""The bandit learns through the real API: two engine processes, one Redis, simulated guests.

A smaller run of ``benchmarks/bandit_sim.py`` (same code). Arms convert at 4 %, 5 % and 10 %; an even split
would lose 0.04 conversions per guest. Tolerances: regret below 0.6 of the even split's — six quiet runs
gave 0.24–0.35 (the full run reaches about a tenth), one run on a machine busy with the rest of the suite
0.52: the servers' Thompson draws are not seeded and rewards reach them with whatever lag the machine has;
a bandit that does not learn sits near 1.0 — and the results API's P(best) picks the 10 % arm with at least
0.9 — with 2,000 guests the 10 % arm's lead is over four standard errors once it holds most of the traffic.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.bandit_sim import ADMIN, RATES, engines, simulate

pytestmark = pytest.mark.e2e


def test_two_processes_sharing_redis_learn_as_one(redis_url: str, tmp_path: Path) -> None:
    with engines(redis_url, 2, tmp_path) as bases:
        result = simulate(bases, guests=2000, waves=12, seed=11)
        # Both processes served, and each one's view of the counts includes the other's exposures.
        assert set(result.by_server.values()) == {1000}
        for base in bases:
            r = httpx.get(f"{base}/v1/experiments/sim-hero/results", headers=ADMIN).json()
            assert r["exposures"] == 2000
            assert sum(a["conversions"] for a in r["arms"]) == result.conversions
        epochs = [httpx.get(f"{b}/v1/experiments/sim-hero", headers=ADMIN).json()["allocation_now"] for b in bases]
    assert result.regret_ratio < 0.6, result.summary()
    best = max(result.results["arms"], key=lambda a: a["probability_best"])
    assert best["arm"] == max(RATES, key=RATES.__getitem__) and best["probability_best"] > 0.9, result.summary()
    assert result.served["story"] > result.served["classic"] + result.served["bold"]
    # Within an epoch every process uses the same weights (the first to reach it fixes them in Redis).
    if epochs[0]["epoch"] == epochs[1]["epoch"]:
        assert epochs[0]["weights"] == epochs[1]["weights"]
