"""Redis down: decisions keep answering from local caches and defaults, say so, and writes are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from starlette.testclient import TestClient

from engine.app import create_app
from engine.config import Settings
from engine.store.redis import RedisStore
from tests.conftest import ADMIN, PUBLIC, running_redis

MODEL = {
    "nodes": [
        {"id": "known", "kind": "rule", "expr": "guest.facts.order_count > 0"},
        {"id": "answer", "kind": "output", "value": {"banner": 'if known then "welcome-back" else "hello"'}},
    ]
}


def test_decide_answers_degraded_when_redis_dies(tmp_path: Path, settings: Settings) -> None:
    with running_redis(tmp_path) as (url, proc):
        store = RedisStore(url, timeout_ms=200)
        # No pointer TTL: every decide asks the store, so the stale-pointer fallback is what answers below.
        no_ttl = replace(settings, model_cache_ttl_s=0.0)
        with TestClient(create_app(no_ttl, store=store), raise_server_exceptions=False) as client:
            assert client.put("/v1/models/hero?publish=1", json=MODEL, headers=ADMIN).status_code == 201
            body = {"guest": {"browser_id": "b1"}}
            first = client.post("/v1/decide/hero", json=body, headers=PUBLIC).json()
            assert "degraded" not in first

            proc.kill()
            proc.wait(timeout=10)

            r = client.post("/v1/decide/hero", json=body, headers=PUBLIC)
            assert r.status_code == 200
            assert r.json()["degraded"] is True
            assert r.json()["outputs"] == {"banner": "hello"}
            # A write cannot be made durable: refused with 503, not silently dropped.
            r = client.put("/v1/models/hero", json=MODEL, headers=ADMIN)
            assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
            assert client.get("/ready").status_code == 503
