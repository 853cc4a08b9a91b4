"""``external``: a templated HTTP call to a declared connection, with a fallback for every failure.

Definition::

    {"id": "products", "kind": "external", "connection": "commerce",
     "method": "GET", "path": "/products/{context.category}",
     "query": {"tier": "tier.name", "limit": "3"}, "body": {...FEEL template...},
     "output": {"items": "response.products", "count": "count(response.products)"},
     "timeout_ms": 150, "retries": 1, "backoff_ms": 20, "cache_ttl_s": 30, "stale_if_error_s": 600,
     "fallback": {"items": []}}

``{…}`` in the path, ``query`` values and ``body`` leaves are FEEL expressions over the scope; ``output``
is a FEEL template over the scope plus ``response`` (the parsed JSON body). The node never fails a
decision: on timeout, error, an open circuit or an exhausted budget it yields ``fallback`` and the trace
says why (``fallback``) with the details (``attempts``, ``cache``, ``status``, ``reason``).

With ``cache_ttl_s``, concurrent requests that miss the cache for the same call share one call (they show
``cache: joined``): when a popular entry expires under load, the dependency sees one request, not one per
request in flight. RFC 5861's two stale modes go with it: ``stale_while_revalidate_s`` answers an entry
that expired at most that long ago at once while one background call refreshes it (``cache:
revalidating``), and ``stale_if_error_s`` answers a failed call with the last good response if it is at
most that old (``fallback: stale``) rather than with ``fallback``.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
from yarl import URL

from engine.connections import KEY_PATTERN, Connection, directory_for
from engine.egress import Egress, OutboundRequest, egress_for
from engine.errors import ExternalCallFailed, Problem
from engine.feel import Expression, to_feel, to_json
from engine.feel.scope import Bound
from engine.nodes.base import MISS, CompileContext, Node, TraceEntry, known_keys, require
from engine.nodes.output import Builder, template
from engine.types import JSONObject, Scope

KIND = "external"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESPONSE = "response"
MIN_ATTEMPT_S = 0.005
"""A retry is only worth starting with at least this much of the budget left after its back-off."""
MAX_RESPONSE_BYTES = 1_048_576
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"#<>?`{}')
"""What httpx left unquoted in a path (the WHATWG path percent-encode set's complement, with ``%``: an
escape already made, by :func:`_segment`, stays as it is)."""


class Retryable(ExternalCallFailed):
    """A failure another attempt may cure: timeouts, connection errors, 5xx, 408 and 429."""


class Request(NamedTuple):
    """What one evaluation asks for, rendered; also the cache key (a tuple: made and hashed in C, where a
    frozen dataclass did both in Python, on every decision)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a shared call ended, for everyone who waited for it."""

    value: Any
    failure: ExternalCallFailed | None
    detail: dict[str, Any]
    """The call's trace details (attempts, status, circuit), copied into each waiter's entry."""


@dataclass(frozen=True, slots=True)
class _Flight:
    """A shared call in flight: what waiters await, and its trace so far (for one that gives up)."""

    done: asyncio.Future[_Outcome]
    trace: TraceEntry


@dataclass(frozen=True, slots=True)
class ExternalNode:
    id: str
    kind: str
    deps: frozenset[str]
    gate: Expression | None
    connection: str
    method: str
    path: tuple[str | Expression, ...]
    query: tuple[tuple[str, Expression], ...]
    body: Builder | None
    output: Builder
    output_reads_scope: bool
    """Whether ``output`` reads names other than ``response``; if not, it is given ``response`` alone."""
    timeout_ms: int | None
    retries: int
    backoff_ms: int
    cache_ttl_s: float
    stale_if_error_s: float
    stale_while_revalidate_s: float
    fallback: Any
    egress: Egress
    services: Any

    def cached(self, scope: Scope, trace: TraceEntry) -> Any:
        """The answer from the response cache, or :data:`MISS`: the executor asks before it schedules the
        call, so a cache hit costs no task and no timer. Anything but a plain hit (a gate, a failed
        render, no cache) is a miss here and takes the normal path."""
        if self.cache_ttl_s <= 0 or (self.gate is not None and self.gate.fn(scope) is not True):
            return MISS
        try:
            request = self._render(scope)
        except ExternalCallFailed:
            return MISS
        key = (self.connection, request)
        hit = self.egress.fresh(key)
        if hit is not None:
            trace.detail["cache"] = "hit"
        else:
            hit = self._revalidating(key, request)
            if hit is None:
                return self._circuit_open(key, request, scope, trace)
            trace.detail["cache"] = "revalidating"
        trace.detail["attempts"] = 0
        if self.output_reads_scope:
            return self.output(Bound({RESPONSE: hit[0]}, scope))
        return self.output({RESPONSE: hit[0]})  # reads nothing else (``response.products``): no layered scope

    def _circuit_open(self, key: Any, request: Request, scope: Scope, trace: TraceEntry) -> Any:
        """With the connection's circuit open, the answer the call path would give (the stale response or
        the fallback), without its task: an open circuit usually means an overloaded worker, whose event
        loop lag made calls miss their timeouts, and it should not pay more per decision then."""
        if not self._circuit_is_open() or key in self.egress.inflight:
            return MISS  # closed, a half-open probe to send, or a call in flight to join: the call path
        trace.detail.update(attempts=0, cache="miss", circuit="open")
        return self._failed(_circuit_open(self.connection), request, scope, trace)

    def _revalidating(self, key: Any, request: Request) -> tuple[Any, float] | None:
        """Within ``stale_while_revalidate_s`` of expiry: the last response now, a refresh in the background
        (one per call, shared with any request that misses meanwhile) — nobody waits for an expiry."""
        if self.stale_while_revalidate_s <= 0:
            return None
        entry = self.egress.stale.get(key)
        if entry is None or time.monotonic() - entry[1] > self.cache_ttl_s + self.stale_while_revalidate_s:
            return None
        # With the circuit open a refresh could only fail; started anyway, it was a task, a future and an
        # exception (cyclic garbage) per request for as long as the circuit stayed open, which under
        # overload, when a circuit opens, took CPU from the requests. The probe goes out once half-open.
        if key not in self.egress.inflight and not self._circuit_is_open():
            self._start(key, request)
        return entry

    def _circuit_is_open(self) -> bool:
        breaker = self.egress.breakers.get(self.connection)
        return breaker is not None and breaker.state() == "open"

    def evaluate(self, scope: Scope, trace: TraceEntry) -> Any:
        # The executor calls evaluate_async; a synchronous caller gets the fallback, as with a timeout.
        trace.fallback = "sync"
        return self.fallback

    async def evaluate_async(self, scope: Scope, trace: TraceEntry, deadline_s: float) -> Any:
        trace.detail["attempts"] = 0
        request = None
        try:
            request = self._render(scope)
            response = await self._fetch(request, trace, deadline_s)
            return self.output(Bound({RESPONSE: response}, scope))
        except ExternalCallFailed as exc:
            return self._failed(exc, request, scope, trace)

    def _failed(self, exc: ExternalCallFailed, request: Request | None, scope: Scope, trace: TraceEntry) -> Any:
        """A failed call's answer: the last good response within ``stale_if_error_s``, else ``fallback``."""
        trace.detail["reason"] = exc.detail
        stale = self._stale(request)
        if stale is not None:
            trace.fallback, trace.detail["cache"] = "stale", "stale"
            return self.output(Bound({RESPONSE: stale}, scope))
        trace.fallback = exc.reason
        return self.fallback

    def _stale(self, request: Request | None) -> Any:
        if request is None or self.stale_if_error_s <= 0:
            return None
        entry = self.egress.stale.get((self.connection, request))
        if entry is None or time.monotonic() - entry[1] > self.stale_if_error_s:
            return None
        return entry[0]

    def _render(self, scope: Scope) -> Request:
        # A string value (a category, a tier: the usual placeholder) is its own JSON and its own text: it skips
        # to_json and _text. With the output below given ``response`` alone: picks 34.1 k → 24.1 k instructions.
        segments = []
        for part in self.path:
            if isinstance(part, str):
                segments.append(part)
                continue
            value = part.fn(scope)
            if type(value) is not str:
                value = to_json(value)
                if value is None or isinstance(value, dict | list):
                    raise ExternalCallFailed(f"path placeholder {{{part.source}}} evaluated to {value!r}")
                value = _text(value)
            if value in (".", ".."):
                raise ExternalCallFailed(f"path placeholder {{{part.source}}} evaluated to {value!r}")
            segments.append(_segment(value))
        query = []
        for name, expr in self.query:
            value = expr.fn(scope)
            if type(value) is str:
                query.append((name, value))
                continue
            value = to_json(value)
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    query.append((name, _text(item)))
        body = orjson.dumps(to_json(self.body(scope))) if self.body is not None else None
        return Request(self.method, "".join(segments), tuple(query), body)

    async def _fetch(self, request: Request, trace: TraceEntry, deadline_s: float) -> Any:
        if self.cache_ttl_s <= 0:
            return await self._call(request, trace, deadline_s)
        key = (self.connection, request)
        hit = self.egress.fresh(key)
        if hit is not None:
            trace.detail["cache"] = "hit"
            return hit[0]
        stale = self._revalidating(key, request)
        if stale is not None:
            trace.detail["cache"] = "revalidating"
            return stale[0]
        return await self._shared_call(key, request, trace, deadline_s)

    async def _shared_call(self, key: Any, request: Request, trace: TraceEntry, deadline_s: float) -> Any:
        """Wait for the one call for ``key`` (cache misses only), starting it if nobody has.

        The call runs on its own (:meth:`_fill`); a request waits for it as long as the node's timeout gave
        its attempts and back-offs, and never past its deadline. A request that gives up leaves the call
        running, so its answer still fills the cache: under load a worker's event loop lag alone can exceed a
        tight node timeout, and a call cancelled with its first request never filled the cache, counted as a
        failure in the breaker, and ended with the circuit open for every request."""
        flight = self.egress.inflight.get(key)
        if flight is not None:
            trace.detail["cache"] = "joined"
        else:
            trace.detail["cache"] = "miss"
            flight = self._start(key, request)
        patience_s = self._patience_s()
        try:
            # Shielded: one request giving up must not cancel the call others (and the cache) wait for.
            if patience_s is not None and time.monotonic() + patience_s < deadline_s:
                async with asyncio.timeout(patience_s):
                    outcome = await asyncio.shield(flight.done)
            else:  # the request's deadline comes first: the executor's timeout ends the wait
                outcome = await asyncio.shield(flight.done)
        except TimeoutError:
            trace.detail.update(flight.trace.detail)
            raise ExternalCallFailed(
                f"no answer within {(patience_s or 0) * 1000:.0f} ms (the call goes on, for the cache)",
                reason="timeout",
            ) from None
        trace.detail.update(outcome.detail)
        if outcome.failure is not None:
            raise ExternalCallFailed(outcome.failure.detail, reason=outcome.failure.reason)
        return outcome.value

    def _patience_s(self) -> float | None:
        """How long a request waits for a shared call: what the node's timeout gave every attempt and back-off
        (None: the node takes the connection's timeout, so the call's own budget is the limit)."""
        if self.timeout_ms is None:
            return None
        backoff_ms: int = self.backoff_ms * (2**self.retries - 1)
        return (self.timeout_ms * (self.retries + 1) + backoff_ms) / 1000

    def _start(self, key: Any, request: Request) -> _Flight:
        flight = self.egress.inflight[key] = _Flight(
            asyncio.get_running_loop().create_future(), TraceEntry(self.id, self.kind)
        )
        self.egress.background(self._fill(key, request, flight))
        return flight

    async def _fill(self, key: Any, request: Request, flight: _Flight) -> None:
        """The call for ``key``, for whoever waits and for the cache: the connection's timeout per attempt."""
        try:
            value = await self._call(request, flight.trace, None)
        except ExternalCallFailed as exc:
            flight.done.set_result(_Outcome(None, exc, flight.trace.detail))
        except BaseException as exc:  # cancelled (the worker is shutting down), or a bug: logged by the egress
            failure = ExternalCallFailed(f"the call ended with {type(exc).__name__}: {exc}")
            flight.done.set_result(_Outcome(None, failure, flight.trace.detail))
            raise
        else:
            self.egress.remember(key, value, self.cache_ttl_s)
            if self.stale_if_error_s > 0 or self.stale_while_revalidate_s > 0:
                self.egress.stale[key] = (value, time.monotonic())
            flight.done.set_result(_Outcome(value, None, flight.trace.detail))
        finally:
            del self.egress.inflight[key]

    async def _call(self, request: Request, trace: TraceEntry, deadline_s: float | None) -> Any:
        """The call, retried; ``deadline_s`` None for a shared call (see below)."""
        directory = directory_for(self.services)
        if directory is None:
            raise ExternalCallFailed("no connection directory in this process (the CLI runs without one)")
        conn = await directory.get(self.connection)
        breaker = self.egress.breaker(conn.key, conn.circuit_failures, conn.circuit_cooldown_ms / 1000)
        timeout_s = (self.timeout_ms or conn.timeout_ms) / 1000
        shared = deadline_s is None
        if deadline_s is None:
            # A shared call (cache misses, refreshes) runs on its own with the connection's timeout: the
            # node's timeout is what a request can afford to wait (see _shared_call), and a busy worker's
            # event loop lag alone can exceed it, failing calls a healthy dependency answered in time.
            timeout_s = conn.timeout_ms / 1000
            deadline_s = time.monotonic() + timeout_s * (self.retries + 1) + self.backoff_ms * self.retries / 1000
        attempt = 0
        while True:
            if not breaker.allow():
                trace.detail["circuit"] = "open"
                raise _circuit_open(conn.key)
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                breaker.release()
                raise ExternalCallFailed("no time left before the request deadline", reason="deadline")
            attempt += 1
            trace.detail["attempts"] = attempt
            try:
                value = await self._attempt(conn, request, trace, min(timeout_s, remaining_s), shared)
            except Retryable as exc:
                breaker.failure()
                backoff_s = self.backoff_ms * 2 ** (attempt - 1) / 1000
                if attempt > self.retries:
                    raise
                if time.monotonic() + backoff_s + MIN_ATTEMPT_S >= deadline_s:
                    exc.detail += "; no time left for a retry"
                    raise
                await asyncio.sleep(backoff_s)
                continue
            except ExternalCallFailed:
                breaker.release()  # a 4xx or a refusal says nothing about the dependency's health
                raise
            except asyncio.CancelledError:
                breaker.release()
                raise
            breaker.success()
            return value

    async def _attempt(
        self, conn: Connection, request: Request, trace: TraceEntry, timeout_s: float, shared: bool
    ) -> Any:
        base, host = _base(conn.base_url)
        url = _url(base, request.path, request.query)
        # The base's host passed allowed_hosts when the connection was parsed; the path may never change it.
        shown = urlsplit(url).hostname
        if shown != host:
            raise ExternalCallFailed(f"host '{shown}' is not allowed for '{conn.key}'", reason="refused")
        headers = dict(conn.headers)
        headers["accept"] = "application/json"
        if request.body is not None:
            headers["content-type"] = "application/json"
        auth = conn.auth()
        if auth is not None:
            headers[auth[0]] = auth[1]
        try:
            # A shared call runs in an egress task nobody cancels: its exchange can run inline (see Egress.send).
            status, content = await self.egress.send(
                OutboundRequest(request.method, url, headers, request.body),
                allow_private=conn.allow_private,
                timeout_s=timeout_s,
                max_bytes=MAX_RESPONSE_BYTES,
                detached=not shared,
            )
        except aiohttp.ServerTimeoutError as exc:  # aiohttp's connect or read timeout (a TimeoutError too)
            raise Retryable(f"timed out: {type(exc).__name__}", reason="timeout") from exc
        except TimeoutError as exc:
            raise Retryable(f"no answer within {timeout_s * 1000:.0f} ms", reason="timeout") from exc
        except aiohttp.ClientError as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}", reason="error") from exc
        trace.detail["status"] = status
        if status >= 500 or status in (408, 429):
            raise Retryable(f"HTTP {status}", reason="error")
        if status >= 400:
            raise ExternalCallFailed(f"HTTP {status}", reason="error")
        try:
            return to_feel(orjson.loads(content)) if content else None
        except orjson.JSONDecodeError as exc:
            raise ExternalCallFailed(f"response is not JSON: {exc}", reason="error") from exc


