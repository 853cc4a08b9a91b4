"""Copy a harness's Redis (the scenario: models, connections, experiments, guests) into a Redis Cluster.

For measuring Arbiter on a cluster with the same data as on one Redis: keys are copied with DUMP/RESTORE (same
Redis version on both sides), each to the node that serves its slot.

    python -m benchmarks.loadtest --serve --guests 20000 &          # its redis-server's port: see `ps`
    python -m benchmarks.copy_to_cluster --from redis://127.0.0.1:PORT/0 --to redis+cluster://127.0.0.1:7001
    python -m benchmarks.inprocess --redis redis+cluster://127.0.0.1:7001 --requests 8000
"""

from __future__ import annotations

import argparse
import time

import redis


def copy(source_url: str, cluster_url: str, batch: int = 2_000) -> int:
    src = redis.Redis.from_url(source_url)
    dst = redis.RedisCluster.from_url("redis://" + cluster_url.removeprefix("redis+cluster://"))
    copied = 0
    pipe = dst.pipeline()
    for key in src.scan_iter(count=5_000):
        dumped = src.dump(key)
        if dumped is None:  # expired meanwhile
            continue
        ttl_ms = src.pttl(key)
        pipe.restore(key, max(ttl_ms, 0), dumped, replace=True)
        copied += 1
        if copied % batch == 0:
            pipe.execute()
    pipe.execute()
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="redis://host:port/db")
    parser.add_argument("--to", dest="cluster", required=True, help="redis+cluster://host:port")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    copied = copy(args.source, args.cluster)
    print(f"{copied} keys copied in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
