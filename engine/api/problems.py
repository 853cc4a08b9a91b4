"""The one place where errors become HTTP responses: ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import ArbiterError, SdkError

log = logging.getLogger("arbiter")
PROBLEM_JSON = "application/problem+json"


def problem_response(body: dict[str, object], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, default=str), status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def arbiter_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ArbiterError)
    body = exc.problem()
    if isinstance(exc, SdkError):
        # Sitecore-compatible endpoints answer in that API's own JSON error shape, which its SDK parses.
        return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json")
    body["instance"] = request.url.path
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(body, exc.status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem_response(
        {
            "type": "about:blank",
            "title": exc.detail,
            "status": exc.status_code,
            "detail": f"{request.method} {request.url.path}: {exc.detail}",
            "instance": request.url.path,
        },
        exc.status_code,
        dict(exc.headers) if exc.headers else None,
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        {
            "type": "https://arbiter.dev/problems/internal",
            "title": "Internal error",
            "status": 500,
            "detail": "an unexpected error occurred; it has been logged",
            "instance": request.url.path,
        },
        500,
    )


Handler = Callable[[Request, Exception], Awaitable[Response]]
HANDLERS: dict[type[Exception], Handler] = {
    ArbiterError: arbiter_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}


def handler_for(exc: Exception) -> Handler:
    """The handler Starlette would pick for ``exc``: the nearest class in its MRO with one."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler
    return unexpected_error
