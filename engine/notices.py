"""Following change notices: a process drops or reloads what another process changed, as it happens.

The store delivers them (Redis pub/sub: ``model_changes``, ``resource_changes``; the embedded store has one
process and never does). Pub/sub is fire-and-forget, so every follower keeps a timed refresh or a TTL as the
backstop for a notice missed while the subscription was down; this loop re-subscribes after a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from engine.errors import Unavailable
from engine.outage import Outage

log = logging.getLogger("arbiter.notices")
RETRY_S = 1.0
"""How long a follower waits before subscribing again after its connection failed."""


async def follow(
    notices: Callable[[], AsyncIterator[str]], changed: Callable[[str], Awaitable[None]], what: str
) -> None:
    """Await ``changed(key)`` for every notice until cancelled; one warning per outage, not one per retry."""
    outage = Outage(log, f"following {what} change notices (timed refreshes go on)")
    while True:
        try:
            async for key in notices():
                outage.ended()
                await changed(key)
        except Unavailable as exc:
            outage.failed(exc.detail)
        await asyncio.sleep(RETRY_S)
