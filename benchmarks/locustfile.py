"""Locust scenario for users who drive load with locust: the load harness's decide and events traffic.

Start the whole scenario (Redis with seeded guests, the catalogue stub, Arbiter with the connection, the
experiment and the ``realistic`` model published) and leave it running:

    python -m benchmarks.loadtest --serve --guests 20000        # prints the URL; Ctrl-C stops everything

then, in another terminal:

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:PORT --headless -u 50 -r 10 -t 60s

Each simulated storefront mixes, by weight, 10 decides (``POST /v1/decide/realistic``, the same bodies
as the harness: benchmarks/data.py), 4 single events and 1 batch of ``BENCH_EVENT_BATCH`` events
(``{"events": [...]}``); every event carries a fresh ref (a repeated ref is only acknowledged as a
duplicate). Locust is closed-loop and Python: on a small machine it saturates before Arbiter does, so the
published numbers (benchmarks/RESULTS.md) come from wrk and benchmarks/openloop.py.

Environment: ARBITER_PUBLIC_KEY (default bench-public, the harness's), BENCH_GUESTS (default 20000, as
seeded), BENCH_MODEL (default realistic), BENCH_EVENT_BATCH (default 20), BENCH_EVENTS=0 for decides only.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import orjson
from locust import FastHttpUser, between, task

from benchmarks.data import decide_bodies, events

GUESTS = int(os.environ.get("BENCH_GUESTS", "20000"))
MODEL = os.environ.get("BENCH_MODEL", "realistic")
EVENT_BATCH = int(os.environ.get("BENCH_EVENT_BATCH", "20"))
SEND_EVENTS = os.environ.get("BENCH_EVENTS", "1") != "0"
HEADERS = {"X-API-Key": os.environ.get("ARBITER_PUBLIC_KEY", "bench-public"), "Content-Type": "application/json"}
DECIDE = itertools.cycle(decide_bodies(10_000, GUESTS))
EVENTS = itertools.cycle(events(10_000, GUESTS))
REFS = itertools.count()
RUN = f"locust-{os.getpid()}-{os.urandom(3).hex()}"
"""Per process and per start: refs never repeat across locust processes or runs."""


def next_event() -> dict[str, Any]:
    return {**next(EVENTS), "ref": f"{RUN}-{next(REFS)}"}


class Storefront(FastHttpUser):
    wait_time = between(0.0, 0.01)

    @task(10)
    def decide(self) -> None:
        self.client.post(f"/v1/decide/{MODEL}", data=next(DECIDE), headers=HEADERS, name="decide")

    @task(4)
    def event(self) -> None:
        if SEND_EVENTS:
            self.client.post("/v1/events", data=orjson.dumps(next_event()), headers=HEADERS, name="events")

    @task(1)
    def event_batch(self) -> None:
        if SEND_EVENTS:
            body = orjson.dumps({"events": [next_event() for _ in range(EVENT_BATCH)]})
            self.client.post("/v1/events", data=body, headers=HEADERS, name=f"events ×{EVENT_BATCH}")
