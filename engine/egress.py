"""Outbound HTTP for external data calls: the SSRF guard, the shared connection pool, per-worker state.

The guard sits in the connection layer, not in front of it. The pool's resolver (:class:`GuardedResolver`)
resolves a host itself and refuses it if *any* address is loopback, private, link-local (the cloud metadata
service at 169.254.169.254), multicast or otherwise not globally routable; aiohttp then connects to the
very addresses it returned. Checking a URL and letting the client resolve it again would leave a DNS
rebinding window; this leaves none. aiohttp never asks a resolver about an IP-literal host, so the guarded
pool's socket factory (:func:`_public_socket`) checks the address of every socket it opens as well.

One :class:`Egress` per worker (``rt.services["egress"]``) owns the pools (one guarded, one for
connections that declare ``allow_private``), the circuit breakers and the response cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from cachetools import LRUCache
from yarl import URL

from engine import __version__
from engine.breaker import Breaker
from engine.errors import ExternalCallFailed

SERVICE = "egress"
RESOLVE_TIMEOUT_S = 2.0
KEEPALIVE_S = 5.0
"""How long an idle pooled connection is kept: httpx's keep-alive expiry, which this pool had before."""
CACHE_ENTRIES = 10_000
USER_AGENT = f"Arbiter/{__version__}"
"""Who calls, as the systems called see it (a connection's own ``headers`` may set another)."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger("arbiter")


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """One HTTP request for :meth:`Egress.send`; ``url`` is already percent-encoded and goes out as it is."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None


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
            raise _refusal(host, bad)
    return addresses


def _refusal(host: str, bad: list[str]) -> ExternalCallFailed:
    return ExternalCallFailed(
        f"host '{host}' resolves to a non-public address ({', '.join(bad)}); refused "
        "(set allow_private on the connection to call loopback or private networks)",
        reason="refused",
    )


class GuardedResolver(AbstractResolver):
    """Resolves through :func:`check_host`, so the connector only ever sees addresses the SSRF policy allows.

    aiohttp caches what a resolver returns (``ttl_dns_cache``, 10 s) and connects to cached addresses without
    asking again. That is safe: only lists that passed the check enter the cache, and each pool has its own
    connector, so an address allowed for ``allow_private`` connections never serves the guarded pool.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await check_host(host, port, allow_private=self.allow_private)
        # Numeric flags: the connector must connect to these very addresses, never look the name up again.
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=flags,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass


def _public_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """The guarded pool's socket factory: refuses a non-public address just before it is connected to.

    aiohttp connects to an IP-literal host (``http://169.254.169.254``) without asking the resolver; this is
    where such a host is checked. A resolved address is checked a second time, for one ``ip_address`` parse
    per new connection.
    """
    family, type_, proto, _, address = addr_info
    bad = refused_addresses([str(address[0])])
    if bad:
        raise _refusal(str(address[0]), bad)
    return socket.socket(family, type_, proto)


def guarded_session(
    *, allow_private: bool, max_connections: int = 100, ssl_context: ssl.SSLContext | None = None
) -> aiohttp.ClientSession:
    """An aiohttp session whose every connection goes through the SSRF guard.

    No proxies from the environment (a proxy would make the guard check the proxy, not the target), no
    cookies kept from one call to the next (calls for different guests share the session); redirects are
    refused per request (``allow_redirects=False`` in :func:`_exchange`: a 302 to an internal address is a
    classic SSRF hop). ``ssl_context`` replaces the default one, which verifies certificates against the
    system's CA store.
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        keepalive_timeout=KEEPALIVE_S,
        resolver=GuardedResolver(allow_private=allow_private),
        socket_factory=None if allow_private else _public_socket,
        ssl=ssl_context if ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT}
    )


