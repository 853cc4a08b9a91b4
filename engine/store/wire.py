"""One multiplexed, auto-pipelined connection to Redis for the hot paths (guest reads, event writes).

Why not redis-py for these: its asyncio client spends ~40 µs of Python per command (a pool checkout
under a timeout context, the retry wrapper, a socket-timeout context per read, response callbacks) —
17 % of a saturated decide worker and 37 % of an events worker in py-spy (benchmarks/RESULTS.md). Here
every command issued during one event-loop iteration goes out in **one write**, and the replies are
parsed by hiredis in one pass and handed to their callers in order (Redis answers a connection's
commands in the order sent, so a FIFO of futures is the whole matching protocol). This is what ioredis
calls auto-pipelining and what Lettuce does by default; under load it also saves Redis a syscall per
command, which on a 2-core box is CPU given back to the workers.

Only for commands that answer promptly: blocking reads (``XREAD BLOCK``), pub/sub and ``MULTI`` stay on
redis-py, and so does Redis Cluster (commands must be routed by slot) and TLS.

Errors are redis-py's, so callers keep one ``except RedisError`` boundary: a refused or lost connection
raises ``ConnectionError`` to every command in flight; a reply slower than ``timeout_s`` raises
``TimeoutError`` (the connection is then dropped: later replies could no longer be matched to callers);
an error reply raises ``ResponseError``.

A circuit breaker (:mod:`engine.breaker`) stands in front: after ``FAILURES_TO_OPEN`` calls in a row that timed
out or found no connection, calls fail at once (:class:`CircuitOpen`) for ``COOLDOWN_S``, then one call probes.
A Redis that hangs (a partition, a stalled host) cost every decision the whole timeout before; now the first few.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from engine.breaker import Breaker

FAILURES_TO_OPEN = 3
COOLDOWN_S = 1.0


class CircuitOpen(ConnectionError):
    """Refused without trying: the server's last calls timed out or found no connection (see the module)."""


Arg = str | bytes | int | float
Command = tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Lua:
    """A server-side script. Each connection loads it (``SCRIPT LOAD``) in the same write as its first
    call, so a restarted or failed-over Redis, whose script cache is empty, costs nothing extra."""

    source: bytes
    sha: str

    @classmethod
    def of(cls, source: str | bytes) -> Lua:
        raw = source.encode() if isinstance(source, str) else source
        return cls(raw, hashlib.sha1(raw).hexdigest())  # noqa: S324 — Redis names scripts by SHA-1


Invoke = tuple[Lua, Sequence[Arg], Sequence[Arg]]


class _Waiter(NamedTuple):
    """Commands sent together, waiting for their replies (a tuple: one per command or batch sent)."""

    future: asyncio.Future[Any]
    sent_s: float
    expected: int
    """How many replies it takes; 0 for a single command, whose future gets the reply itself."""
    replies: list[Any] | None


