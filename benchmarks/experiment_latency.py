"""Decision latency with an experiment node, through real HTTP to a real server process and Redis.

    python -m benchmarks.experiment_latency --requests 5000

Sequential requests from one client (latency, not throughput): p50/p99 of ``/v1/decide/hero`` (an
experiment node choosing among three arms) against ``/v1/decide/next-best-offer`` (no experiment) and an
OFREP flag evaluation of the same experiment.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.bandit_sim import PUBLIC, ROOT, engines, redis_server


def measure(client: httpx.Client, url: str, bodies: list[dict], headers: dict[str, str]) -> np.ndarray:
    out = np.empty(len(bodies))
    for i, body in enumerate(bodies):
        t0 = time.perf_counter_ns()
        r = client.post(url, json=body, headers=headers)
        out[i] = (time.perf_counter_ns() - t0) / 1000
        r.raise_for_status()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args(argv)
    n = args.requests
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server())
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (base,) = stack.enter_context(engines(url, 1, logs, models=ROOT / "models"))
        with httpx.Client(base_url=base, timeout=5) as client:
            decide = [{"guest": {"guest_ref": f"g{i}"}, "context": {"channel": "WEB"}} for i in range(n)]
            flag = [{"context": {"targetingKey": f"g{i}"}} for i in range(n)]
            measure(client, "/v1/decide/hero", decide[:500], PUBLIC)  # warm up
            rows = [
                ("decide hero (experiment node)", measure(client, "/v1/decide/hero", decide, PUBLIC)),
                ("decide next-best-offer (none)", measure(client, "/v1/decide/next-best-offer", decide, PUBLIC)),
                ("OFREP flag hero-banner", measure(client, "/ofrep/v1/evaluate/flags/hero-banner", flag, PUBLIC)),
            ]
    print(f"{n} sequential requests each, one client, loopback, Redis store")
    for name, us in rows:
        print(f"{name:32s} p50 {np.percentile(us, 50) / 1000:6.2f} ms   p99 {np.percentile(us, 99) / 1000:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
