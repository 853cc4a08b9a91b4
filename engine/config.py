"""Settings: one frozen dataclass, read from the environment and overridden by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEMO_ADMIN_KEY = "demo-admin"
DEMO_PUBLIC_KEY = "demo-public"
DEFAULT_POS = "default"


def _parse_public_keys(raw: str) -> dict[str, str]:
    """``key`` or ``pos1=key1,pos2=key2`` → {key: point_of_sale}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        pos, sep, key = part.partition("=")
        out[key if sep else pos] = pos if sep else DEFAULT_POS
    return out


def _parse_pairs(raw: str) -> dict[str, str]:
    """``ctx1=pos1,ctx2=pos2`` → {ctx1: pos1, …}; a bare ``ctx`` speaks for the default point of sale."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if part:
            key, sep, value = part.partition("=")
            out[key.strip()] = value.strip() if sep else DEFAULT_POS
    return out


_INT_FIELDS = (
    "port", "deadline_ms", "max_body_bytes", "redis_timeout_ms", "workers", "session_timeout_ms", "max_sessions",
    "max_events_per_session", "max_closed_session_events", "max_orders", "event_log_shards", "max_batch_events",
    "max_import_bytes", "decision_log_maxlen",
)  # fmt: skip
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ARBITER_HOST": ("host", str),
    "ARBITER_REDIS_URL": ("redis_url", str),
    "ARBITER_ADMIN_KEY": ("admin_key", str),
    "ARBITER_PUBLIC_KEY": ("public_keys", lambda v: _parse_public_keys(v)),
    "ARBITER_MODELS_DIR": ("models_dir", Path),
    "ARBITER_CONTEXT_IDS": ("context_ids", lambda v: _parse_pairs(v)),
    "ARBITER_BATCH_DECISIONS": ("batch_decisions", lambda v: v.strip().lower() not in ("0", "false", "no", "off")),
    **{f"ARBITER_{name.upper()}": (name, int) for name in _INT_FIELDS},
}
"""Environment variable → (settings field, parser)."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = None
    """None → the embedded in-process store."""
    admin_key: str = DEMO_ADMIN_KEY
    public_keys: dict[str, str] = field(default_factory=lambda: {DEMO_PUBLIC_KEY: DEFAULT_POS})
    """public key → point of sale it speaks for."""
    models_dir: Path | None = None
    """Every model file here is uploaded and published at start-up (demo / GitOps style)."""
    deadline_ms: int = 50
    max_body_bytes: int = 1_048_576
    max_result_bytes: int = 65_536
    model_cache_ttl_s: float = 1.0
    """How stale another process's view of 'which version is in production' may be."""
    decision_log_maxlen: int = 100_000
    redis_timeout_ms: int = 250
    workers: int = 1
    context_ids: dict[str, str] = field(default_factory=dict)
    """Sitecore Cloud SDK ``sitecoreContextId`` → point of sale (the SDK's only credential)."""
    session_timeout_ms: int = 20 * 60 * 1000
    max_sessions: int = 40
    max_events_per_session: int = 100
    max_closed_session_events: int = 100
    max_orders: int = 20
    event_log_shards: int = 4
    max_batch_events: int = 500
    max_import_bytes: int = 1 << 30
    batch_decisions: bool = True
    """Evaluate the decisions that are ready together node by node (engine/batching.py): more throughput when
    decisions overlap; a decision that has company waits one event-loop turn for it."""

    @property
    def uses_demo_keys(self) -> bool:
        return self.admin_key == DEMO_ADMIN_KEY or DEMO_PUBLIC_KEY in self.public_keys

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        found = {field: parse(env[name]) for name, (field, parse) in _ENV.items() if env.get(name)}
        s = replace(cls(), **found)
        return replace(s, **{k: v for k, v in overrides.items() if v is not None})

    def check_bind(self) -> None:
        """Demo keys are published in the README: never accept them off loopback."""
        if self.uses_demo_keys and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(
                f"refusing to bind {self.host} with the demo keys; set ARBITER_ADMIN_KEY and ARBITER_PUBLIC_KEY"
            )
