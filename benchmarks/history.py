"""What a guest's history costs: CPU per event, and per guest read, as one guest grows session by session.

Every event reads the whole guest and writes it back by compare-and-set, and every decision reads it whole, so
their cost follows the size of the guest's history. This grows one guest by sessions of
``--events-per-session`` events (a 30-minute gap closes each), and after each size step times ``--events`` more
events and as many guest reads (``time.process_time``: this process's CPU, Redis not included). It starts its own
``redis-server`` (a running Arbiter's sweeper would close the guest's idle sessions under it):

    python -m benchmarks.history
    python -m benchmarks.history --closed-budget 1000000   # as before the closed-session budget

Prints one row per size step: sessions, the guest's stored size, µs of CPU per event and per read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import redis
import uvloop

from benchmarks import servers
from engine import keys
from engine.eventlog import open_event_log
from engine.events import Event, parse_event
from engine.ingest import Ingest
from engine.profiles import open_profiles
from engine.sessions import Limits
from engine.store import GuestLookup
from engine.store.redis import RedisStore

SESSION_GAP_MS = 30 * 60 * 1000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class _Clock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def _event(ref: str, n: int, now_ms: int) -> Event:
    raw = {
        "type": "VIEW", "channel": "WEB", "browser_id": ref, "pos": "shop", "language": "EN", "currency": "EUR",
        "page": f"p{n}", "product": {"item_id": f"SKU-{n % 50}", "price": 10.5, "quantity": 1},
    }  # fmt: skip
    return parse_event(raw, "", now_ms=now_ms)


async def _run(args: argparse.Namespace, redis_url: str) -> None:
    store = RedisStore(redis_url)
    limits = Limits(max_events_per_session=args.events_per_session, max_closed_session_events=args.closed_budget)
    clock = _Clock()
    ingest = Ingest(open_profiles(store), open_event_log(store, 2), limits, clock)
    client = redis.Redis.from_url(redis_url)
    ref, sent = f"history-{time.time_ns()}", 0

    async def send() -> None:
        nonlocal sent
        clock.now_ms += 1000
        sent += 1
        await ingest.record(_event(ref, sent, clock.now_ms))

    try:
        print("| sessions | guest KB | CPU µs per event | CPU µs per guest read |\n|---:|---:|---:|---:|")
        grown = 0
        for sessions in args.steps:
            while grown < sessions:
                if grown:
                    clock.now_ms += SESSION_GAP_MS  # the next event closes the last session and opens another
                for _ in range(args.events_per_session):
                    await send()
                grown += 1
            size = sum(len(v) for v in client.hgetall(keys.guest(ref)).values())
            cpu0 = time.process_time()
            for _ in range(args.events):  # into the open session, already full: it stays at its limit
                await send()
            per_event = (time.process_time() - cpu0) / args.events * 1e6
            lookup = GuestLookup(browser_id=ref)
            cpu0 = time.process_time()
            for _ in range(args.events):
                await store.guest_load(lookup)
            per_read = (time.process_time() - cpu0) / args.events * 1e6
            print(f"| {sessions} | {size / 1024:.1f} | {per_event:.0f} | {per_read:.0f} |")
    finally:
        client.close()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20, 40], help="sessions per size step")
    parser.add_argument("--events-per-session", type=int, default=100)
    parser.add_argument("--events", type=int, default=200, help="timed events (and reads) per step")
    parser.add_argument("--closed-budget", type=int, default=Limits().max_closed_session_events)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="arbiter-history-") as tmp, servers.running_redis(Path(tmp)) as url:
        uvloop.run(_run(args, url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