class Egress:
    """Per-worker outbound state: connection pools, circuit breakers and the response cache.

    ``shared=False`` (the CLI, which runs each evaluation in its own event loop) opens a session per
    request instead of pooling, because pooled connections belong to the loop that opened them.
    ``ssl_context`` (tests: a server with a self-signed certificate) replaces the default, verifying one.
    """

    def __init__(
        self, *, shared: bool = True, max_connections: int = 100, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.shared = shared
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self._pools: dict[bool, tuple[aiohttp.ClientSession, asyncio.Semaphore]] = {}
        """Per ``allow_private``: the shared session, and one slot per connection it may open (exchanges in
        flight never outnumber the connections)."""
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

    def pool(self, allow_private: bool) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The shared session for ``allow_private`` and its slots, made on first use; needs a running loop,
        which the session belongs to. A worker makes both at start-up (``warm``), not at its first external
        call."""
        pool = self._pools.get(allow_private)
        if pool is None:
            session = guarded_session(
                allow_private=allow_private, max_connections=self.max_connections, ssl_context=self.ssl_context
            )
            pool = self._pools[allow_private] = (session, asyncio.Semaphore(self.max_connections))
        return pool

    def warm(self) -> None:
        for allow_private in (False, True):
            self.pool(allow_private)

    async def send(
        self,
        request: OutboundRequest,
        *,
        allow_private: bool,
        timeout_s: float,
        max_bytes: int,
        detached: bool = True,
    ) -> tuple[int, bytes]:
        """Send ``request``; its status and body, read within ``timeout_s``. aiohttp errors pass through.

        On the shared pools a caller never cancels an exchange: an exchange ends by aiohttp's own connect and
        read timeouts (``timeout_s`` each), which close or release its connection; and no more exchanges run
        than the pool has connections, so one never waits in the connector's queue. What a caller may wait
        on is a slot here, which is safe to give up. (httpx's pool, before aiohttp, left a connection
        CONNECTING for ever when its request was cancelled at the wrong moment, encode/httpcore#1093; the
        design outlived it.)

        (The CLI's unshared sessions live for one call, so a cancellation there leaks nothing that lasts.)

        ``detached`` (for a caller that may itself be cancelled, by a request's deadline): the exchange runs
        as a task of its own, and the caller stops waiting at ``timeout_s``. A caller that is never cancelled
        (a shared call, a task of the egress) passes False and runs it inline: under saturation each hop
        through the event loop costs milliseconds, and a task and its wake-up are two more hops.
        """
        # sock_connect covers the TCP connect and the TLS handshake; sock_read each wait for response bytes.
        # Name resolution has its own bound (RESOLVE_TIMEOUT_S), as before.
        timeouts = aiohttp.ClientTimeout(sock_connect=timeout_s, sock_read=timeout_s)
        if not self.shared:
            session = guarded_session(allow_private=allow_private, max_connections=4, ssl_context=self.ssl_context)
            async with session:
                async with asyncio.timeout(timeout_s):
                    return await _exchange(session, request, timeouts, max_bytes)
        pooled, slots = self.pool(allow_private)
        if not detached:
            await slots.acquire()
            try:
                return await _exchange(pooled, request, timeouts, max_bytes)
            finally:
                slots.release()
        async with asyncio.timeout(timeout_s):
            await slots.acquire()
            exchange = asyncio.ensure_future(_exchange(pooled, request, timeouts, max_bytes))
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
        for session, _ in self._pools.values():
            await session.close()
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


async def _exchange(
    session: aiohttp.ClientSession, request: OutboundRequest, timeouts: aiohttp.ClientTimeout, max_bytes: int
) -> tuple[int, bytes]:
    # encoded=True: the URL was encoded by the caller (as httpx encoded it); aiohttp would re-quote it,
    # decoding %2F, %3A and %40 in the query.
    url = URL(request.url, encoded=True)
    async with session.request(
        request.method, url, headers=request.headers, data=request.body, allow_redirects=False, timeout=timeouts
    ) as response:
        # Streamed so an oversized body is cut off at max_bytes instead of being read into memory whole; the
        # chunks come decompressed (gzip, deflate, br, as httpx did), so the bound is on what is parsed.
        chunks, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > max_bytes:
                response.close()  # the rest stays unread: the connection is dropped, not pooled
                raise ExternalCallFailed(f"response larger than {max_bytes} bytes", reason="error")
            chunks.append(chunk)
        return response.status, b"".join(chunks)


def egress_for(services: Any) -> Egress:
    """The worker's egress; without app services (the CLI) an unpooled one."""
    if isinstance(services, dict):
        egress = services.get(SERVICE)
        if egress is None:
            egress = services[SERVICE] = Egress()
        return egress
    return Egress(shared=False)