def _circuit_open(connection: str) -> ExternalCallFailed:
    return ExternalCallFailed(f"circuit for connection '{connection}' is open", reason="circuit-open")


@functools.lru_cache(maxsize=4096)
def _segment(text: str) -> str:
    """``text`` percent-encoded as one path segment; memoised, as placeholders take few distinct values (a
    category, a tier) and ``quote`` costs ~0.7 µs."""
    return quote(text, safe="")


@functools.lru_cache(maxsize=256)
def _base(base_url: str) -> tuple[str, str]:
    """``base_url`` as the start of request URLs, and its host as a request URL shows it: the origin normalised
    as httpx did (lower-case, IDNA-encoded host, no default port), the path quoted as httpx quoted it."""
    origin = str(URL(base_url).origin())
    return origin + quote(urlsplit(base_url).path, safe=_PATH_SAFE), urlsplit(origin).hostname or ""


def _url(base: str, path: str, query: tuple[tuple[str, str], ...]) -> str:
    """The request's URL, percent-encoded byte for byte as httpx encoded it (``tests/test_external.py`` checks):
    the path quoted with its path-safe set, the query form-encoded (``a b&c`` → ``a+b%26c``), no ``?`` without
    one. Sent as it is (see engine.egress._exchange)."""
    url = base + quote(path, safe=_PATH_SAFE)
    if "/." in path:  # a dot segment in the model's literal path (a placeholder cannot make one)
        parts = urlsplit(url)
        url = parts._replace(path=_without_dot_segments(parts.path)).geturl()
    return f"{url}?{urlencode(query)}" if query else url


