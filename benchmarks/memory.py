"""Memory: RSS of one Arbiter worker with 100 models loaded, and Redis memory with 1 M guests.

1. A redis-server on a free loopback port (own temp dir, no persistence) gets ``--guests`` guests from
   the shared generator, pipelined: 10 000 distinct seeded documents, re-keyed to reach the count (same
   size distribution, a few seconds per million instead of minutes). Reports ``used_memory`` per guest and
   ``MEMORY USAGE`` of typical keys.
2. One Arbiter worker on that Redis, first idle, then after ``--models`` copies of the scenario model were
   uploaded, published and served once each (so every plan is compiled and cached): RSS from /proc.

Run: python -m benchmarks.memory [--guests 1000000] [--models 100]
"""

from __future__ import annotations

import argparse
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
from engine.store.redis import guest_fields

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=100)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="arbiter-mem-") as tmp, servers.running_redis(Path(tmp)) as url:
        report["redis"] = seed_many(url, args.guests)
        print(f"seeded {args.guests} guests in {report['redis']['seed_seconds']} s", file=sys.stderr)
        with (
            servers.running_stub(Path(tmp)) as stub,
            servers.running_arbiter(Path(tmp), url, 1) as arbiter,
        ):
            # One worker: ``arbiter serve`` runs uvicorn in its own process, so its pid is the worker's.
            scenario_setup.install(arbiter.port, stub.port, ADMIN_KEY)
            try:
                scenario_setup.check(arbiter.port, PUBLIC_KEY, decide_bodies(100, min(args.guests, DISTINCT)))
            except scenario_setup.NotClean as exc:
                raise SystemExit(str(exc)) from None
            report["worker_rss_mb_one_model"] = round(rss_bytes(arbiter.pid) / 2**20, 1)
            publish_copies(arbiter.port, args.models)
            report["models"] = args.models + 1
            report["worker_rss_mb_with_models"] = round(rss_bytes(arbiter.pid) / 2**20, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
