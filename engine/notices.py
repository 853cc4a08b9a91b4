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

log = logging.getLogger("arbiter.notices")
RETRY_S = 1.0
"""How long a follower waits before subscribing again after its connection failed."""


async def follow(
    notices: Callable[[], AsyncIterator[str]], changed: Callable[[str], Awaitable[None]], what: str
) -> None:
    """Await ``changed(key)`` for every notice until cancelled; one warning per outage, not one per retry."""
    healthy = True
    while True:
        try:
            async for key in notices():
                healthy = True
                await changed(key)
        except Unavailable as exc:
            if healthy:
                log.warning("%s change notices interrupted (timed refreshes go on); retrying: %s", what, exc.detail)
            healthy = False
        await asyncio.sleep(RETRY_S)