def _without_dot_segments(path: str) -> str:
    """``/api/./a/../b`` → ``/api/b``, as httpx resolved them (it may climb into the base URL's path)."""
    kept: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if kept and kept != [""]:
                kept.pop()
        elif part != ".":
            kept.append(part)
    return "/".join(kept)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _path(raw: str, pointer: str, ctx: CompileContext) -> tuple[str | Expression, ...]:
    # The path is appended to the connection's base URL: it may never name another host or scheme.
    if not raw.startswith("/") or raw.startswith("//") or "\\" in raw or "?" in raw or "#" in raw:
        ctx.problems.append(Problem(pointer, "must be a path starting with '/' (no host, query or fragment)"))
        return ()
    parts: list[str | Expression] = []
    last = 0
    for m in _PLACEHOLDER.finditer(raw):
        parts.append(raw[last : m.start()])
        expr = ctx.expression(m.group(1), pointer)
        if expr is not None:
            parts.append(expr)
        last = m.end()
    parts.append(raw[last:])
    literal = "".join(p for p in parts if isinstance(p, str))
    if "{" in literal or "}" in literal or "@" in literal or ":" in literal.split("/")[1]:
        ctx.problems.append(Problem(pointer, "unbalanced '{}' or a host-like path"))
    return tuple(p for p in parts if p != "")


