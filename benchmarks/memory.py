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
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from benchmarks.data import guest_documents, guest_ref, redis_fields
from benchmarks.loadtest import (
    ADMIN_KEY,
    LOOPBACK,
    MODEL,
    SCENARIO_DIR,
    arbiter_cmd,
    free_port,
    http_get,
    http_post,
    process,
    running_redis,
    server_env,
    wait_until,
)
from engine import keys

DISTINCT = 10_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def seed_many(url: str, n: int, batch: int = 5_000) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    t0 = time.perf_counter()
    before = int(client.info("memory")["used_memory"])
    templates = [redis_fields(g) for g in guest_documents(min(n, DISTINCT))]
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
    body = (SCENARIO_DIR / f"{MODEL}.json").read_bytes()
    for i in range(count):
        key = f"mem-{i:03d}"
        req = urllib.request.Request(  # noqa: S310 — loopback only
            f"http://{LOOPBACK}:{port}/v1/models/{key}?publish=1",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_KEY}"},
        )
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
        status = http_post(port, f"/v1/decide/{key}", b'{"guest": {"browser_id": "bench-0000001"}, "context": {}}')
        if status != 200:
            raise RuntimeError(f"decide on {key} answered {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=100)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="arbiter-mem-") as tmp, running_redis(Path(tmp)) as url:
        report["redis"] = seed_many(url, args.guests)
        print(f"seeded {args.guests} guests in {report['redis']['seed_seconds']} s", file=sys.stderr)
        port = free_port()
        with process(arbiter_cmd(port, 1, url, SCENARIO_DIR), server_env(url)) as proc:
            wait_until(lambda: http_get(port, "/ready"), 60, "arbiter")
            http_post(port, f"/v1/decide/{MODEL}", b'{"guest": {"browser_id": "bench-0000001"}, "context": {}}')
            report["worker_rss_mb_one_model"] = round(rss_bytes(proc.pid) / 2**20, 1)
            publish_copies(port, args.models)
            report["models"] = args.models + 1
            report["worker_rss_mb_with_models"] = round(rss_bytes(proc.pid) / 2**20, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
