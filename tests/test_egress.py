"""The outbound pool under requests cut short: a caller's timeout or cancellation must never cost the
pool a connection (real stub on loopback, real aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys

import aiohttp
import pytest

from engine import egress as egress_module
from engine.egress import Egress, OutboundRequest
from engine.errors import ExternalCallFailed
from tests.commerce_stub import StubServer
from tests.commerce_stub import commerce as commerce  # noqa: F401 — fixtures
from tests.commerce_stub import commerce_server as commerce_server  # noqa: F401

MAX_BYTES = 1 << 20


async def send(egress: Egress, url: str, timeout_s: float, *, detached: bool = True) -> int:
    status, _ = await egress.send(
        OutboundRequest("GET", url, {}), allow_private=True, timeout_s=timeout_s, max_bytes=MAX_BYTES, detached=detached
    )
    return status


@pytest.mark.parametrize("detached", [True, False])
async def test_requests_cut_short_never_use_up_the_pool(commerce: StubServer, detached: bool) -> None:
    # httpcore 1.0.9 (the pool before aiohttp) left a connection CONNECTING for ever when its request was
    # cancelled after the pool handed it the connection but before it opened it (encode/httpcore#1093); under
    # load a worker's whole pool ended up so, and every later call to the connection timed out: the benchmark's
    # external node answered stale for 37 % of 287,655 decisions, and went on doing so when idle.
    egress = Egress(max_connections=2)
    url = f"{commerce.url}/products?categoryID=shoes"
    rng = random.Random(20261123)

    async def cut_short(timeout_s: float) -> None:
        # Detached: the caller gives up at its timeout; inline: aiohttp's own timeouts end the exchange.
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            await send(egress, url, timeout_s, detached=detached)

    try:
        for _ in range(30):
            await asyncio.gather(*(cut_short(rng.choice((0.0005, 0.001, 0.002, 0.005))) for _ in range(40)))
        await asyncio.sleep(0.2)  # every exchange cut short has ended by now (aiohttp's own timeouts bound it)
        assert [await send(egress, url, 2.0) for _ in range(3)] == [200, 200, 200]
    finally:
        await egress.aclose()


async def test_a_cancelled_caller_leaves_the_exchange_to_finish(commerce: StubServer) -> None:
    egress = Egress(max_connections=1)
    commerce.knobs.delay_s = 0.05
    url = f"{commerce.url}/products?categoryID=shoes"
    try:
        caller = asyncio.ensure_future(send(egress, url, 1.0))
        await asyncio.sleep(0.01)
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        commerce.knobs.delay_s = 0.0
        # The one connection comes back to the pool once the abandoned exchange ends: the next call gets it.
        assert await send(egress, url, 1.0) == 200
        assert commerce.knobs.calls["/products"] == 2
    finally:
        await egress.aclose()


def test_the_response_cache_expires_entries_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    egress = Egress()
    egress.remember("a", 1, ttl_s=30)
    egress.remember("b", 2, ttl_s=0.0)  # expires at once
    assert egress.fresh("a") is not None and egress.fresh("a")[0] == 1  # type: ignore[index]
    assert egress.fresh("b") is None and egress.fresh("missing") is None
    monkeypatch.setattr(egress_module, "CACHE_ENTRIES", 3)
    egress.remember("a", 10, ttl_s=30)  # rewritten: now the newest
    egress.remember("c", 3, ttl_s=30)
    egress.remember("d", 4, ttl_s=30)  # over the bound: the oldest written ("b") goes
    assert list(egress.cache) == ["a", "c", "d"]
    egress.remember("e", 5, ttl_s=30)
    assert list(egress.cache) == ["c", "d", "e"] and len(egress.cache) == 3


class _ImportSearches:
    """A finder first on ``sys.meta_path`` that only notes which modules Python went looking for: an import of a
    module already loaded never reaches it, a missing one does, every time."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.names.append(name)


async def test_an_external_call_searches_for_no_module(commerce: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # httpcore (the client before aiohttp) imported sniffio in every pool operation; without it installed (anyio
    # >= 4.5 stopped bringing it), each call made four failed imports, each a search of the filesystem: ~30 % of
    # an external call's CPU.
    egress = Egress()
    url = f"{commerce.url}/products?categoryID=shoes"
    searches = _ImportSearches()
    try:
        assert await send(egress, url, 2.0) == 200  # first use: whatever loads lazily loads now
        monkeypatch.setattr(sys, "meta_path", [searches, *sys.meta_path])
        assert [await send(egress, url, 2.0) for _ in range(3)] == [200, 200, 200]
        assert searches.names == []
    finally:
        await egress.aclose()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_a_private_address_is_refused_unless_the_call_allows_it(commerce: StubServer, host: str) -> None:
    # A name goes through the pool's resolver; an IP literal, which aiohttp never hands to a resolver, through
    # its socket factory. The allowed call goes first: what it put in aiohttp's DNS cache must not serve the
    # guarded pool.
    egress = Egress()
    request = OutboundRequest("GET", f"http://{host}:{commerce.port}/products", {})
    try:
        if host != "[::ffff:127.0.0.1]":  # not an address the stub listens on
            status, _ = await egress.send(request, allow_private=True, timeout_s=2.0, max_bytes=MAX_BYTES)
            assert status == 200 and commerce.knobs.calls["/products"] == 1
        with pytest.raises(ExternalCallFailed, match=r"non-public address \(") as refused:
            await egress.send(request, allow_private=False, timeout_s=2.0, max_bytes=MAX_BYTES)
        assert refused.value.reason == "refused"
        assert commerce.knobs.calls["/products"] == (0 if host == "[::ffff:127.0.0.1]" else 1)
    finally:
        await egress.aclose()
