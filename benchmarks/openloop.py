"""An open-loop HTTP/1.1 load generator: fixed request rate, latency from the *intended* send time.

wrk (closed loop) waits for a response before sending the next request on a connection, so when the
server stalls it stops sending, and the stall shows up as one slow request instead of the hundreds that
would have queued behind it (coordinated omission). Here request ``i`` is due at ``start + i / rate``
whatever happened before; it is handed to the first idle connection, and its latency runs from when it
was due to when its response's last byte arrived. Queueing for a connection counts.

A warm-up (``warmup_s``) runs first on the same timeline and connections, at the same rate, and is reported apart:
a worker idle for a few seconds (between two runs of the harness; a worker just added to a pool) answers its first
requests up to twice as slowly (its caches are cold), and at 80-90 % of its capacity the queue that builds in that
half-second set a 10 s run's p99 at 15-100 ms where the same rate, warm, held 3 ms (benchmarks/RESULTS.md, session 15).
That is a start-up transient, not the steady state a fixed-rate run measures; the warm-up's own p99 and max show it.

Bounded: ``rate × (warmup_s + duration_s)`` requests at most, and at most ``warmup_s + duration_s + drain_s`` of wall
time; requests still unanswered at the end are reported as ``timeouts``. Loopback only.

Run: python -m benchmarks.openloop --port 8080 --path /v1/decide/realistic --rate 1000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import uvloop

from benchmarks.data import decide_bodies

PERCENTILES = (50, 90, 99, 99.9)
CLOCK = time.perf_counter
"""uvloop's ``loop.time()`` ticks in whole milliseconds: too coarse for latency."""
TICK_MIN_S = 0.0002
"""Requests due closer together than this are released together, one timer expiry each 200 µs at most."""


@dataclass(slots=True)
class Report:
    rate: float
    sent: int
    ok: int
    errors: int
    timeouts: int
    elapsed_s: float
    latencies_ms: np.ndarray
    late_ms: np.ndarray
    """How late each request was released after its due time: the generator's own delay (its timer, or its
    process waiting for a core), which every latency above includes. Next to a high latency percentile, a low
    lateness puts the wait in the server or the network, a high one in the generator."""
    warmup_s: float = 0.0
    warmup_latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """The warm-up's requests (not in any figure above): answered ones only; unanswered ones count in ``timeouts``."""
    warmup_errors: int = 0

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
        late = self.late_ms
        out["late_p99_ms"] = round(float(np.percentile(late, 99)), 3) if len(late) else float("nan")
        out["late_max_ms"] = round(float(late.max()), 3) if len(late) else float("nan")
        if self.warmup_s:
            warm = self.warmup_latencies_ms
            out["warmup_s"] = self.warmup_s
            out["warmup_errors"] = self.warmup_errors
            out["warmup_p99_ms"] = round(float(np.percentile(warm, 99)), 3) if len(warm) else float("nan")
            out["warmup_max_ms"] = round(float(warm.max()), 3) if len(warm) else float("nan")
        return out


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _Timeline:
    """Shared state of one run: the requests, the due times, who is idle, what is waiting."""

    def __init__(self, requests: list[bytes], total: int, measured_from: int = 0) -> None:
        self.requests = requests
        self.latencies_ms = np.full(total, np.nan)
        self.backlog: collections.deque[tuple[int, float]] = collections.deque()
        self.idle: list[_Connection] = []
        self.measured_from = measured_from
        """Requests before this index are the warm-up's: their answers count apart."""
        self.ok = 0
        self.errors = 0
        self.warmup_errors = 0
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
        elif i < self.measured_from:
            self.warmup_errors += 1
        else:
            self.errors += 1
        if self.ok + self.errors + self.warmup_errors >= self.expected:
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


