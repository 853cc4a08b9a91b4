"""What a guest's history costs: CPU per event, and per guest read, as one guest grows session by session.

Every event reads the whole guest and writes it back by compare-and-set, and every decision reads it whole, so
their cost follows the size of the guest's history. This grows one guest by sessions of
``--events-per-session`` events (a 30-minute gap closes each), and after each size step times ``--events`` more
events and as many guest reads (``time.process_time``: this process's CPU, Redis not included). It starts its own
``redis-server`` (a running Arbiter's sweeper would close the guest's idle sessions under it):

    python -m benchmarks.history
    python -m benchmarks.history --closed-budget 1000000   # as before the closed-session budget

Prints one row per size step: sessions, the guest's stored size, µs of CPU per event, per read of the whole
guest (what an event or a decision whose model may read session events costs) and per read without the sessions'
events (a decision whose model cannot read them: engine/guestreads.py).
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
from engine.sessions import Limits
from engine.store import GuestLookup
from engine.store.redis import RedisStore
from tests.listening import ManualClock, event, make_ingest  # the listen tests' clock and event builder

SESSION_GAP_MS = 30 * 60 * 1000


async def _run(args: argparse.Namespace, redis_url: str) -> None:
    store = RedisStore(redis_url)
    limits = Limits(max_events_per_session=args.events_per_session, max_closed_session_events=args.closed_budget)
    clock = ManualClock()
    ingest = make_ingest(store, clock, limits)
    client = redis.Redis.from_url(redis_url)
    ref, sent = f"history-{time.time_ns()}", 0

    async def send() -> None:
        nonlocal sent
        clock.advance(1000)
        sent += 1
        product = {"item_id": f"SKU-{sent % 50}", "price": 10.5, "quantity": 1}
        await ingest.record(event(clock, browser_id=ref, page=f"p{sent}", product=product))

    try:
        print(
            "| sessions | guest KB | CPU µs per event | CPU µs per guest read | without session events |\n"
            "|---:|---:|---:|---:|---:|"
        )
        grown = 0
        for sessions in args.steps:
            while grown < sessions:
                if grown:
                    clock.advance(SESSION_GAP_MS)  # the next event closes the last session and opens another
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
            cpu0 = time.process_time()
            for _ in range(args.events):
                await store.guest_load(lookup, session_events=False)
            per_light_read = (time.process_time() - cpu0) / args.events * 1e6
            print(f"| {sessions} | {size / 1024:.1f} | {per_event:.0f} | {per_read:.0f} | {per_light_read:.0f} |")
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
