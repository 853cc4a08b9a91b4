"""A circuit breaker per external connection, per worker.

Closed: calls go through; ``failure_threshold`` consecutive failures open it. Open: calls are refused
at once (the node yields its fallback without waiting on a sick dependency) until ``cooldown_s`` has
passed. Half-open: exactly one probe goes through; its success closes the circuit, its failure opens it
for another cool-down. State is per worker on purpose: each process learns about the dependency from
its own calls, with no Redis round trip on the request path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class Breaker:
    failure_threshold: int
    cooldown_s: float
    failures: int = 0
    opened_at_s: float | None = None
    probing: bool = False

    def state(self, now_s: float | None = None) -> str:
        if self.opened_at_s is None:
            return "closed"
        now_s = time.monotonic() if now_s is None else now_s
        return "half-open" if now_s - self.opened_at_s >= self.cooldown_s else "open"

    def allow(self, now_s: float | None = None) -> bool:
        """May a call go out now? In half-open state only the first caller gets to probe."""
        state = self.state(now_s)
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at_s, self.probing = 0, None, False

    def failure(self, now_s: float | None = None) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.failure_threshold:
            self.opened_at_s = time.monotonic() if now_s is None else now_s
            self.probing = False

    def release(self) -> None:
        """A probe that ended without a verdict (cancelled by the deadline) lets the next caller probe."""
        self.probing = False
