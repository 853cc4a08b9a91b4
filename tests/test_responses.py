"""JSON responses: the lean path sends exactly what Starlette's generic Response would."""

from __future__ import annotations

import orjson
import pytest
from starlette.background import BackgroundTask
from starlette.responses import Response

from engine.api.responses import json_response


@pytest.mark.parametrize("status", [200, 201, 202, 400, 404, 422, 500, 204])
@pytest.mark.parametrize("headers", [None, {"Location": "/v1/x", "ETag": '"1"'}])
def test_json_responses_match_starlettes(status: int, headers: dict[str, str] | None) -> None:
    body = {"a": 1, "b": "é", "nested": [1.5, None]}
    task = BackgroundTask(print)
    ours = json_response(body, status, headers=headers, background=task)
    reference = Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers, background=task
    )
    assert (ours.status_code, ours.body, ours.raw_headers, ours.background) == (
        reference.status_code,
        reference.body,
        reference.raw_headers,
        reference.background,
    )
    assert ours.headers["content-type"] == "application/json"
