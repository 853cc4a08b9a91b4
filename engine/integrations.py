"""The scripts-and-external-data feature: Lua sandbox, outbound HTTP, connections and their admin API.

Start-up creates one of each per worker and registers them in ``rt.services`` (node compilers find
them there as ``CompileContext.services``); shutdown closes the HTTP pools.
"""

from __future__ import annotations

from engine import connections, egress, sandbox
from engine.api.connections import routes as routes
from engine.runtime import Runtime


async def startup(rt: Runtime) -> None:
    rt.services[sandbox.SERVICE] = sandbox.Sandbox()
    outbound = rt.services[egress.SERVICE] = egress.Egress()
    outbound.warm()
    rt.services[connections.SERVICE] = connections.Directory(rt.store)


async def shutdown(rt: Runtime) -> None:
    out = rt.services.pop(egress.SERVICE, None)
    if isinstance(out, egress.Egress):
        await out.aclose()
