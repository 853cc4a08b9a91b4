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
import collections
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import uvloop

from benchmarks.data import decide_bodies

PERCENTILES = (50, 90, 99, 99.9)
CLOCK = time.perf_counter
"""uvloop's ``loop.time()`` ticks in whole milliseconds: too coarse for latency."""


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


class _Timeline:
    """Shared state of one run: the requests, the due times, who is idle, what is waiting."""

    def __init__(self, requests: list[bytes], total: int) -> None:
        self.requests = requests
        self.latencies_ms = np.full(total, np.nan)
        self.backlog: collections.deque[tuple[int, float]] = collections.deque()
        self.idle: list[_Connection] = []
        self.ok = 0
        self.errors = 0
        self.expected = total
        self.all_done = asyncio.Event()

    def dispatch(self, i: int, due_s: float) -> None:
        if self.idle:
            self.idle.pop().send(i, due_s)
        else:
            self.backlog.append((i, due_s))

    def finished(self, conn: _Connection, i: int, due_s: float, status: int) -> None:
        self.latencies_ms[i] = (CLOCK() - due_s) * 1000
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.errors += 1
        if self.ok + self.errors >= self.expected:
            self.all_done.set()
        if self.backlog:
            conn.send(*self.backlog.popleft())
        else:
            self.idle.append(conn)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; callbacks only (no task per request), to keep the client cheap."""

    def __init__(self, timeline: _Timeline) -> None:
        self.timeline = timeline
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.current: tuple[int, float] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.timeline.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self in self.timeline.idle:
            self.timeline.idle.remove(self)

    def send(self, i: int, due_s: float) -> None:
        if self.transport is None:
            self.timeline.backlog.appendleft((i, due_s))
            return
        self.current = (i, due_s)
        self.transport.write(self.timeline.requests[i % len(self.timeline.requests)])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.current is None:
            return
        head = self.buf[:end]
        length = 0
        at = head.lower().find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length :]
        i, due_s = self.current
        self.current = None
        self.timeline.finished(self, i, due_s, int(head[9:12]))


async def run(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    drain_s: float = 5.0,
) -> Report:
    """Send ``rate × duration_s`` of ``requests`` (cycled) on a fixed timeline; measure from due time."""
    loop = asyncio.get_running_loop()
    total = int(rate * duration_s)
    tl = _Timeline(requests, total)
    conns = [await loop.create_connection(lambda: _Connection(tl), host, port) for _ in range(connections)]
    start = CLOCK() + 0.01
    sent = 0
    interval_s = 1.0 / rate
    while sent < total and CLOCK() < start + duration_s + drain_s:
        now = CLOCK()
        # Release every request already due: the timer fires late by up to ~1 ms (uvloop's timer
        # resolution), which counts in the latency; requests are never skipped.
        while sent < total and start + sent * interval_s <= now:
            tl.dispatch(sent, start + sent * interval_s)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent * interval_s - CLOCK()))
    tl.expected = sent
    if tl.ok + tl.errors < sent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tl.all_done.wait(), drain_s)
    elapsed_s = CLOCK() - start
    for transport, _ in conns:
        transport.close()
    done = tl.latencies_ms[~np.isnan(tl.latencies_ms)]
    return Report(rate, sent, tl.ok, tl.errors, sent - len(done), elapsed_s, done)


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
