"""The outbound client on the wire: keep-alive, a server that drops idle connections, chunked and oversized
bodies, redirects, cookies, the URL as sent, and TLS. Against a raw HTTP/1.1 server in the test's event loop
(real sockets, real aiohttp), which counts connections and records what it received."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import pytest

import engine
from engine.egress import Egress, OutboundRequest
from engine.errors import ExternalCallFailed
from engine.nodes.external import _base, _url

MAX_BYTES = 4096
JSON = b'{"ok":true}'


@dataclass
class Received:
    target: str
    headers: dict[str, str]


@dataclass
class RawServer:
    """Answers by path (see :func:`_answer`); ``drop_second`` closes a connection at its second request
    without answering, as a server does when its idle timeout fires just as a request arrives."""

    port: int = 0
    connections: int = 0
    received: list[Received] = field(default_factory=list)
    drop_second: bool = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
                await reader.readexactly(int(headers.get("content-length", 0)))
                served += 1
                if self.drop_second and served == 2:
                    break
                self.received.append(Received(line.split(" ")[1], headers))
                writer.write(_answer(line.split(" ")[1].split("?")[0]))
                await writer.drain()
                if line.startswith("GET /close"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _answer(path: str) -> bytes:
    keep = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    match path:
        case "/chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b'{"parts":', b'["a",', b'"b"]', b"}"))
            return keep + b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        case "/big":
            return keep + b"content-length: %d\r\n\r\n" % (MAX_BYTES + 1) + b"x" * (MAX_BYTES + 1)
        case "/big-chunked":
            chunk = b"y" * 1000
            return keep + b"transfer-encoding: chunked\r\n\r\n" + b"3e8\r\n%s\r\n" % chunk * 5 + b"0\r\n\r\n"
        case "/gzip":
            body = gzip.compress(JSON)
            return keep + b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        case "/redirect":
            return b"HTTP/1.1 302 Found\r\nlocation: /json\r\ncontent-length: 0\r\n\r\n"
        case "/cookie":
            return keep + b"set-cookie: session=abc; Path=/\r\ncontent-length: %d\r\n\r\n" % len(JSON) + JSON
        case _:  # /json, /close (then the server closes the connection, with no ``connection: close`` said)
            return keep + b"content-length: %d\r\n\r\n" % len(JSON) + JSON


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


@pytest.fixture
async def egress() -> AsyncIterator[Egress]:
    out = Egress(max_connections=4)
    yield out
    await out.aclose()


async def get(egress: Egress, url: str, *, detached: bool = True) -> tuple[int, bytes]:
    return await egress.send(
        OutboundRequest("GET", url, {}), allow_private=True, timeout_s=2.0, max_bytes=MAX_BYTES, detached=detached
    )


@pytest.mark.parametrize("detached", [True, False])
async def test_a_keep_alive_connection_serves_the_next_calls(raw: RawServer, egress: Egress, detached: bool) -> None:
    for _ in range(5):
        assert await get(egress, f"http://127.0.0.1:{raw.port}/json", detached=detached) == (200, JSON)
    assert raw.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused(raw: RawServer, egress: Egress) -> None:
    for _ in range(3):
        assert await get(egress, f"http://127.0.0.1:{raw.port}/close") == (200, JSON)
    assert raw.connections == 3


async def test_a_request_the_server_drops_on_a_stale_connection_goes_out_again(raw: RawServer, egress: Egress) -> None:
    # The race an idle timeout leaves: the server closes as the request arrives. aiohttp sends an idempotent
    # request once more on a new connection rather than fail the call.
    raw.drop_second = True
    url = f"http://127.0.0.1:{raw.port}/json"
    assert [await get(egress, url) for _ in range(2)] == [(200, JSON), (200, JSON)]
    assert raw.connections == 2


async def test_a_chunked_body_is_read_whole(raw: RawServer, egress: Egress) -> None:
    assert await get(egress, f"http://127.0.0.1:{raw.port}/chunked") == (200, b'{"parts":["a","b"]}')


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_a_body_over_max_bytes_is_cut_off(raw: RawServer, egress: Egress, path: str) -> None:
    with pytest.raises(ExternalCallFailed, match=f"larger than {MAX_BYTES} bytes") as exc:
        await get(egress, f"http://127.0.0.1:{raw.port}{path}")
    assert exc.value.reason == "error"
    # The connection is dropped if part of the body had not arrived, pooled if it all had: either way the
    # next call gets a clean one.
    assert await get(egress, f"http://127.0.0.1:{raw.port}/json") == (200, JSON)


async def test_a_compressed_body_arrives_decoded(raw: RawServer, egress: Egress) -> None:
    assert await get(egress, f"http://127.0.0.1:{raw.port}/gzip") == (200, JSON)
    with httpx.Client() as before:  # the client this one replaced: the same encodings offered
        assert raw.received[0].headers["accept-encoding"] == before.headers["accept-encoding"]


async def test_calls_say_who_makes_them(raw: RawServer, egress: Egress) -> None:
    assert await get(egress, f"http://127.0.0.1:{raw.port}/json") == (200, JSON)
    assert raw.received[0].headers["user-agent"] == f"Arbiter/{engine.__version__}"


async def test_redirects_are_not_followed_and_cookies_not_kept(raw: RawServer, egress: Egress) -> None:
    assert await get(egress, f"http://127.0.0.1:{raw.port}/redirect") == (302, b"")
    assert await get(egress, f"http://127.0.0.1:{raw.port}/cookie") == (200, JSON)
    assert await get(egress, f"http://127.0.0.1:{raw.port}/json") == (200, JSON)
    assert [r.target for r in raw.received] == ["/redirect", "/cookie", "/json"]
    assert "cookie" not in raw.received[-1].headers


async def test_the_url_goes_out_as_encoded(raw: RawServer, egress: Egress) -> None:
    # aiohttp re-quotes a URL it is handed as text (%2F, %3A and %40 in a query come back decoded): the
    # engine's URL, encoded as httpx encoded it, must reach the server byte for byte.
    base, _ = _base(f"http://127.0.0.1:{raw.port}/api")
    url = _url(base, "/p/a%2Fb%3A%40", (("q", "a b/c:d@e?f"), ("u", "ü&x=y")))
    await get(egress, url)
    assert raw.received[0].target == "/api/p/a%2Fb%3A%40?q=a+b%2Fc%3Ad%40e%3Ff&u=%C3%BC%26x%3Dy"


@dataclass
class TlsServer:
    port: int
    client_context: ssl.SSLContext
    """Trusts the server's self-signed certificate (and nothing else)."""


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name "localhost" only (no IP in it), and its key: verification must
    be against the URL's host name, though the connection goes to the address the guard resolved it to."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls(raw: RawServer, certificate: tuple[Path, Path]) -> AsyncIterator[TlsServer]:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    listener = await asyncio.start_server(raw.serve, "127.0.0.1", 0, ssl=server_context)
    async with listener:
        yield TlsServer(listener.sockets[0].getsockname()[1], ssl.create_default_context(cafile=str(cert)))


async def _https(egress_of: Callable[[], Egress], url: str) -> tuple[int, bytes]:
    egress = egress_of()
    try:
        return await get(egress, url)
    finally:
        await egress.aclose()


async def test_https_to_a_trusted_certificate(tls: TlsServer, raw: RawServer) -> None:
    url = f"https://localhost:{tls.port}/json"
    assert await _https(lambda: Egress(ssl_context=tls.client_context), url) == (200, JSON)


async def test_https_verifies_certificates_by_default(tls: TlsServer) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _https(Egress, f"https://localhost:{tls.port}/json")


async def test_https_verifies_the_host_name(tls: TlsServer) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _https(lambda: Egress(ssl_context=tls.client_context), f"https://127.0.0.1:{tls.port}/json")
