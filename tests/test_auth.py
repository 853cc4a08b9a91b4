"""Which API key a request presents (engine/auth.py), read from the raw ASGI headers in one pass."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from engine.auth import presented_key


def _request(*headers: tuple[str, str]) -> Request:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        pytest.param([], None, id="none"),
        pytest.param([("X-API-Key", "pub")], "pub", id="x-api-key"),
        pytest.param([("Authorization", "Bearer  adm ")], "adm", id="bearer, stripped"),
        pytest.param([("Authorization", "BEARER adm")], "adm", id="bearer, any case"),
        pytest.param([("X-API-Key", "pub"), ("Authorization", "Bearer adm")], "adm", id="bearer wins, after"),
        pytest.param([("Authorization", "Bearer adm"), ("X-API-Key", "pub")], "adm", id="bearer wins, before"),
        pytest.param([("Authorization", "Basic dXNlcg=="), ("X-API-Key", "pub")], "pub", id="not bearer: x-api-key"),
        pytest.param([("Authorization", "Basic dXNlcg==")], None, id="not bearer alone"),
        pytest.param([("X-API-Key", "first"), ("X-API-Key", "second")], "first", id="first x-api-key"),
        pytest.param([("Content-Type", "application/json"), ("X-Api-Key", "pub")], "pub", id="among others"),
    ],
)
def test_presented_key(headers: list[tuple[str, str]], key: str | None) -> None:
    assert presented_key(_request(*headers)) == key
