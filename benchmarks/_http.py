"""Blocking loopback HTTP for the harness's set-up calls and probes (never on a measured path)."""

from __future__ import annotations

import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    key: str | None = None,
    content_type: str = "application/json",
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """(status, body) of one request to ``127.0.0.1:port``; HTTP errors are answers, not exceptions."""
    headers = {"Content-Type": content_type} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", data=body, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 — loopback only
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def get(port: int, path: str, timeout_s: float = 2.0) -> bytes:
    """The body of a GET that must answer 2xx (raises otherwise: used in readiness polls)."""
    status, body = call(port, "GET", path, timeout_s=timeout_s)
    if not 200 <= status < 300:
        raise ConnectionError(f"GET {path} answered {status}")
    return body
