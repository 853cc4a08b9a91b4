"""The open-loop load generator (benchmarks/openloop.py): on schedule, latency from the due time, no spinning."""

from __future__ import annotations

import asyncio
import time

from benchmarks import openloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _Server(asyncio.Protocol):
    """Answers each request after ``delay_s`` (requests here are one write each, small enough for one read)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay_s, self.transport.write, RESPONSE)  # type: ignore[attr-defined]


async def _run(rate: float, duration_s: float, delay_s: float) -> tuple[openloop.Report, float, float]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Server(delay_s), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = openloop.request_bytes("127.0.0.1", port, "/x", b"{}", {})
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = await openloop.run("127.0.0.1", port, [request], rate=rate, duration_s=duration_s, connections=8)
        return report, time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        server.close()


def test_sends_every_request_on_schedule_and_counts_from_the_due_time() -> None:
    report, _, _ = asyncio.run(_run(rate=500, duration_s=0.6, delay_s=0.02))
    assert (report.sent, report.ok, report.errors, report.timeouts) == (300, 300, 0, 0)
    # 8 connections, 20 ms each, 500/s: 10 in flight at once, so requests queue for a connection; latency runs
    # from the due time, so it includes that wait (coordinated omission corrected) and never undercuts the delay.
    assert report.latencies_ms.min() >= 20
    assert report.latencies_ms.max() > 25
    assert report.elapsed_s >= 0.6


def test_requests_due_under_a_millisecond_apart_do_not_spin_the_generator() -> None:
    """Regression: with asyncio.sleep under uvloop, requests due < 1 ms apart made the generator spin, a whole
    core at 2,000 req/s. Generator and server share this process; spinning shows as CPU ≈ wall time."""
    import uvloop

    report, cpu_s, wall_s = uvloop.run(_run(rate=2000, duration_s=1.0, delay_s=0.0))
    assert report.ok == 2000
    assert cpu_s < 0.6 * wall_s, f"{cpu_s:.2f} s of CPU in {wall_s:.2f} s"


def test_a_generator_that_falls_behind_reports_how_late_it_sent() -> None:
    """The generator's own delay counts in every latency; its lateness says how much of a tail was its own."""

    async def blocked_once() -> tuple[openloop.Report, float, float]:
        asyncio.get_running_loop().call_later(0.2, time.sleep, 0.08)  # the generator's process stalls 80 ms
        return await _run(rate=500, duration_s=0.6, delay_s=0.0)

    report, _, _ = asyncio.run(blocked_once())
    assert len(report.late_ms) == report.sent == 300
    assert report.late_ms.min() >= 0
    assert report.late_ms.max() >= 60  # the requests due during the stall went out when it ended
    assert report.latencies_ms.max() >= report.late_ms.max()  # and their latency includes it
    assert report.as_dict()["late_max_ms"] == round(float(report.late_ms.max()), 3)


class _ColdServer(_Server):
    """Answers after ``delay_s`` until ``warm_at`` (the loop's clock), at once after it: a server warming up."""

    warm_at = 0.0

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        delay_s = self.delay_s if loop.time() < self.warm_at else 0.0
        loop.call_later(delay_s, self.transport.write, RESPONSE)  # type: ignore[attr-defined]


def test_a_warm_up_is_sent_on_the_same_timeline_and_reported_apart() -> None:
    async def cold_start() -> openloop.Report:
        loop = asyncio.get_running_loop()
        _ColdServer.warm_at = loop.time() + 0.15
        server = await loop.create_server(lambda: _ColdServer(0.03), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        request = openloop.request_bytes("127.0.0.1", port, "/x", b"{}", {})
        try:
            return await openloop.run(
                "127.0.0.1", port, [request], rate=400, duration_s=0.5, connections=8, warmup_s=0.3
            )
        finally:
            server.close()

    report = asyncio.run(cold_start())
    # 0.3 s × 400/s of warm-up, then the measured 0.5 s × 400/s: counted apart.
    assert (report.sent, report.ok, report.errors, report.timeouts) == (200, 200, 0, 0)
    assert len(report.warmup_latencies_ms) == 120 and report.warmup_errors == 0
    assert report.warmup_latencies_ms.max() >= 30  # the slow start is in the warm-up's figures
    assert report.latencies_ms.max() < 30  # and in none of the measured ones
    assert len(report.late_ms) == 200
    assert report.elapsed_s >= 0.4975  # from the end of the warm-up to the last answer, due 199 / 400 s after it
    summary = report.as_dict()
    assert summary["warmup_s"] == 0.3
    assert summary["warmup_max_ms"] == round(float(report.warmup_latencies_ms.max()), 3)
    assert 350 <= summary["achieved_rps"] <= 410
