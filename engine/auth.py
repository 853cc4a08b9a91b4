"""API keys: one admin key, and public keys that each speak for a point of sale."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from engine.config import DEFAULT_POS, Settings
from engine.errors import Forbidden, Unauthorized


def presented_key(request: Request) -> str | None:
    # One pass over the raw headers (ASGI names them in lower case) rather than Starlette's ``Headers.get``
    # per name, which scans them again and raises and catches a KeyError for a missing one: the storefront's
    # X-API-Key meant a miss on ``authorization`` first, on every decision and event.
    api_key: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            auth: str = value.decode("latin-1")
            if auth[:7].lower() == "bearer ":
                return auth[7:].strip()
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    return api_key.decode("latin-1") if api_key is not None else None


def require_admin(request: Request, settings: Settings) -> None:
    key = presented_key(request)
    if key is None:
        raise Unauthorized("send the admin key as 'Authorization: Bearer …' or 'X-API-Key'")
    if not hmac.compare_digest(key.encode(), settings.admin_key.encode()):
        if key in settings.public_keys:
            raise Forbidden("a public key cannot call admin endpoints")
        raise Unauthorized("unknown API key")


def require_public(request: Request, settings: Settings) -> str:
    """Authenticate a storefront call; returns the point of sale the key speaks for."""
    key = presented_key(request)
    if key is None:
        raise Unauthorized("send a public key as 'Authorization: Bearer …' or 'X-API-Key'")
    pos = settings.public_keys.get(key)
    if pos is not None:
        return pos
    if hmac.compare_digest(key.encode(), settings.admin_key.encode()):
        return DEFAULT_POS
    raise Unauthorized("unknown API key")
