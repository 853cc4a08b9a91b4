"""Locust scenario for users who drive load with locust: decide (and events) over many seeded guests.

Seed guests and start Arbiter first (e.g. run ``python -m benchmarks.loadtest`` once, or seed with
``benchmarks.data.seed_guests``), then:

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 60s

Locust is closed-loop and Python: on a small machine it saturates before Arbiter does, so the published
numbers (benchmarks/RESULTS.md) come from wrk and benchmarks/openloop.py. Environment: ARBITER_PUBLIC_KEY
(default demo-public), BENCH_GUESTS (default 20000), BENCH_MODEL (default realistic), BENCH_EVENTS=1 to
also post events.
"""

from __future__ import annotations

import itertools
import os

from locust import FastHttpUser, between, task

from benchmarks.data import decide_bodies, event_bodies

GUESTS = int(os.environ.get("BENCH_GUESTS", "20000"))
MODEL = os.environ.get("BENCH_MODEL", "realistic")
HEADERS = {"X-API-Key": os.environ.get("ARBITER_PUBLIC_KEY", "demo-public"), "Content-Type": "application/json"}
DECIDE = itertools.cycle(decide_bodies(10_000, GUESTS))
EVENTS = itertools.cycle(event_bodies(10_000, GUESTS))


class Storefront(FastHttpUser):
    wait_time = between(0.0, 0.01)

    @task(10)
    def decide(self) -> None:
        self.client.post(f"/v1/decide/{MODEL}", data=next(DECIDE), headers=HEADERS, name="decide")

    @task(5)
    def event(self) -> None:
        if os.environ.get("BENCH_EVENTS") == "1":
            self.client.post("/v1/events", data=next(EVENTS), headers=HEADERS, name="events")
