"""Connections: declared external data systems that ``external`` nodes call.

A connection is an admin-managed resource (``/v1/connections/{key}``)::

    {"base_url": "https://commerce.example.com/api", "allowed_hosts": ["commerce.example.com"],
     "auth": {"header": "Authorization", "scheme": "Bearer", "secret_env": "COMMERCE_TOKEN"},
     "headers": {"Accept-Language": "en"}, "timeout_ms": 200, "allow_private": false,
     "circuit": {"failures": 5, "cooldown_ms": 10000}}

The auth secret comes from an environment variable (``secret_env``) or is stored (``secret``); it is
never echoed by the API (:func:`redact`) nor written to logs. Nodes look connections up at request time
through :class:`Directory`, a short TTL cache over the store that every worker drops an entry from when any
process changes it (a change notice; the TTL is the backstop), so a rotated secret or a moved base URL reaches
every worker at once without republishing models.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache

from engine import notices
from engine.errors import ExternalCallFailed, Problem, ValidationError
from engine.store import Store
from engine.types import JSONObject

KIND = "connection"
SERVICE = "connections"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
HEADER_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,64}$")
FIELDS = frozenset({"key", "base_url", "allowed_hosts", "auth", "headers", "timeout_ms", "allow_private", "circuit"})
AUTH_FIELDS = frozenset({"header", "scheme", "secret_env", "secret"})
REDACTED = "********"


@dataclass(frozen=True, slots=True)
class Connection:
    key: str
    base_url: str
    host: str
    port: int
    allowed_hosts: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    auth_header: str | None
    auth_scheme: str | None
    secret_env: str | None
    secret: str | None
    timeout_ms: int
    allow_private: bool
    circuit_failures: int
    circuit_cooldown_ms: int

    def host_allowed(self, host: str) -> bool:
        return host_matches(host, self.allowed_hosts)

    def auth(self) -> tuple[str, str] | None:
        """The auth header to send, read now so a rotated environment secret is picked up."""
        if self.auth_header is None:
            return None
        value = os.environ.get(self.secret_env) if self.secret_env else self.secret
        if not value:
            # Name the variable, never a value.
            raise ExternalCallFailed(f"connection '{self.key}': secret env var {self.secret_env} is not set")
        return self.auth_header, f"{self.auth_scheme} {value}" if self.auth_scheme else value


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Exact host names, or ``*.example.com`` for any subdomain (not the apex)."""
    host = host.lower().rstrip(".")
    for p in patterns:
        if p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1:
            return True
        if host == p:
            return True
    return False


def _int(doc: JSONObject, key: str, lo: int, hi: int, default: int, pointer: str, problems: list[Problem]) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        problems.append(Problem(f"{pointer}/{key}", f"must be an integer from {lo} to {hi}"))
        return default
    return value


