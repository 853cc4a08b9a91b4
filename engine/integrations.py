"""The scripts-and-external-data feature: Lua sandbox, outbound HTTP, connections and their admin API.

Start-up creates one of each per worker and registers them in ``rt.services`` (node compilers find
them there as ``CompileContext.services``); shutdown closes the HTTP pools.
"""

from __future__ import annotations

import asyncio

from engine import connections, egress, sandbox
from engine.api.connections import routes as routes
from engine.runtime import Runtime

FOLLOWER = "connections.follower"
"""The task that drops changed connections from this worker's cache (``rt.services``)."""


async def startup(rt: Runtime) -> None:
    rt.services[sandbox.SERVICE] = sandbox.Sandbox()
    outbound = rt.services[egress.SERVICE] = egress.Egress()
    outbound.warm()
    directory = rt.services[connections.SERVICE] = connections.Directory(rt.store)
    rt.services[FOLLOWER] = asyncio.get_running_loop().create_task(directory.follow_changes())


async def shutdown(rt: Runtime) -> None:
    follower = rt.services.pop(FOLLOWER, None)
    if isinstance(follower, asyncio.Task):
        follower.cancel()
        # Not awaited itself: a cancel Python 3.11 swallows must not hang shutdown.
        await asyncio.wait({follower}, timeout=2)
    out = rt.services.pop(egress.SERVICE, None)
    if isinstance(out, egress.Egress):
        await out.aclose()