class _Resp(asyncio.Protocol):
    """The connection: outgoing commands buffered per loop iteration, replies matched FIFO."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[_Waiter] = deque()
        self.outgoing: list[bytes] = []
        self.loaded: set[str] = set()
        """Shas of the scripts this connection has sent ``SCRIPT LOAD`` for."""
        self.lost: Exception | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """One command; the future gets its reply."""
        return self._queue(packed, 0)

    def send_many(self, packed: list[bytes]) -> asyncio.Future[list[Any]]:
        """Commands sent together; one future gets all their replies, in order. One future, one clock read and
        one wake-up per batch rather than per command: a flush of exposures or decision records is dozens."""
        return self._queue(b"".join(packed), len(packed))

    def _queue(self, packed: bytes, expected: int) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        if not self.outgoing:
            self.loop.call_soon(self._flush)
        self.outgoing.append(packed)
        self.waiting.append(_Waiter(fut, time.monotonic(), expected, [] if expected else None))
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.timeout_s, self._check_timeout)
        return fut

    def _flush(self) -> None:
        if self.transport is not None and self.lost is None:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            reply = self.reader.gets()
            if reply is False:  # an incomplete reply: wait for more bytes (no real reply is False)
                return
            head = waiting[0]
            replies = head.replies
            if replies is None:  # a single command
                waiting.popleft()
                result = reply
            else:
                replies.append(reply)
                if len(replies) < head.expected:
                    continue
                waiting.popleft()
                result = replies
            if not head.future.done():  # its caller may have been cancelled meanwhile; replies are still consumed
                head.future.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _check_timeout(self) -> None:
        """One timer per connection, not per command: only the oldest command can be the late one."""
        self._watchdog = None
        if not self.waiting:
            return
        late_s = self.waiting[0].sent_s + self.timeout_s - time.monotonic()
        if late_s > 0:
            self._watchdog = self.loop.call_later(late_s, self._check_timeout)
            return
        self._fail(TimeoutError(f"Redis did not answer within {self.timeout_s * 1000:.0f} ms"))

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            fut = self.waiting.popleft().future
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


class Wire:
    """Commands to one Redis server over one shared connection, reconnected on demand."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 0.25,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.timeout_s = timeout_s
        self.breaker = Breaker(FAILURES_TO_OPEN, COOLDOWN_S)
        self._conn: _Resp | None = None
        self._connecting: asyncio.Future[_Resp] | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout_ms: int) -> Wire | None:
        """A Wire for ``redis://`` and ``unix://`` URLs; None where redis-py must do it (cluster, TLS)."""
        if not url.startswith(("redis://", "unix://")):
            return None
        opts = parse_url(url)
        return cls(
            host=opts.get("host", "127.0.0.1"),
            port=int(opts.get("port", 6379)),
            path=opts.get("path"),
            db=int(opts.get("db", 0)),
            username=opts.get("username"),
            password=opts.get("password"),
            timeout_s=timeout_ms / 1000,
        )

    async def call(self, *args: Arg) -> Any:
        """One command; its reply as hiredis gives it (bytes, int, None, or a list of them)."""
        self._admit()
        try:
            conn = await self._connection()
            reply = await conn.send(_pack(args))
        except BaseException as exc:
            self._failed(exc)
            raise
        self._succeeded()
        return _checked(reply)

    def _admit(self) -> None:
        breaker = self.breaker
        if breaker.opened_at_s is not None and not breaker.allow():
            raise CircuitOpen(f"Redis at {self._where()} failed its last calls; trying again within {COOLDOWN_S} s")

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionError | TimeoutError):
            self.breaker.failure()
        else:  # a cancelled probe, or one whose arguments did not pack, tells nothing: the next caller probes
            self.breaker.release()

    def _succeeded(self) -> None:
        if self.breaker.failures:
            self.breaker.success()

    async def script(self, lua: Lua, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by its sha (see :class:`Lua` for how it gets loaded)."""
        return (await self.call_many([(lua, keys, args)]))[0]

    async def call_many(self, items: Sequence[Command | Invoke], *, check: bool = True) -> list[Any]:
        """Commands and script calls in one write; every reply, or the first error once all have answered
        (``check=False``: error replies in their places, as ``hiredis.ReplyError``).

        Not a transaction: each command runs even if an earlier one failed.
        """
        if not items:
            return []
        self._admit()
        try:  # packing too: a probe whose arguments do not pack must release the breaker, or it stays half-open
            conn = await self._connection()
            packed, loads = _packed(items, conn)
            replies: list[Any] = await conn.send_many(packed)
        except BaseException as exc:
            self._failed(exc)
            raise
        self._succeeded()
        if loads:
            for i in reversed(loads):
                del replies[i]
        if check:
            for reply in replies:
                _checked(reply)
        return replies

    async def _connection(self) -> _Resp:
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        return conn

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None

    async def _connect(self) -> _Resp:
        # Concurrent callers share one attempt: a dead Redis costs one refused connect per round, not
        # one per request in flight.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_Resp]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._conn = attempt.result()

    async def _open(self) -> _Resp:
        loop = asyncio.get_running_loop()
        conn = _Resp(loop, self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.path is not None:
                    await loop.create_unix_connection(lambda: conn, self.path)
                else:
                    await loop.create_connection(lambda: conn, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis at {self._where()}: {exc}") from exc
        hello: list[tuple[Arg, ...]] = []
        if self.password is not None:
            auth: tuple[Arg, ...] = ("AUTH", self.password)
            hello.append(auth if self.username is None else ("AUTH", self.username, self.password))
        if self.db:
            hello.append(("SELECT", self.db))
        for command in hello:
            reply = await conn.send(_pack(command))
            if isinstance(reply, hiredis.ReplyError):
                refused = ConnectionError(f"Redis refused the connection's setup: {reply}")
                conn._fail(refused)
                raise refused
        return conn

    def _where(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def _packed(items: Sequence[Command | Invoke], conn: _Resp) -> tuple[list[bytes], list[int]]:
    """The items as RESP, and the positions of the ``SCRIPT LOAD`` commands put ahead of scripts ``conn`` has not
    loaded yet (their replies are dropped)."""
    packed: list[bytes] = []
    loads: list[int] = []
    loading: set[str] = set()
    for item in items:
        if isinstance(item[0], Lua):
            lua, keys, args = item
            if lua.sha not in conn.loaded and lua.sha not in loading:
                # Queued ahead of the EVALSHA on the same connection, so Redis has it when the call runs: one
                # round trip, and no NOSCRIPT retry that could re-run half a batch. Its reply is dropped: a
                # script that did not load fails its EVALSHA, which reports it.
                loads.append(len(packed))
                packed.append(_pack(("SCRIPT", "LOAD", lua.source)))
                loading.add(lua.sha)
            packed.append(_pack(("EVALSHA", lua.sha, len(keys), *keys, *args)))
        else:
            packed.append(_pack(item))
    conn.loaded.update(loading)  # only once every item packed: a batch that raised sends nothing
    return packed, loads


def _checked(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        raise ResponseError(str(reply))
    return reply


def _pack(args: tuple[Arg, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub types a 1-tuple
    return packed


def pairs(reply: Any) -> dict[bytes, bytes]:
    """A RESP2 flat ``[field, value, …]`` reply (``HGETALL``) as a dict; redis-py already gives a dict."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it, strict=True))
