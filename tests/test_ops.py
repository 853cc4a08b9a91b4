"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from starlette.testclient import TestClient

from engine.app import create_app
from engine.config import Settings
from engine.store.memory import MemoryStore
from tests.conftest import ADMIN, PUBLIC, ROOT


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["store_ok"] is True


def test_ready_needs_models_when_a_models_dir_is_configured(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = Settings(admin_key=settings.admin_key, public_keys=settings.public_keys, models_dir=tmp_path)
    with TestClient(create_app(empty, store=MemoryStore())) as c:
        assert c.get("/ready").status_code == 503


def test_models_dir_is_loaded_once(settings: Settings) -> None:
    s = Settings(admin_key=settings.admin_key, public_keys=settings.public_keys, models_dir=ROOT / "models")
    store = MemoryStore()
    with TestClient(create_app(s, store=store)) as c:
        models = {m["key"]: m for m in c.get("/v1/models", headers=ADMIN).json()["models"]}
        assert models["next-best-offer"]["production"] == 1
    # A restart on the same store does not pile up identical versions.
    with TestClient(create_app(s, store=store)) as c:
        assert c.get("/v1/models/next-best-offer", headers=ADMIN).json()["latest"] == 1


def test_metrics_count_requests_and_time_nodes(client: TestClient) -> None:
    model = {"nodes": [{"id": "answer", "kind": "output", "value": {"a": "1"}}]}
    client.put("/v1/models/m?publish=1", json=model, headers=ADMIN)
    for _ in range(3):
        assert client.post("/v1/decide/m", json={"guest": {"browser_id": "b"}}, headers=PUBLIC).status_code == 200
    text = client.get("/metrics").text
    assert 'arbiter_http_requests_total{method="POST",route="decide",status="200"} 3.0' in text
    assert 'arbiter_decision_seconds_count{model="m"} 3.0' in text
    assert 'arbiter_node_seconds_count{kind="output",model="m",node="answer"} 3.0' in text


def test_models_dir_never_overrides_a_production_choice(settings: Settings) -> None:
    s = Settings(admin_key=settings.admin_key, public_keys=settings.public_keys, models_dir=ROOT / "models")
    store = MemoryStore()
    other = {"nodes": [{"id": "answer", "kind": "output", "value": {"v": '"chosen by a marketer"'}}]}
    with TestClient(create_app(s, store=store)) as c:
        assert c.put("/v1/models/next-best-offer?publish=1", json=other, headers=ADMIN).json()["version"] == 2
    with TestClient(create_app(s, store=store)) as c:
        assert c.get("/v1/models/next-best-offer", headers=ADMIN).json()["production"] == 2