def parse(key: str, doc: Any) -> Connection:
    """Validate a connection document; raise :class:`ValidationError` listing every located problem."""
    problems: list[Problem] = []
    if not KEY_PATTERN.match(key):
        problems.append(Problem("/key", "letters, digits, '-', '_', '.', at most 128"))
    if not isinstance(doc, dict):
        raise ValidationError([*problems, Problem("", "a connection is a JSON object")])
    problems += [Problem(f"/{k}", f"unknown field '{k}'") for k in doc if k not in FIELDS]
    base_url = doc.get("base_url")
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    host = (parts.hostname or "") if parts else ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        problems.append(Problem("/base_url", "must be an absolute http(s) URL"))
    elif parts.username or parts.password or parts.query or parts.fragment:
        problems.append(Problem("/base_url", "no credentials, query or fragment in the base URL"))
    allowed = doc.get("allowed_hosts", [host] if host else [])
    if not isinstance(allowed, list) or not all(isinstance(h, str) and h for h in allowed):
        problems.append(Problem("/allowed_hosts", "must be a list of host names ('*.example.com' for subdomains)"))
        allowed = []
    allowed = [h.lower().rstrip(".") for h in allowed]
    if host and allowed and not host_matches(host, tuple(allowed)):
        problems.append(Problem("/base_url", f"host '{host}' is not in allowed_hosts"))
    headers = doc.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) and HEADER_PATTERN.match(k) for k, v in headers.items()
    ):
        problems.append(Problem("/headers", "must map header names to string values"))
        headers = {}
    auth = _auth(doc.get("auth"), problems)
    allow_private = doc.get("allow_private", False)
    if not isinstance(allow_private, bool):
        problems.append(Problem("/allow_private", "must be true or false"))
    circuit = doc.get("circuit", {})
    if not isinstance(circuit, dict):
        problems.append(Problem("/circuit", "must be {failures, cooldown_ms}"))
        circuit = {}
    timeout_ms = _int(doc, "timeout_ms", 1, 60_000, 1_000, "", problems)
    failures = _int(circuit, "failures", 1, 1_000, 5, "/circuit", problems)
    cooldown_ms = _int(circuit, "cooldown_ms", 1, 3_600_000, 10_000, "/circuit", problems)
    if problems:
        raise ValidationError(problems)
    assert parts is not None
    return Connection(
        key, str(base_url).rstrip("/"), host, parts.port or (443 if parts.scheme == "https" else 80),
        tuple(allowed), tuple(headers.items()), auth.get("header"), auth.get("scheme"), auth.get("secret_env"),
        auth.get("secret"), timeout_ms, allow_private is True, failures, cooldown_ms,
    )  # fmt: skip


def _auth(raw: Any, problems: list[Problem]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        problems.append(Problem("/auth", "must be {header, scheme?, secret_env | secret} strings"))
        return {}
    problems += [Problem(f"/auth/{k}", f"unknown field '{k}'") for k in raw if k not in AUTH_FIELDS]
    if not HEADER_PATTERN.match(raw.get("header", "")):
        problems.append(Problem("/auth/header", "the header to send the secret in, e.g. 'Authorization'"))
    if ("secret_env" in raw) == ("secret" in raw):
        problems.append(Problem("/auth", "give exactly one of 'secret_env' (an env var name) or 'secret'"))
    return dict(raw)


def redact(doc: JSONObject) -> JSONObject:
    """The document as the API shows it: a stored secret is replaced, an env var name is kept."""
    out = dict(doc)
    if isinstance(out.get("auth"), dict) and "secret" in out["auth"]:
        out["auth"] = {**out["auth"], "secret": REDACTED}
    return out


def carry_secret(new: JSONObject, old: JSONObject | None) -> JSONObject:
    """An update that resends the redacted placeholder (or no secret at all) keeps the stored secret."""
    auth = new.get("auth")
    old_auth = (old or {}).get("auth") or {}
    if isinstance(auth, dict) and "secret_env" not in auth and auth.get("secret", REDACTED) == REDACTED:
        if "secret" in old_auth:
            return {**new, "auth": {**auth, "secret": old_auth["secret"]}}
    return new


class Directory:
    """Request-time lookup of connections: a per-worker TTL cache over the store."""

    def __init__(self, store: Store, *, ttl_s: float = 5.0) -> None:
        self.store = store
        self._cache: TTLCache[str, Connection | None] = TTLCache(maxsize=1024, ttl=ttl_s)

    async def get(self, key: str) -> Connection:
        try:
            conn = self._cache[key]
        except KeyError:
            doc = await self.store.resource_get(KIND, key)
            conn = parse(key, {k: v for k, v in doc.items() if k != "key"}) if doc is not None else None
            self._cache[key] = conn
        if conn is None:
            raise ExternalCallFailed(f"no connection '{key}'")
        return conn

    def forget(self, key: str) -> None:
        self._cache.pop(key, None)

    async def follow_changes(self) -> None:
        """Drop a connection from the cache as soon as any process writes or deletes it (until cancelled); the
        TTL stays as the backstop for a missed notice."""

        async def changed(key: str) -> None:
            self.forget(key)

        await notices.follow(lambda: self.store.resource_changes(KIND), changed, "connection")


def directory_for(services: Any) -> Directory | None:
    if isinstance(services, dict):
        directory = services.get(SERVICE)
        return directory if isinstance(directory, Directory) else None
    return None
