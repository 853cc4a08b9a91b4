"""A background loop's store failures, logged once per outage and once when it ends.

The loops that write or read Redis off the request path (the decision log, exposures, the experiment refresh,
housekeeping, change notices) retry every second or so. Logging each failed try filled the log at that pace for as
long as Redis was down, which buries the one line an operator needs: when it started, and when it ended.
"""

from __future__ import annotations

import logging

RETRY_AFTER_S = 0.5
"""How long a background writer waits after a refused write before the next: the decision log's writer, with a
backlog of a full batch, used to try again at once, spinning the worker's event loop while Redis was down."""


class Outage:
    __slots__ = ("failures", "log", "what")

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.failures = 0
        """Tries failed in a row: the outage's length, for the line that ends it."""

    def failed(self, detail: str) -> None:
        if not self.failures:
            self.log.warning("%s failed; retrying until it works (logged again when it does): %s", self.what, detail)
        self.failures += 1

    def ended(self) -> None:
        if self.failures:
            self.log.warning("%s works again, after %d failed tries", self.what, self.failures)
            self.failures = 0
