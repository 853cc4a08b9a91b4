"""Outbound HTTP for external data calls: the SSRF guard, the shared connection pool, per-worker state.

The guard sits in the connection layer, not in front of it: a custom httpcore network backend resolves
the host itself, refuses the connection if *any* address is loopback, private, link-local (the cloud
metadata service at 169.254.169.254), multicast or otherwise not globally routable, and then connects to
the very address it checked. Checking a URL and letting the client resolve it again would leave a DNS
rebinding window; this leaves none, whichever request or redirect opened the connection.

One :class:`Egress` per worker (``rt.services["egress"]``) owns the pools (one guarded, one for
connections that declare ``allow_private``), the circuit breakers and the response cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import httpcore
import httpx
from cachetools import LRUCache

from engine.breaker import Breaker
from engine.errors import ExternalCallFailed

SERVICE = "egress"
RESOLVE_TIMEOUT_S = 2.0
CACHE_ENTRIES = 10_000

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger("arbiter")


def is_public(ip: Address) -> bool:
    """True for globally routable unicast addresses; IPv4 embedded in IPv6 is judged as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return is_public(embedded)
    return ip.is_global and not ip.is_multicast


def refused_addresses(addresses: Iterable[str]) -> list[str]:
    return [a for a in addresses if not is_public(ipaddress.ip_address(a.split("%")[0]))]


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise ExternalCallFailed(f"cannot resolve host '{host}': {exc}", reason="error") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_host(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` and refuse it unless every address is public (or private ones are allowed)."""
    addresses = await resolve(host, port)
    if not allow_private:
        bad = refused_addresses(addresses)
        if bad:
            raise ExternalCallFailed(
                f"host '{host}' resolves to a non-public address ({', '.join(bad)}); refused "
                "(set allow_private on the connection to call loopback or private networks)",
                reason="refused",
            )
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to addresses the SSRF policy allows."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 — httpcore's backend signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await check_host(host, port, allow_private=self.allow_private)
        # Connect to the checked address; TLS still verifies the certificate against the host name,
        # because httpcore takes the SNI name from the request's origin, not from this address.
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ExternalCallFailed("unix sockets are not an external data system", reason="refused")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(*, allow_private: bool, max_connections: int = 100) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through :class:`GuardedBackend`.

    No proxies from the environment (a proxy would make the guard check the proxy, not the target) and
    no redirects (a 302 to an internal address is a classic SSRF hop).
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    # httpx does not expose httpcore's network_backend, so the pool is rebuilt with the guarded one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=transport._pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(allow_private=allow_private),
    )
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False)


class Egress:
    """Per-worker outbound state: connection pools, circuit breakers and the response cache.

    ``shared=False`` (the CLI, which runs each evaluation in its own event loop) opens a client per
    request instead of pooling, because pooled connections belong to the loop that opened them.
    """

    def __init__(self, *, shared: bool = True, max_connections: int = 100) -> None:
        self.shared = shared
        self.max_connections = max_connections
        self._pools: dict[bool, tuple[httpx.AsyncClient, asyncio.Semaphore]] = {}
        """Per ``allow_private``: the shared client, and one slot per connection it may open (exchanges in flight
        never outnumber the connections)."""
        self.breakers: dict[str, Breaker] = {}
        self.cache: dict[Any, tuple[Any, float]] = {}
        """Response per cache key with when it expires (monotonic s; each node has its own TTL): read on every
        decision with an external node, so a dict (~0.1 µs) rather than cachetools' TLRUCache (~2.7 µs a
        ``get``, its expiry bookkeeping and LRU order in Python). Bounded by evicting the oldest written, which
        for entries of one TTL is the one to expire first."""
        self.stale: LRUCache[Any, tuple[Any, float]] = LRUCache(CACHE_ENTRIES)
        """Last good response per cache key with when it arrived (monotonic s): for ``stale_if_error_s``."""
        self.inflight: dict[Any, Any] = {}
        """Shared calls in flight per cache key (engine.nodes.external._Flight): requests for the key wait for it."""
        self._background: set[asyncio.Task[Any]] = set()
        self._exchanges: set[asyncio.Future[tuple[int, bytes]]] = set()
        """Exchanges on the shared pools, kept to their end even when their caller stopped waiting."""

    def fresh(self, key: Any) -> tuple[Any, float] | None:
        """The cached response for ``key`` and its expiry, unless it has expired."""
        hit = self.cache.get(key)
        return hit if hit is not None and hit[1] > time.monotonic() else None

    def remember(self, key: Any, value: Any, ttl_s: float) -> None:
        cache = self.cache
        if cache.pop(key, None) is None and len(cache) >= CACHE_ENTRIES:
            del cache[next(iter(cache))]  # dicts keep insertion order: the oldest written
        cache[key] = (value, time.monotonic() + ttl_s)

    def background(self, call: Coroutine[Any, Any, Any]) -> None:
        """Run a shared external call (a cache miss or refresh) that outlives its requests; cancelled at shutdown."""
        task = asyncio.get_running_loop().create_task(call)
        self._background.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._background.discard)

    def breaker(self, key: str, failures: int, cooldown_s: float) -> Breaker:
        breaker = self.breakers.get(key)
        if breaker is None:
            breaker = self.breakers[key] = Breaker(failures, cooldown_s)
        else:
            breaker.failure_threshold, breaker.cooldown_s = failures, cooldown_s
        return breaker

    def pool(self, allow_private: bool) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The shared client for ``allow_private`` and its slots, made on first use. Making one costs
        ~18 ms (its TLS context loads the CA bundle): a worker makes both at start-up (``warm``) rather
        than stall its event loop at its first external call."""
        pool = self._pools.get(allow_private)
        if pool is None:
            client = guarded_client(allow_private=allow_private, max_connections=self.max_connections)
            pool = self._pools[allow_private] = (client, asyncio.Semaphore(self.max_connections))
        return pool

    def warm(self) -> None:
        for allow_private in (False, True):
            self.pool(allow_private)

    async def send(
        self, request: httpx.Request, *, allow_private: bool, timeout_s: float, max_bytes: int, detached: bool = True
    ) -> tuple[int, bytes]:
        """Send ``request``; its status and body, read within ``timeout_s``. httpx errors pass through.

        On the shared pools nothing cancels an exchange inside httpcore: httpcore 1.0 leaves a connection
        CONNECTING for ever when its request is cancelled after the pool handed it the connection and before
        it opened it (encode/httpcore#1093), and under load a worker's whole pool ended up so, every later call timing
        out. An exchange ends by httpx's own connect, write and read timeouts (``timeout_s`` each), inside
        httpcore, which releases its connection; and no more exchanges run than the pool has connections, so
        one never waits in httpcore's queue, where a pool timeout would be that very cancellation from
        inside. What a caller may wait on is a slot here, which is safe to give up.

        (The CLI's unshared clients live for one call, so a cancellation there leaks nothing that lasts.)

        ``detached`` (for a caller that may itself be cancelled, by a request's deadline): the exchange runs
        as a task of its own, and the caller stops waiting at ``timeout_s``. A caller that is never cancelled
        (a shared call, a task of the egress) passes False and runs it inline: under saturation each hop
        through the event loop costs milliseconds, and a task and its wake-up are two more hops.
        """
        request.extensions["timeout"] = httpx.Timeout(timeout_s, pool=None).as_dict()
        if not self.shared:
            async with guarded_client(allow_private=allow_private, max_connections=4) as client:
                async with asyncio.timeout(timeout_s):
                    return await _exchange(client, request, max_bytes)
        pooled, slots = self.pool(allow_private)
        if not detached:
            await slots.acquire()
            try:
                return await _exchange(pooled, request, max_bytes)
            finally:
                slots.release()
        async with asyncio.timeout(timeout_s):
            await slots.acquire()
            exchange = asyncio.ensure_future(_exchange(pooled, request, max_bytes))
            self._exchanges.add(exchange)

            def finished(done: asyncio.Future[tuple[int, bytes]]) -> None:
                slots.release()
                self._exchanges.discard(done)
                _retrieved(done)

            exchange.add_done_callback(finished)
            return await asyncio.shield(exchange)

    async def aclose(self) -> None:
        pending = self._background | self._exchanges
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        for client, _ in self._pools.values():
            await client.aclose()
        self._pools.clear()


def _settled(task: asyncio.Task[Any]) -> None:
    # A shared call reports its failures to its waiters and the breaker; what escapes it is a bug: logged.
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        log.error("a shared external call failed unexpectedly", exc_info=exc)


def _retrieved(exchange: asyncio.Future[Any]) -> None:
    # So that an exchange whose caller stopped waiting does not log "exception was never retrieved": its
    # failure is the caller's timeout, already reported.
    if not exchange.cancelled():
        exchange.exception()


async def _exchange(client: httpx.AsyncClient, request: httpx.Request, max_bytes: int) -> tuple[int, bytes]:
    # Streamed so an oversized body is cut off at max_bytes instead of being read into memory whole.
    response = await client.send(request, stream=True)
    try:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ExternalCallFailed(f"response larger than {max_bytes} bytes", reason="error")
            chunks.append(chunk)
    finally:
        await response.aclose()
    return response.status_code, b"".join(chunks)


def egress_for(services: Any) -> Egress:
    """The worker's egress; without app services (the CLI) an unpooled one."""
    if isinstance(services, dict):
        egress = services.get(SERVICE)
        if egress is None:
            egress = services[SERVICE] = Egress()
        return egress
    return Egress(shared=False)
