"""Event ingestion load: throughput and latency of ``POST /v1/events`` against a real server and Redis.

Starts its own ``redis-server`` (AOF everysec, temp dir) and ``arbiter serve --redis`` on free ports, then
runs ``--concurrency`` closed-loop asyncio httpx clients for ``--duration`` seconds, each sending VIEW/ADD
events for browsers drawn from a pool (seeded). Prints requests/s, events/s and latency percentiles as JSON.
``--batch N`` sends N events per request (``{"events": [...]}``), each for a browser drawn independently —
a relay's batch, the hard case for grouping by guest.

    python -m benchmarks.bench_events --duration 10 --concurrency 32 --browsers 5000
    python -m benchmarks.bench_events --duration 10 --concurrency 8 --browsers 5000 --batch 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {"X-API-Key": "bench-public"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"not ready: {url}")


def one_event(rng: random.Random, browsers: int) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "VIEW", "channel": "WEB", "browser_id": f"bench-{rng.randrange(browsers)}", "language": "EN",
        "currency": "EUR", "page": f"p{rng.randrange(50)}", "ext": {"product_id": f"sku-{rng.randrange(500)}"},
    }  # fmt: skip
    if rng.random() < 0.2:
        body["type"] = "ADD"
        body["product"] = {"item_id": f"sku-{rng.randrange(500)}", "price": 10, "quantity": 1}
    return body


async def client(
    base: str, stop_at: float, rng: random.Random, args: argparse.Namespace, latencies_ms: list[float]
) -> int:
    errors = 0
    async with httpx.AsyncClient(base_url=base, headers=PUBLIC, timeout=10) as http:
        while time.perf_counter() < stop_at:
            if args.batch:
                body: object = {"events": [one_event(rng, args.browsers) for _ in range(args.batch)]}
            else:
                body = one_event(rng, args.browsers)
            t0 = time.perf_counter()
            r = await http.post("/v1/events", json=body)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 201
    return errors


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def load(base: str, args: argparse.Namespace, server_pid: int) -> dict[str, object]:
    latencies_ms: list[float] = []
    # Server CPU per event is the figure that survives a noisy shared VM: throughput moves with the
    # neighbours' load, CPU seconds spent per event much less.
    cpu0_s = cpu_s(server_pid)
    start = time.perf_counter()
    stop_at = start + args.duration
    rngs = [random.Random(args.seed + i) for i in range(args.concurrency)]
    errors = await asyncio.gather(*(client(base, stop_at, r, args, latencies_ms) for r in rngs))
    elapsed_s = time.perf_counter() - start
    server_cpu_s = cpu_s(server_pid) - cpu0_s
    lat = np.array(latencies_ms)
    return {
        "requests": len(lat), "errors": int(sum(errors)), "rps": round(len(lat) / elapsed_s, 1),
        "events_per_s": round(len(lat) * max(args.batch, 1) / elapsed_s, 1), "batch": args.batch,
        "server_cpu_us_per_event": round(server_cpu_s * 1e6 / max(len(lat) * max(args.batch, 1), 1)),
        "p50_ms": round(float(np.percentile(lat, 50)), 2), "p90_ms": round(float(np.percentile(lat, 90)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2),
        "concurrency": args.concurrency, "duration_s": args.duration, "browsers": args.browsers, "seed": args.seed,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--browsers", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=0, help="events per request (0: single-event bodies)")
    args = parser.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is required")
    with tempfile.TemporaryDirectory() as tmp:
        rport, port = free_port(), free_port()
        redis_proc = subprocess.Popen(
            [exe, "--port", str(rport), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        env = {**os.environ, "ARBITER_ADMIN_KEY": "bench-admin", "ARBITER_PUBLIC_KEY": "bench-public"}
        server = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--port", str(port), "--redis", f"redis://127.0.0.1:{rport}/0",
             "--workers", str(args.workers), "--quiet"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{base}/ready")
            print(json.dumps(asyncio.run(load(base, args, server.pid)), indent=2))
        finally:
            server.terminate()
            server.wait(timeout=15)
            redis_proc.terminate()
            redis_proc.wait(timeout=15)


if __name__ == "__main__":
    main()
