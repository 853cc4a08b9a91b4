"""Reading a request body from its ASGI messages (engine/api/bodies.py): chunks, the size limit, a disconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from engine.api.bodies import read_body
from engine.errors import PayloadTooLarge


def _request(messages: list[dict[str, Any]], content_length: int | None = None) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def _read(request: Request, max_bytes: int = 100) -> bytes:
    return asyncio.run(read_body(request, max_bytes))


def test_one_message() -> None:
    assert _read(_request([{"type": "http.request", "body": b'{"a": 1}'}])) == b'{"a": 1}'


def test_chunks_are_joined_in_order() -> None:
    parts = [b'{"a"', b": ", b"1}"]
    messages = [{"type": "http.request", "body": p, "more_body": True} for p in parts]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    assert _read(_request(messages)) == b'{"a": 1}'


def test_a_message_without_a_body_is_empty() -> None:
    assert _read(_request([{"type": "http.request"}])) == b""


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(PayloadTooLarge, match="body of 101 bytes"):
        _read(_request([], content_length=101))


def test_chunks_over_the_limit_are_refused_without_a_declared_length() -> None:
    messages = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 2
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 100 bytes"):
        _read(_request(messages))


def test_a_disconnect_mid_body_raises_client_disconnect() -> None:
    messages = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    with pytest.raises(ClientDisconnect):
        _read(_request(messages))
