"""JSON responses rendered with orjson (several times faster than the standard library encoder)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

_JSON_TYPE = (b"content-type", b"application/json")


class _JSONResponse(Response):
    """A JSON body with its two headers built directly. ``Response.__init__`` handles any body, media type and header
    set generically, which took a microsecond of every storefront call for these two headers."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int, background: BackgroundTask | None) -> None:
        self.status_code = status_code
        self.background = background
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]


def json_response(
    body: Any, status: int = 200, *, headers: dict[str, str] | None = None, background: BackgroundTask | None = None
) -> Response:
    content = orjson.dumps(body, default=str)
    if headers is None and 200 <= status and status not in (204, 304):
        return _JSONResponse(content, status, background)
    return Response(content, status_code=status, media_type="application/json", headers=headers, background=background)
