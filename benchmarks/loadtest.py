"""The load harness: real Redis, the floor app and Arbiter, driven at saturation and at fixed rates.

One command (``make bench-load``) runs, on this machine and in this order:

1. a ``redis-server`` on a free loopback port in its own temp dir (AOF on, ``appendfsync everysec``:
   the production setting that makes accepted events durable), seeded with ``--guests`` guests with
   history (benchmarks/data.py) plus, for the floor, one guest-sized string per guest;
2. the floor (benchmarks/floor_app.py) under uvicorn with ``--workers``: saturation with wrk, then
   open-loop fixed rates (benchmarks/openloop.py) at fractions of the floor's saturation throughput;
3. Arbiter (``python -m engine serve``) with the scenario models (benchmarks/scenario/) and the same
   workers: the same runs against ``POST /v1/decide/realistic``, then ``POST /v1/events`` if the
   endpoint exists; then the per-node timings Arbiter's ``/metrics`` reports.

Servers run one at a time, so each has the machine (2 cores shared with wrk/openloop and Redis). Every
phase is bounded in time; every process started here is stopped here, by its own process group.

Run: python -m benchmarks.loadtest [--workers 2] [--guests 20000] [--duration 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import uvloop

from benchmarks import openloop
from benchmarks.data import decide_bodies, event_bodies, guest_documents, seed_guests
from benchmarks.floor_app import floor_key

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIO_DIR = HERE / "scenario"
MODEL = "realistic"
PUBLIC_KEY = "bench-public"
ADMIN_KEY = "bench-admin"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def http_get(port: int, path: str, timeout_s: float = 2.0) -> bytes:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=timeout_s) as resp:  # noqa: S310
        return bytes(resp.read())


def http_post(port: int, path: str, body: bytes, timeout_s: float = 5.0) -> int:
    req = urllib.request.Request(  # noqa: S310 — loopback only
        f"http://{LOOPBACK}:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json", "X-API-Key": PUBLIC_KEY},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group (uvicorn forks workers), stopped with the whole group."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir), "--save", ""]
    cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
    with process(cmd):
        url = f"redis://{LOOPBACK}:{port}/0"
        client = redis.Redis.from_url(url)
        wait_until(client.ping, 10, "redis-server")
        client.close()
        yield url


def seed(url: str, guests: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    seed_guests(url, guests)
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for k, guest in enumerate(guest_documents(guests), 1):
            pipe.set(floor_key(guest["ref"]), json.dumps(guest, separators=(",", ":")))
            if k % 2000 == 0:
                pipe.execute()
        pipe.execute()
        used = int(client.info("memory")["used_memory"])
    finally:
        client.close()
    return {"guests": guests, "seconds": round(time.perf_counter() - t0, 1), "redis_used_memory": used}


def wrk(port: int, mode: str, guests: int, duration_s: float, connections: int, threads: int) -> dict[str, Any]:
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    cmd = [exe, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "5s"]
    cmd += ["-s", str(HERE / "wrk_decide.lua"), f"http://{LOOPBACK}:{port}", "--", mode, MODEL, str(guests)]
    env = {**os.environ, "ARBITER_PUBLIC_KEY": PUBLIC_KEY}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    match = re.search(r"^WRK_JSON (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def open_loop(port: int, path: str, bodies: list[bytes], rate: float, duration_s: float) -> dict[str, Any]:
    headers = {"X-API-Key": PUBLIC_KEY}
    reqs = [openloop.request_bytes(LOOPBACK, port, path, b, headers) for b in bodies]
    report = uvloop.run(openloop.run(LOOPBACK, port, reqs, rate=rate, duration_s=duration_s))
    return report.as_dict()


def node_timings(port: int) -> list[dict[str, Any]]:
    """Mean and count per (node, kind) from ``arbiter_node_seconds``, plus ``arbiter_decision_seconds``.

    With several workers each has its own registry, so this is the view of whichever worker answered.
    """
    text = http_get(port, "/metrics").decode()
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], float] = {}
    pattern = r"^arbiter_(node|decision)_seconds_(sum|count)\{([^}]*)\} (\S+)$"
    for kind_, stat, labels, value in re.findall(pattern, text, re.M):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = (
            (lab.get("node", "(decision: fetch+evaluate)"), lab.get("kind", "-"))
            if kind_ == "node"
            else ("(decision: fetch+evaluate)", "-")
        )
        (sums if stat == "sum" else counts)[key] = float(value)
    return [
        {"node": n, "kind": k, "count": int(counts[(n, k)]), "mean_us": round(sums[(n, k)] / counts[(n, k)] * 1e6, 1)}
        for (n, k) in sorted(counts)
        if counts[(n, k)]
    ]


def server_env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLOOR_REDIS_URL": redis_url,
        "ARBITER_PUBLIC_KEY": PUBLIC_KEY,
        "ARBITER_ADMIN_KEY": ADMIN_KEY,
        "PYTHONPATH": str(ROOT),
    }


def floor_cmd(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.floor_app:app",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def arbiter_cmd(port: int, workers: int, redis_url: str, models_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--port",
        str(port),
        "--models",
        str(models_dir),
        "--redis",
        redis_url,
        "--workers",
        str(workers),
        "--quiet",
    ]


def measure(
    name: str,
    port: int,
    path: str,
    bodies: list[bytes],
    floor_rps: float | None,
    args: argparse.Namespace,
    mode: str = "decide",
) -> dict[str, Any]:
    """Warm up, saturate with wrk, then open-loop runs at fractions of the floor's saturation rate."""
    wrk(port, mode, args.guests, args.warmup, args.connections, args.wrk_threads)
    sat = wrk(port, mode, args.guests, args.duration, args.connections, args.wrk_threads)
    print(f"  {name}: saturation {sat['rps']:.0f} req/s, p99 {sat['p99_ms']} ms", file=sys.stderr)
    base = floor_rps if floor_rps is not None else sat["rps"]
    fixed = []
    for frac in args.fractions:
        rate = max(1.0, round(base * frac))
        run = open_loop(port, path, bodies, rate, args.duration)
        run["fraction_of_floor"] = frac
        fixed.append(run)
        print(
            f"  {name}: {rate:.0f} req/s open loop → p99 {run['p99_ms']} ms, p99.9 {run['p99.9_ms']} ms",
            file=sys.stderr,
        )
    return {"saturation": sat, "fixed_rate": fixed}


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"workers": args.workers, "guests": args.guests, "duration_s": args.duration}
    decide_path = f"/v1/decide/{MODEL}"
    bodies = decide_bodies(10_000, args.guests)
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-") as tmp, running_redis(Path(tmp)) as url:
        report["seed"] = seed(url, args.guests)
        print(f"seeded {args.guests} guests in {report['seed']['seconds']} s", file=sys.stderr)
        env = server_env(url)

        port = free_port()
        with process(floor_cmd(port, args.workers), env):
            wait_until(lambda: http_get(port, "/health"), 30, "the floor app")
            report["floor"] = measure("floor", port, decide_path, bodies, None, args)
        floor_rps = float(report["floor"]["saturation"]["rps"])

        port = free_port()
        with process(arbiter_cmd(port, args.workers, url, args.models), env):
            try:
                wait_until(lambda: http_get(port, "/ready"), 60, "arbiter")
            except TimeoutError:
                raise SystemExit("arbiter did not start: run its command by hand to see why") from None
            first = http_post(port, decide_path, bodies[0])
            if first != 200:
                raise SystemExit(f"decide answered {first}: is the scenario model valid on this branch?")
            report["decide"] = measure("decide", port, decide_path, bodies, floor_rps, args)
            report["nodes"] = node_timings(port)
            ev = event_bodies(10_000, args.guests)
            status = http_post(port, "/v1/events", ev[0])
            if status in (404, 405):
                report["events"] = {"skipped": f"POST /v1/events answered {status}: not on this branch yet"}
            else:
                report["events"] = measure("events", port, "/v1/events", ev, None, args, mode="events")
    report["ratios"] = {
        "decide_over_floor_throughput": round(report["decide"]["saturation"]["rps"] / floor_rps, 3),
    }
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"workers={report['workers']} guests={report['guests']} duration={report['duration_s']}s per run",
        "",
        "| target | load | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx / lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("floor", "decide", "events"):
        r = report.get(name)
        if not r or "saturation" not in r:
            continue
        s = r["saturation"]
        lines.append(
            f"| {name} | saturation (wrk, closed loop) | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['p99.9_ms']:.2f} | {s['max_ms']:.2f} | {s['non2xx'] + s['socket_errors']} |"
        )
        for f in r["fixed_rate"]:
            lines.append(
                f"| {name} | {f['target_rps']:.0f}/s open loop ({f['fraction_of_floor']:.0%} of floor sat.) | "
                f"{f['achieved_rps']:.0f} | {f['p50_ms']:.2f} | {f['p90_ms']:.2f} | {f['p99_ms']:.2f} | "
                f"{f['p99.9_ms']:.2f} | {f['max_ms']:.2f} | {f['errors'] + f['timeouts']} |"
            )
    if "skipped" in report.get("events", {}):
        lines.append(f"\nevents: {report['events']['skipped']}")
    lines.append(f"\ndecide / floor throughput: {report['ratios']['decide_over_floor_throughput']:.2f}")
    lines += ["", "| node (one worker's /metrics) | kind | count | mean µs |", "|---|---|---:|---:|"]
    lines += [f"| {n['node']} | {n['kind']} | {n['count']} | {n['mean_us']} |" for n in report.get("nodes", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before measuring")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections at saturation")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--fractions",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.25, 0.5],
        help="open-loop rates as fractions of the floor's saturation throughput",
    )
    parser.add_argument("--models", type=Path, default=SCENARIO_DIR)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args(argv)
    report = run_all(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
