"""Memory: RSS of one Arbiter worker with 100 models loaded, and Redis memory with 1 M guests.

1. A redis-server on a free loopback port (own temp dir, no persistence) gets ``--guests`` guests from
   the shared generator, pipelined: 10 000 distinct seeded documents, re-keyed to reach the count (same
   size distribution, a few seconds per million instead of minutes). Reports ``used_memory`` per guest and
   ``MEMORY USAGE`` of typical keys.
2. One Arbiter worker on that Redis, first idle, then after ``--models`` copies of the scenario model were
   uploaded, published and served once each (so every plan is compiled and cached): RSS from /proc.
3. Memory that grows with traffic rather than guests: ``--units`` bandit exposures written through
   ``RedisLedger.expose`` as decisions served at each of ``--rates`` (decisions/s, so the minute hashes fill
   as they would), on an empty Redis each: ``used_memory`` per attribution unit.

Run: python -m benchmarks.memory [--guests 1000000] [--models 100] [--units 200000] [--rates 10,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from benchmarks import _http, scenario_setup, servers
from benchmarks.data import decide_bodies, guest_documents, guest_ref
from benchmarks.scenario_setup import MODEL_FILE
from benchmarks.servers import ADMIN_KEY, PUBLIC_KEY
from engine import keys
from engine.ids import timed_id
from engine.ledger import Exposure, RedisLedger
from engine.store.redis import RedisStore, guest_fields

DISTINCT = 10_000
ONE_DECISION = b'{"guest": {"browser_id": "bench-0000001"}, "context": {"category": "shoes", "now": "2026-11-23"}}'


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def seed_many(url: str, n: int, batch: int = 5_000) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    t0 = time.perf_counter()
    before = int(client.info("memory")["used_memory"])
    templates = [guest_fields(g) for g in guest_documents(min(n, DISTINCT))]
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        fields = dict(templates[i % len(templates)])
        if i >= len(templates):  # the profile carries the ref: rewrite it so every guest is its own
            profile = orjson.loads(fields["profile"])
            profile["ref"] = guest_ref(i)
            fields["profile"] = orjson.dumps(profile)
        pipe.hset(keys.guest(guest_ref(i)), mapping=fields)  # type: ignore[arg-type]
        if (i + 1) % batch == 0:
            pipe.execute()
    pipe.execute()
    seconds = time.perf_counter() - t0
    used = int(client.info("memory")["used_memory"]) - before
    sample = [client.memory_usage(keys.guest(guest_ref(i))) or 0 for i in range(0, min(n, DISTINCT), 7)]
    client.close()
    return {
        "guests": n,
        "seed_seconds": round(seconds, 1),
        "redis_used_memory_mb": round(used / 2**20, 1),
        "redis_bytes_per_guest": round(used / n),
        "memory_usage_key_median": int(np.median(sample)),
        "memory_usage_key_p99": int(np.percentile(sample, 99)),
    }


def publish_copies(port: int, count: int) -> None:
    """Upload and publish ``count`` copies of the scenario model, and serve each once (plans compiled)."""
    body = MODEL_FILE.read_bytes()
    for i in range(count):
        key = f"mem-{i:03d}"
        status, answer = _http.call(port, "PUT", f"/v1/models/{key}?publish=1", body, key=ADMIN_KEY, timeout_s=10)
        if status not in (200, 201):
            raise RuntimeError(f"upload of {key} answered {status}: {answer[:300]!r}")
        status, _ = _http.call(port, "POST", f"/v1/decide/{key}", ONE_DECISION, key=PUBLIC_KEY)
        if status != 200:
            raise RuntimeError(f"decide on {key} answered {status}")


async def _expose_at_rate(url: str, n: int, rate_per_s: float, window_s: int) -> None:
    store = RedisStore(url)
    ledger = RedisLedger(store)
    start_ms = int(time.time() * 1000) - int(n / rate_per_s * 1000)  # the last decision is now's
    try:
        for first in range(0, n, 500):
            batch = []
            for i in range(first, min(n, first + 500)):
                at_ms = start_ms + int(i * 1000 / rate_per_s)
                decision_id = timed_id(at_ms)
                batch.append(
                    Exposure("memprobe", f"arm-{i % 3}", "1.0", decision_id, decision_id, None, at_ms, window_s, False)
                )
            await ledger.expose(batch)
    finally:
        await store.close()


def unit_memory(url: str, n: int, rate_per_s: float, window_s: int = 7 * 86400) -> dict[str, Any]:
    """Redis memory per bandit attribution unit, for decisions served at ``rate_per_s``."""
    client = redis.Redis.from_url(url)
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    asyncio.run(_expose_at_rate(url, n, rate_per_s, window_s))
    used = int(client.info("memory")["used_memory"]) - before
    key_count = client.dbsize()
    client.close()
    return {"rate_per_s": rate_per_s, "units": n, "keys": key_count, "redis_bytes_per_unit": round(used / n)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--units", type=int, default=200_000)
    parser.add_argument("--rates", default="10,1000", help="decisions/s to file the units at, comma-separated")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="arbiter-mem-") as tmp, servers.running_redis(Path(tmp)) as url:
        if args.units:
            report["attribution_units"] = [unit_memory(url, args.units, float(r)) for r in args.rates.split(",")]
            redis.Redis.from_url(url).flushall()
        report["redis"] = seed_many(url, args.guests)
        print(f"seeded {args.guests} guests in {report['redis']['seed_seconds']} s", file=sys.stderr)
        with (
            servers.running_stub(Path(tmp)) as stub,
            servers.running_arbiter(Path(tmp), url, 1) as arbiter,
        ):
            # One worker: ``arbiter serve`` runs uvicorn in its own process, so its pid is the worker's.
            bodies = decide_bodies(100, min(args.guests, DISTINCT))
            scenario_setup.install_checked(arbiter.port, stub.port, ADMIN_KEY, PUBLIC_KEY, bodies)
            report["worker_rss_mb_one_model"] = round(rss_bytes(arbiter.pid) / 2**20, 1)
            publish_copies(arbiter.port, args.models)
            report["models"] = args.models + 1
            report["worker_rss_mb_with_models"] = round(rss_bytes(arbiter.pid) / 2**20, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
