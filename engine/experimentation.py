"""The experiments feature module: plugs :class:`engine.lab.Lab`, its API and OFREP into the app.

Start-up registers the lab as ``rt.services["experiments"]`` (experiment nodes bind it at compile time),
adds its exposure counter to ``rt.services["decision_listeners"]``, and seeds experiment definitions from
``<models_dir>/experiments/*.json``. For events, see :func:`engine.rewards.on_event`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson

from engine.api import experiments as experiments_api
from engine.api import ofrep
from engine.lab import RESOURCE, Lab
from engine.rewards import on_event
from engine.runtime import Runtime

__all__ = ["on_event", "routes", "shutdown", "startup"]
log = logging.getLogger("arbiter.experiments")

routes = [*experiments_api.routes, *ofrep.routes]


def read_definitions(directory: Path) -> list[tuple[str, bytes]]:
    folder = directory / "experiments"
    if not folder.is_dir():
        return []
    return [(p.stem, p.read_bytes()) for p in sorted(folder.glob("*.json")) if p.is_file()]


async def seed(lab: Lab, directory: Path) -> list[str]:
    """Create each definition in ``directory/experiments`` that does not exist yet.

    Like models, an existing experiment is left alone: the API owns it once it exists, and a restarting
    worker must not undo a marketer's pause or stop.
    """
    created = []
    for key, body in await asyncio.to_thread(read_definitions, directory):
        if await lab.rt.store.resource_get(RESOURCE, key) is None:
            await lab.put(key, orjson.loads(body))
            created.append(key)
    return created


async def startup(rt: Runtime) -> None:
    lab = Lab(rt)
    rt.services["experiments"] = lab
    rt.services.setdefault("decision_listeners", []).append(lab.observe)
    if rt.settings.models_dir is not None:
        created = await seed(lab, rt.settings.models_dir)
        if created:
            log.info("experiments seeded from %s: %s", rt.settings.models_dir, ", ".join(created))
    await lab.start()


async def shutdown(rt: Runtime) -> None:
    lab = rt.services.get("experiments")
    if isinstance(lab, Lab):
        await lab.stop()