def _number(defn: JSONObject, key: str, lo: float, hi: float, pointer: str, ctx: CompileContext) -> Any:
    value = defn.get(key)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi):
        ctx.problems.append(Problem(f"{pointer}/{key}", f"must be a number from {lo:g} to {hi:g}"))
        return None
    return value


def compile(defn: JSONObject, pointer: str, ctx: CompileContext) -> Node | None:
    fields = ("connection", "method", "path", "query", "body", "output", "timeout_ms", "retries", "backoff_ms")
    known_keys(defn, (*fields, "cache_ttl_s", "stale_if_error_s", "stale_while_revalidate_s", "fallback"), pointer, ctx)
    before = len(ctx.problems)
    connection = require(defn, "connection", pointer, ctx, str)
    if isinstance(connection, str) and not KEY_PATTERN.match(connection):
        ctx.problems.append(Problem(f"{pointer}/connection", "not a valid connection key"))
    method = str(defn.get("method", "GET")).upper()
    if method not in METHODS:
        ctx.problems.append(Problem(f"{pointer}/method", f"one of {', '.join(METHODS)}"))
    raw_path = require(defn, "path", pointer, ctx, str)
    path = _path(raw_path, f"{pointer}/path", ctx) if isinstance(raw_path, str) else ()
    refs: set[str] = set()
    raw_query = defn.get("query", {})
    query: list[tuple[str, Expression]] = []
    if not isinstance(raw_query, dict):
        ctx.problems.append(Problem(f"{pointer}/query", "must map parameter names to FEEL expressions"))
    else:
        for name, text in raw_query.items():
            expr = ctx.expression(text, f"{pointer}/query/{name}")
            if expr is not None:
                query.append((name, expr))
    body = template(defn["body"], f"{pointer}/body", ctx, refs) if "body" in defn else None
    local = CompileContext(ctx.names | {RESPONSE}, ctx.model, ctx.problems, ctx.services)
    output_refs: set[str] = set()
    output = template(defn.get("output", RESPONSE), f"{pointer}/output", local, output_refs)
    refs |= output_refs
    gate = ctx.expression(defn["when"], f"{pointer}/when") if "when" in defn else None
    timeout_ms = _number(defn, "timeout_ms", 1, 60_000, pointer, ctx)
    retries = _number(defn, "retries", 0, 5, pointer, ctx)
    backoff_ms = _number(defn, "backoff_ms", 0, 10_000, pointer, ctx)
    cache_ttl_s = _number(defn, "cache_ttl_s", 0, 86_400, pointer, ctx)
    stale_s = _number(defn, "stale_if_error_s", 0, 7 * 86_400, pointer, ctx)
    swr_s = _number(defn, "stale_while_revalidate_s", 0, 86_400, pointer, ctx)
    for name, value in (("stale_if_error_s", stale_s), ("stale_while_revalidate_s", swr_s)):
        if value and not cache_ttl_s:
            ctx.problems.append(Problem(f"{pointer}/{name}", "needs cache_ttl_s: stale answers come from the cache"))
    if len(ctx.problems) > before:
        return None
    for part in (*path, *(e for _, e in query), gate):
        if part is not None and not isinstance(part, str):
            refs |= part.references
    return ExternalNode(
        defn["id"], KIND, frozenset(refs) & ctx.names, gate, connection, method, path, tuple(query), body, output,
        not output_refs <= {RESPONSE},
        int(timeout_ms) if timeout_ms else None, int(retries or 0), int(backoff_ms if backoff_ms is not None else 10),
        float(cache_ttl_s or 0), float(stale_s or 0), float(swr_s or 0), to_feel(defn.get("fallback")),
        egress_for(ctx.services), ctx.services,
    )  # fmt: skip
