"""The hot paths on a Redis Cluster: one :class:`~engine.store.wire.Wire` per primary, chosen by the key's slot.

redis-py's cluster client costs ~180 µs of Python per decision more than a single Redis over the wire (in
process, the benchmark model: 410 against 230 µs): a slot and a command policy resolved per command, a pool
per node, retry wrappers. Here a request's read or script goes to the primary that serves its first key's slot,
on that node's multiplexed connection, as on a single Redis.

The slot map is redis-py's own (``NodesManager.slots_cache``), which redis-py fills on its first command and
refreshes whenever it meets a redirect or a lost node. This module only reads it, and hands a command back to
redis-py — which follows the redirect and refreshes the map — when:

- the map does not have the slot yet (nothing has gone through redis-py);
- the node answers ``MOVED`` or ``ASK`` (a slot migrated or failed over; the command did not run) — in a batch,
  only the redirected items go again;
- a read meets a lost connection (the node died: redis-py finds its replacement). Once the node's breaker is open
  (:mod:`engine.store.wire`) its reads fail at once instead, and only the breaker's probe, once a second, meets
  the lost connection and goes through redis-py.

A script that meets a lost connection is not sent again: it may have run. It fails as on a single Redis, and
the caller's retry is idempotent (event refs, tokens, rewarded units).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError, ResponseError

from engine.store.wire import Arg, CircuitOpen, Command, Invoke, Lua, Wire

_REDIRECTS = ("MOVED ", "ASK ")


class SlotWires:
    def __init__(self, client: RedisCluster, url: str, timeout_s: float) -> None:
        self.client = client
        opts = parse_url("redis://" + url.removeprefix("redis+cluster://"))
        self._auth = {"username": opts.get("username"), "password": opts.get("password")}
        self.timeout_s = timeout_s
        self._wires: dict[str, Wire] = {}

    def for_key(self, key: Arg) -> Wire | None:
        """The connection to the primary serving ``key``'s slot, or None while the map does not know it."""
        nodes = self.client.nodes_manager.slots_cache.get(self.client.keyslot(key))
        if not nodes:
            return None
        primary = nodes[0]
        wire = self._wires.get(primary.name)
        if wire is None:
            wire = self._wires[primary.name] = Wire(
                host=primary.host,
                port=int(primary.port),
                username=self._auth["username"],
                password=self._auth["password"],
                timeout_s=self.timeout_s,
            )
        return wire

    async def read(self, *args: Arg) -> tuple[bool, Any]:
        """``(True, reply)``, or ``(False, None)`` when redis-py must run it (see the module's list)."""
        wire = self.for_key(args[1])
        if wire is None:
            return False, None
        try:
            return True, await wire.call(*args)
        except CircuitOpen:
            raise  # the node failed its last calls: fail at once; the breaker's probe goes through redis-py below
        except ConnectionError:
            return False, None
        except ResponseError as exc:
            if str(exc).startswith(_REDIRECTS):
                return False, None
            raise

    async def script(self, lua: Lua, keys: list[Any], args: list[Any]) -> tuple[bool, Any]:
        """Like :meth:`read`, but a lost connection is the caller's error: the script may have run."""
        wire = self.for_key(keys[0]) if keys else None
        if wire is None:
            return False, None
        try:
            return True, await wire.script(lua, keys, args)
        except ResponseError as exc:
            if str(exc).startswith(_REDIRECTS):
                return False, None
            raise

    async def batch(self, items: Sequence[Command | Invoke]) -> list[Any] | None:
        """Every item on its first key's primary: one write per primary, all primaries at once, the replies in
        the items' order. ``None`` when the map lacks a slot (redis-py runs the batch)."""
        groups: dict[str, tuple[Wire, list[int]]] = {}
        for i, item in enumerate(items):
            wire = self.for_key(item[1][0] if isinstance(item[0], Lua) else item[1])
            if wire is None:
                return None
            groups.setdefault(wire.host + ":" + str(wire.port), (wire, []))[1].append(i)
        sent = [wire.call_many([items[i] for i in at], check=False) for wire, at in groups.values()]
        replies: list[Any] = [None] * len(items)
        for (_, at), got in zip(groups.values(), await asyncio.gather(*sent), strict=True):
            for i, reply in zip(at, got, strict=True):
                replies[i] = reply
        for i, reply in enumerate(replies):
            if isinstance(reply, hiredis.ReplyError):
                if not str(reply).startswith(_REDIRECTS):
                    raise ResponseError(str(reply))
                replies[i] = await self._through_redis_py(items[i])
        return replies

    async def _through_redis_py(self, item: Command | Invoke) -> Any:
        # EVAL with the source rather than EVALSHA: the node the slot moved to may not have the script yet.
        if isinstance(item[0], Lua):
            lua, keys, args = item
            return await self.client.execute_command("EVAL", lua.source, len(keys), *keys, *args)
        return await self.client.execute_command(*item)

    async def close(self) -> None:
        for wire in self._wires.values():
            await wire.close()
        self._wires.clear()
