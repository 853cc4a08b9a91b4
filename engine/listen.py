"""The listen feature: events, sessions, identity, guests, orders and imports, plugged into the app.

Start-up builds the services (one :class:`~engine.ingest.Ingest`, one :class:`~engine.guests.Guests`) over
the app's store and starts one background loop that closes idle sessions and re-applies any logged
event a crashed process never applied.
"""

from __future__ import annotations

import asyncio
import logging

from engine import rewards
from engine.api import events as events_api
from engine.api import guests as guests_api
from engine.api import sdk as sdk_api
from engine.api._listen import Listen, listen
from engine.errors import Unavailable
from engine.eventlog import open_event_log
from engine.events import Event
from engine.guests import Guests
from engine.ingest import Ingest
from engine.outage import Outage
from engine.profiles import open_profiles
from engine.runtime import Runtime
from engine.sessions import Limits

log = logging.getLogger("arbiter.listen")
SWEEP_INTERVAL_S = 5.0
RECOVERY_GRACE_MS = 30_000
"""A logged event younger than this may still be in its request's hands; the recovery consumer waits."""

routes = [*events_api.routes, *sdk_api.routes, *guests_api.routes]


async def startup(rt: Runtime) -> None:
    s = rt.settings
    limits = Limits(
        s.session_timeout_ms, s.max_sessions, s.max_events_per_session, s.max_orders, s.max_closed_session_events
    )
    profiles = open_profiles(rt.store)

    async def reward_experiments(guest_ref: str, event: Event) -> None:
        # Goal events reward the experiments that exposed this guest; a no-op without the experiments feature.
        await rewards.on_event(rt, guest_ref, event.as_json())

    ingest = Ingest(profiles, open_event_log(rt.store, s.event_log_shards), limits, listeners=(reward_experiments,))
    service = Listen(ingest, Guests(profiles, limits))
    rt.services["listen"] = service
    task = asyncio.get_running_loop().create_task(_housekeeping(service.ingest))
    service.tasks.add(task)


async def shutdown(rt: Runtime) -> None:
    service = listen(rt)
    for task in list(service.tasks):
        task.cancel()
        # Not ``await task``: a cancel that Python 3.11 swallows must not hang shutdown.
        await asyncio.wait({task}, timeout=2)


async def _housekeeping(ingest: Ingest) -> None:
    outage = Outage(log, "housekeeping (closing idle sessions, applying the event log)")
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            while await ingest.sweep() > 0:
                pass
            await ingest.log.recover(ingest.apply, ingest.clock(), RECOVERY_GRACE_MS)
            outage.ended()
        except Unavailable as exc:
            outage.failed(exc.detail)
        except Exception:  # noqa: BLE001 — a bug here must not kill the loop for the process's lifetime
            log.exception("housekeeping failed")
