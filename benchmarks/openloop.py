"""An open-loop HTTP/1.1 load generator: fixed request rate, latency from the *intended* send time.

wrk (closed loop) waits for a response before sending the next request on a connection, so when the
server stalls it stops sending, and the stall shows up as one slow request instead of the hundreds that
would have queued behind it (coordinated omission). Here request ``i`` is due at ``start + i / rate``
whatever happened before; it is handed to the first idle connection, and its latency runs from when it
was due to when its response's last byte arrived. Queueing for a connection counts.

Bounded: ``rate × duration_s`` requests at most, and at most ``duration_s + drain_s`` of wall time;
requests still unanswered at the end are reported as ``timeouts``. Loopback only.

Run: python -m benchmarks.openloop --port 8080 --path /v1/decide/realistic --rate 1000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import uvloop

from benchmarks.data import decide_bodies

PERCENTILES = (50, 90, 99, 99.9)


@dataclass(slots=True)
class Report:
    rate: float
    sent: int
    ok: int
    errors: int
    timeouts: int
    elapsed_s: float
    latencies_ms: np.ndarray

    def as_dict(self) -> dict[str, float | int]:
        lat = self.latencies_ms
        out: dict[str, float | int] = {
            "target_rps": self.rate,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "achieved_rps": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
        }
        for p in PERCENTILES:
            out[f"p{p}_ms"] = round(float(np.percentile(lat, p)), 3) if len(lat) else float("nan")
        out["max_ms"] = round(float(lat.max()), 3) if len(lat) else float("nan")
        return out


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length framed, as uvicorn sends small bodies); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def run(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    drain_s: float = 5.0,
    timeout_s: float = 5.0,
) -> Report:
    """Send ``rate × duration_s`` of ``requests`` (cycled) on a fixed timeline; measure from due time."""
    loop = asyncio.get_running_loop()
    total = int(rate * duration_s)
    due: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    latencies = np.full(total, np.nan)
    counts = {"ok": 0, "errors": 0}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                i, due_at = await due.get()
                writer.write(requests[i % len(requests)])
                status = await asyncio.wait_for(read_response(reader), timeout_s)
                latencies[i] = (loop.time() - due_at) * 1000
                counts["ok" if 200 <= status < 300 else "errors"] += 1
        finally:
            writer.close()

    workers = [loop.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections up before the clock starts
    start = loop.time() + 0.01
    sent = 0
    interval_s = 1.0 / rate
    while sent < total and loop.time() < start + duration_s + drain_s:
        now = loop.time()
        # Release every request already due: the timer fires late by up to ~1 ms, requests are never skipped.
        while sent < total and start + sent * interval_s <= now:
            due.put_nowait((sent, start + sent * interval_s))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent * interval_s - loop.time()))
    deadline = loop.time() + drain_s
    while counts["ok"] + counts["errors"] < sent and loop.time() < deadline and any(not w.done() for w in workers):
        await asyncio.sleep(0.01)
    elapsed_s = loop.time() - start
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    done = latencies[~np.isnan(latencies)]
    return Report(rate, sent, counts["ok"], counts["errors"], sent - len(done), elapsed_s, done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/decide/realistic")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--api-key", default="demo-public")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load generator only targets loopback")
    headers = {"X-API-Key": args.api_key}
    reqs = [request_bytes(args.host, args.port, args.path, b, headers) for b in decide_bodies(10_000, args.guests)]
    report = uvloop.run(
        run(args.host, args.port, reqs, rate=args.rate, duration_s=args.duration, connections=args.connections)
    )
    json.dump(report.as_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
