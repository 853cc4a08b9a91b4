"""Reading request bodies safely: a size limit, JSON parsing, and typed field access with pointers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from engine.errors import BadRequest, PayloadTooLarge
from engine.types import JSONObject


async def read_body(request: Request, max_bytes: int) -> bytes:
    for name, declared in request.scope["headers"]:  # raw, as auth.presented_key reads them (why: there)
        if name == b"content-length":
            if declared.isdigit() and int(declared) > max_bytes:
                raise PayloadTooLarge(f"body of {int(declared)} bytes exceeds the limit of {max_bytes}")
            break
    # The ASGI messages themselves rather than ``request.stream()``: an async generator per request is
    # registered with the event loop's asyncgen hooks (a WeakSet add and a finaliser): 7.5 k instructions
    # of a decision's ~1.15 M for what is nearly always one message.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # http.disconnect: nobody is waiting for an answer
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, max_bytes: int, *, allow_empty: bool = False) -> Any:
    body = await read_body(request, max_bytes)
    if not body.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected JSON", pointer="")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", pointer="") from exc


def as_object(value: Any, pointer: str) -> JSONObject:
    if not isinstance(value, dict):
        raise BadRequest(f"must be a JSON object, not {_json_type(value)}", pointer=pointer)
    return value


def optional(obj: JSONObject, key: str, types: type | tuple[type, ...], pointer: str, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        names = " or ".join(_json_name(t) for t in _tuple(types))
        raise BadRequest(f"'{key}' must be {names}, not {_json_type(value)}", pointer=f"{pointer}/{key}")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _json_name(t: type) -> str:
    for typ, name in (
        (dict, "an object"),
        (list, "an array"),
        (str, "a string"),
        (bool, "a boolean"),
        (int, "an integer"),
    ):
        if t is typ:
            return name
    return "a number"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict | list | str):
        return _json_name(type(value))
    return type(value).__name__