class _Ticker:
    """A periodic kernel timer (Linux ``timerfd``, through ctypes: Python 3.11 has no ``os.timerfd_*``) that the
    event loop polls like a socket.

    Why not ``asyncio.sleep``: uvloop rounds a timer to whole milliseconds, so a sleep shorter than that returns
    at once, and between requests due less than 1 ms apart the generator spun: it burnt a whole core at
    2,000 req/s (10.6 s of CPU in a 10 s run), one of the two it shares with the servers it measures. Sleeping at
    least 1 ms instead released requests up to ~1-2 ms late, which their latency (from the due time) counted:
    p50 0.23 → 1.25 ms against the floor at 2,000/s. A timerfd expires on time to tens of µs and costs one
    wake-up per tick.
    """

    _CLOCK_MONOTONIC, _TFD_NONBLOCK, _TFD_CLOEXEC = 1, 0o4000, 0o2000000

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", ctypes.c_long * 2), ("it_value", ctypes.c_long * 2)]  # (tv_sec, tv_nsec) each

    def __init__(self, first_in_s: float, interval_s: float) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.timerfd_create(self._CLOCK_MONOTONIC, self._TFD_NONBLOCK | self._TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        spec = self._Itimerspec()
        spec.it_interval[:] = _timespec(interval_s)
        spec.it_value[:] = _timespec(max(first_in_s, 1e-6))  # zero would disarm it
        if libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None) != 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def consume(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)  # the expiry count; reading re-arms readiness

    def close(self) -> None:
        os.close(self.fd)


def _timespec(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


async def run(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    drain_s: float = 5.0,
    warmup_s: float = 0.0,
) -> Report:
    """Send ``rate × (warmup_s + duration_s)`` of ``requests`` (cycled) on a fixed timeline; measure from due time,
    the first ``warmup_s`` apart (see the module's docstring)."""
    loop = asyncio.get_running_loop()
    warm = int(rate * warmup_s)
    total = warm + int(rate * duration_s)
    tl = _Timeline(requests, total, warm)
    conns = [await loop.create_connection(lambda: _Connection(tl), host, port) for _ in range(connections)]
    interval_s = 1.0 / rate
    start = CLOCK() + 0.01
    ticker = _Ticker(start - CLOCK(), max(interval_s, TICK_MIN_S))
    released = asyncio.Event()
    late_ms = np.zeros(total)
    sent = 0

    def tick() -> None:
        # Release every request already due; a tick that runs late (the loop was busy) counts in their latency,
        # and no request is ever skipped.
        nonlocal sent
        ticker.consume()
        now = CLOCK()
        while sent < total and (due_s := start + sent * interval_s) <= now:
            late_ms[sent] = (now - due_s) * 1000
            tl.dispatch(sent, due_s)
            sent += 1
        if sent >= total or now >= start + warmup_s + duration_s + drain_s:
            loop.remove_reader(ticker.fd)
            released.set()

    loop.add_reader(ticker.fd, tick)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), warmup_s + duration_s + drain_s + 1.0)
    finally:
        loop.remove_reader(ticker.fd)
        ticker.close()
    tl.expected = sent
    if tl.ok + tl.errors + tl.warmup_errors < sent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tl.all_done.wait(), drain_s)
    elapsed_s = CLOCK() - start - warmup_s
    for transport, _ in conns:
        transport.close()
    warm = min(warm, sent)
    measured, warm_lat = tl.latencies_ms[warm:sent], tl.latencies_ms[:warm]
    done, warm_done = measured[~np.isnan(measured)], warm_lat[~np.isnan(warm_lat)]
    ok = tl.ok - (len(warm_done) - tl.warmup_errors)  # the warm-up's answered requests that were not errors
    timeouts = sent - len(done) - len(warm_done)
    return Report(
        rate, sent - warm, ok, tl.errors, timeouts, elapsed_s, done, late_ms[warm:sent],
        warmup_s, warm_done, tl.warmup_errors,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/decide/realistic")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending, measured")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of sending first, reported apart")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--api-key", default="demo-public")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load generator only targets loopback")
    headers = {"X-API-Key": args.api_key}
    reqs = [request_bytes(args.host, args.port, args.path, b, headers) for b in decide_bodies(10_000, args.guests)]
    report = uvloop.run(
        run(
            args.host,
            args.port,
            reqs,
            rate=args.rate,
            duration_s=args.duration,
            connections=args.connections,
            warmup_s=args.warmup,
        )
    )
    json.dump(report.as_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
