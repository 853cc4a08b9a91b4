"""The application's assembly: storefront routes are matched first, without changing what any path reaches."""

from __future__ import annotations

import gc

import orjson
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from engine.app import create_app, storefront_first
from engine.config import Settings
from engine.store import MemoryStore
from tests.conftest import ADMIN, PUBLIC


def test_storefront_routes_come_first_and_keep_their_order() -> None:
    app = create_app(Settings(admin_key="a", public_keys={"p": "default"}))
    paths = [str(getattr(r, "path", "")) for r in app.router.routes]
    assert paths[:2] == ["/v1/decide/{model_key}", "/v1/events"]
    first_admin = paths.index("/health")
    assert all(
        p.startswith(("/v1/decide/", "/v1/events", "/v1.2/", "/v1/personalize", "/v2/", "/ofrep/"))
        for p in paths[:first_admin]
    )
    assert "/v1/models" in paths[first_admin:] and "/v1/experiments/{key}" in paths[first_admin:]


def test_the_reordering_is_stable() -> None:
    def endpoint() -> None: ...

    routes = [Route(p, endpoint) for p in ("/a", "/v1/events/x", "/b", "/v1/events", "/ofrep/y")]
    assert [r.path for r in storefront_first(list(routes))] == ["/v1/events/x", "/v1/events", "/ofrep/y", "/a", "/b"]


MODEL = {"nodes": [{"id": "answer", "kind": "output", "value": {"page": "context.page", "n": "count(guest.orders)"}}]}
EVENT = {"type": "VIEW", "browser_id": "b-1", "channel": "WEB", "language": "EN", "currency": "EUR", "page": "/"}
REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", "/v1/decide/m", PUBLIC, orjson.dumps({"guest": {"browser_id": "b-1"}, "context": {"page": "/p"}})),
    ("POST", "/v1/decide/m", PUBLIC, b"{not json"),
    ("POST", "/v1/decide/m", PUBLIC, orjson.dumps({"guest": {"browser_id": 7}})),
    ("POST", "/v1/decide/m", {}, b"{}"),
    ("POST", "/v1/decide/m", {"X-API-Key": "wrong"}, b"{}"),
    ("POST", "/v1/decide/nope", PUBLIC, orjson.dumps({"guest": {"browser_id": "b-1"}})),
    ("POST", "/v1/decide/m", PUBLIC, b"x" * 1_100_000),
    ("GET", "/v1/decide/m", PUBLIC, b""),
    ("POST", "/v1/decide/m/extra", PUBLIC, b"{}"),
    ("POST", "/v1/events", PUBLIC, orjson.dumps({**EVENT, "ref": "e-1"})),
    ("POST", "/v1/events", PUBLIC, orjson.dumps({**EVENT, "ref": "e-1"})),
    ("POST", "/v1/events", PUBLIC, orjson.dumps({"events": [{**EVENT, "ref": "e-2"}, {**EVENT, "type": 3}]})),
    ("POST", "/v1/events", {}, b"{}"),
]


def _exchange(per_page: bool) -> list[tuple[int, str, object]]:
    app = create_app(Settings(admin_key="test-admin", public_keys={"test-public": "default"}), store=MemoryStore())
    if not per_page:
        app.per_page = []  # every request through Starlette's own stack
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.put("/v1/models/m?publish=true", json=MODEL, headers=ADMIN).status_code == 201
        out = []
        for method, path, headers, body in REQUESTS:
            r = client.request(method, path, content=body, headers=headers)
            data = r.json()
            if isinstance(data, dict):
                data.pop("decision_id", None)
            out.append((r.status_code, r.headers["content-type"], data, r.headers.get("www-authenticate")))
        metrics = client.get("/metrics", headers=ADMIN).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith(("arbiter_http_requests_total{", "arbiter_http_request_seconds_count{"))
    ]
    return [*out, sorted(counted)]  # type: ignore[list-item]


def test_per_page_routes_answer_exactly_as_starlette_would() -> None:
    # decide and events skip Starlette's layers; every answer, error and request metric must be the same.
    fast, reference = _exchange(per_page=True), _exchange(per_page=False)
    assert fast == reference
    statuses = [status for status, *_ in fast[:-1]]
    assert statuses == [200, 400, 400, 401, 401, 404, 413, 405, 404, 201, 201, 400, 401]
    assert 'arbiter_http_requests_total{method="POST",route="decide",status="200"} 1.0' in fast[-1]
    assert 'arbiter_http_requests_total{method="POST",route="post_events",status="201"} 2.0' in fast[-1]


def test_an_unexpected_error_on_a_per_page_route_is_a_logged_500_problem(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("engine.api.decide.make_decision", broken)
    app = create_app(Settings(admin_key="test-admin", public_keys={"test-public": "default"}), store=MemoryStore())
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/decide/m", json={"guest": {"browser_id": "b"}}, headers=PUBLIC)
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["instance"] == "/v1/decide/m" and "a bug" not in r.text
    assert any("unhandled error on POST /v1/decide/m" in rec.getMessage() for rec in caplog.records)


def test_what_exists_at_startup_is_kept_out_of_full_collections() -> None:
    gc.unfreeze()
    app = create_app(Settings(admin_key="a", public_keys={"p": "default"}), store=MemoryStore())
    with TestClient(app):
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # modules, functions and the started app: all of it, not a handful
    gc.unfreeze()


def test_outbound_clients_are_made_at_startup_not_at_the_first_external_call() -> None:
    # A session belongs to the event loop it is made on, and with httpx making a client cost ~18 ms (its TLS
    # context loaded the CA bundle), which at the first call stalled every request in flight on the worker.
    app = create_app(Settings(admin_key="a", public_keys={"p": "default"}), store=MemoryStore())
    with TestClient(app):
        outbound = app.state.rt.services["egress"]
        assert set(outbound._pools) == {False, True}
