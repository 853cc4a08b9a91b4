"""Bandit simulation through the real HTTP API: engine processes sharing one Redis, simulated guests.

Each simulated guest asks for a decision (round-robin over the engine processes), converts with the
probability its arm truly has (a seeded generator), and — if it converts — sends the reward to a
*different* process than the one that served it. Regret is counted in expectation (the best rate minus
the served arm's rate), so it measures the policy rather than the luck of the draws.

    python -m benchmarks.bandit_sim --guests 20000 --servers 2           # starts redis-server and engines
    python -m benchmarks.bandit_sim --redis redis://127.0.0.1:6379/0     # use an existing Redis
    python -m benchmarks.bandit_sim --guests 2000 --waves 12 --replay 10000   # the policy alone, in-process

``--replay N`` runs the same wave schedule N times against the policy in-process (``replay``): no HTTP, no
timing, only the statistics — so a test's tolerance can be set from the spread of a learning bandit.

The simulation runs in waves; between waves it waits (polling, no fixed sleeps) until the bandit has moved
to a new allocation epoch, so the number of posterior updates does not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.data import SEED
from engine.bandit import MC_DRAWS, Policy, Tally, allocate, posterior_draws, probability_best

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY, PUBLIC_KEY = "sim-admin", "sim-public"
ADMIN, PUBLIC = {"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": PUBLIC_KEY}
RATES = {"classic": 0.04, "bold": 0.05, "story": 0.10}
BURN_IN = 30
FLOOR = 0.01
"""The experiment's exploration floor (also what ``replay`` uses)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import redis

            client = redis.Redis(port=port)
            _wait(client.ping, 10, "redis-server")
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.contextmanager
def engines(redis_url: str, count: int, log_dir: Path, models: Path | None = None) -> Iterator[list[str]]:
    """``count`` real ``python -m engine serve`` processes on free ports, sharing ``redis_url``."""
    env = {**os.environ, "ARBITER_ADMIN_KEY": ADMIN_KEY, "ARBITER_PUBLIC_KEY": PUBLIC_KEY}
    procs, bases = [], []
    try:
        for i in range(count):
            port = free_port()
            log = open(log_dir / f"engine-{i}.log", "wb")  # noqa: SIM115 — closed with the process
            args = [sys.executable, "-m", "engine", "serve", "--port", str(port), "--redis", redis_url, "--quiet"]
            if models is not None:
                args += ["--models", str(models)]
            procs.append((subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            _wait(lambda b=base: httpx.get(f"{b}/ready", timeout=1).status_code == 200, 30, f"engine at {base}")
        yield bases
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()


@dataclass
class SimResult:
    guests: int
    regret: float
    even_regret: float
    served: Counter[str] = field(default_factory=Counter)
    by_server: Counter[str] = field(default_factory=Counter)
    conversions: int = 0
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def regret_ratio(self) -> float:
        return self.regret / self.even_regret

    def summary(self) -> str:
        best = max(self.results.get("arms", []), key=lambda a: a["probability_best"], default={})
        return (
            f"guests={self.guests} conversions={self.conversions} served={dict(self.served)} "
            f"by_server={dict(self.by_server)}\n"
            f"regret={self.regret:.1f} even-split regret={self.even_regret:.1f} ratio={self.regret_ratio:.2f}\n"
            f"best by results: {best.get('arm')} P(best)={best.get('probability_best', 0):.3f}; "
            f"verdict: {self.results.get('verdict', {}).get('text')}"
        )


def setup(base: str, key: str, rates: dict[str, float], epoch_s: float, burn_in: int) -> None:
    experiment = {
        "status": "running",
        "control": "classic",
        "goal": {"event": "ORDER_CHECKOUT", "type": "binary"},
        "arms": [{"id": arm, "payload": {"creative": arm}} for arm in rates],
        "allocation": {"mode": "bandit", "epoch_s": epoch_s, "burn_in_exposures": burn_in, "exploration_floor": FLOOR},
    }
    model = {
        "nodes": [
            {"id": "hero", "kind": "experiment", "experiment": key},
            {"id": "answer", "kind": "output", "value": {"banner": "hero.arm"}},
        ]
    }
    httpx.put(f"{base}/v1/experiments/{key}", headers=ADMIN, json=experiment).raise_for_status()
    httpx.put(f"{base}/v1/models/{key}-model?publish=1", headers=ADMIN, json=model).raise_for_status()


def even_regret(guests: int, rates: dict[str, float]) -> float:
    """Expected conversions an even split loses against always serving the best arm."""
    return guests * (max(rates.values()) - float(np.mean(list(rates.values()))))


async def _one(
    client: httpx.AsyncClient, bases: list[str], key: str, rates: dict[str, float], i: int, rng_u: float, out: SimResult
) -> None:
    serve, reward_to = bases[i % len(bases)], bases[(i + 1) % len(bases)]
    r = await client.post(
        f"{serve}/v1/decide/{key}-model", headers=PUBLIC, json={"guest": {"guest_ref": f"sim-{i}"}, "context": {}}
    )
    r.raise_for_status()
    body = r.json()
    arm = body["outputs"]["banner"]
    out.served[arm] += 1
    out.by_server[serve] += 1
    out.regret += max(rates.values()) - rates[arm]
    if rng_u < rates[arm]:
        out.conversions += 1
        rr = await client.post(
            f"{reward_to}/v1/experiments/{key}/rewards", headers=PUBLIC, json={"decision_id": body["decision_id"]}
        )
        rr.raise_for_status()


def _epoch(base: str, key: str) -> str:
    return str(httpx.get(f"{base}/v1/experiments/{key}", headers=ADMIN).json()["allocation_now"]["epoch"])


async def _simulate(
    bases: list[str], key: str, rates: dict[str, float], guests: int, waves: int, seed: int, concurrency: int
) -> SimResult:
    rng = np.random.default_rng(seed)
    uniforms = rng.random(guests)
    out = SimResult(guests, 0.0, even_regret(guests, rates))
    per_wave = -(-guests // waves)
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10) as client:

        async def bounded(i: int) -> None:
            async with limit:
                await _one(client, bases, key, rates, i, float(uniforms[i]), out)

        for start in range(0, guests, per_wave):
            before = [await asyncio.to_thread(_epoch, b, key) for b in bases]
            await asyncio.gather(*(bounded(i) for i in range(start, min(start + per_wave, guests))))
            # Let every process move to a new epoch before the next wave, so each wave learns from the last.
            for b, e in zip(bases, before, strict=True):
                await asyncio.to_thread(_wait, lambda b=b, e=e: _epoch(b, key) != e, 30, "the next allocation epoch")
        r = await client.get(f"{bases[-1]}/v1/experiments/{key}/results", headers=ADMIN)
        out.results = r.json()
    return out


def simulate(
    bases: list[str],
    *,
    key: str = "sim-hero",
    rates: dict[str, float] = RATES,
    guests: int = 3000,
    waves: int = 15,
    seed: int = SEED,
    epoch_s: float = 0.3,
    burn_in: int = BURN_IN,
    concurrency: int = 16,
) -> SimResult:
    setup(bases[0], key, rates, epoch_s, burn_in)
    for base in bases:  # peers pick the new experiment up within their refresh interval
        _wait(lambda b=base: httpx.get(f"{b}/v1/experiments/{key}", headers=ADMIN).status_code == 200, 10, "experiment")
    return asyncio.run(_simulate(bases, key, rates, guests, waves, seed, concurrency))


def replay(rates: dict[str, float], guests: int, waves: int, seed: int, burn_in: int = BURN_IN) -> tuple[float, float]:
    """The wave schedule of ``simulate`` against the policy alone: (regret ratio, the best arm's P(best)).

    Each wave is allocated from every earlier wave's counts — what ``simulate`` gets when each wave's
    rewards reach Redis before the next epoch — so its spread is the policy's own, without timing.
    """
    rng = np.random.default_rng(seed)
    p = np.array(list(rates.values()))
    policy = Policy(exploration_floor=FLOOR, burn_in_exposures=burn_in)
    tallies, regret, per_wave = [Tally() for _ in p], 0.0, -(-guests // waves)
    for start in range(0, guests, per_wave):
        counts = rng.multinomial(min(per_wave, guests - start), allocate(policy, tallies, rng))
        wins = rng.binomial(counts, p)
        regret += float(counts @ (p.max() - p))
        tallies = [t + Tally(int(n), int(c), float(c), float(c)) for t, n, c in zip(tallies, counts, wins, strict=True)]
    best = probability_best(posterior_draws(policy, tallies, rng, MC_DRAWS))[int(np.argmax(p))]
    return regret / even_regret(guests, rates), float(best)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--waves", type=int, default=40)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--redis", help="an existing Redis; default: start a redis-server")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rates", help="arm=rate,… (default: %(default)s)", default=",".join(f"{k}={v}" for k, v in RATES.items())
    )
    parser.add_argument("--replay", type=int, metavar="N", help="replay the schedule N times in-process instead")
    args = parser.parse_args(argv)
    rates = {k: float(v) for k, v in (pair.split("=") for pair in args.rates.split(","))}
    if args.replay:
        runs = np.array([replay(rates, args.guests, args.waves, args.seed + i) for i in range(args.replay)])
        ratio, best = runs[:, 0], runs[:, 1]
        print(f"{args.replay} replays, guests={args.guests} waves={args.waves} rates={rates}")
        print(
            f"regret ratio: median {np.median(ratio):.3f} p99 {np.quantile(ratio, 0.99):.3f} max {ratio.max():.3f}; "
            f">= 0.4 in {int((ratio >= 0.4).sum())}, >= 0.6 in {int((ratio >= 0.6).sum())}"
        )
        print(
            f"best arm's P(best): median {np.median(best):.3f} min {best.min():.3f}; "
            f"<= 0.9 in {int((best <= 0.9).sum())}"
        )
        return 0
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(redis_server())
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bases = stack.enter_context(engines(url, args.servers, logs))
        t0 = time.perf_counter()
        result = simulate(
            bases, rates=rates, guests=args.guests, waves=args.waves, seed=args.seed, concurrency=args.concurrency
        )
        print(f"seed={args.seed} servers={args.servers} elapsed={time.perf_counter() - t0:.1f}s")
        print(result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
