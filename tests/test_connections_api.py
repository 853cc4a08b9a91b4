"""Connections over HTTP, against both stores: CRUD, redacted secrets, validation, publish-time SSRF
refusal, and an external node served end to end through the app against the commerce stub."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from engine.store import Store
from tests.commerce_stub import StubServer
from tests.commerce_stub import commerce as commerce  # noqa: F401 — fixtures
from tests.commerce_stub import commerce_server as commerce_server  # noqa: F401
from tests.conftest import ADMIN, PUBLIC

SECRET = "tok-51c2e7"


def put(client: TestClient, key: str, doc: Any, headers: dict[str, str] = ADMIN) -> Any:
    return client.put(f"/v1/connections/{key}", content=orjson.dumps(doc), headers=headers)


def test_create_read_list_delete(client: TestClient) -> None:
    doc = {"base_url": "https://api.example.com/v2", "auth": {"header": "X-Api-Key", "secret": SECRET}}
    r = put(client, "shop", doc)
    assert r.status_code == 201 and r.headers["location"] == "/v1/connections/shop"
    assert r.json()["auth"] == {"header": "X-Api-Key", "secret": "********"}
    got = client.get("/v1/connections/shop", headers=ADMIN)
    assert got.status_code == 200 and SECRET not in got.text
    listed = client.get("/v1/connections", headers=ADMIN)
    assert [c["key"] for c in listed.json()["connections"]] == ["shop"] and SECRET not in listed.text
    assert put(client, "shop", {**doc, "timeout_ms": 300}).status_code == 200
    assert client.delete("/v1/connections/shop", headers=ADMIN).status_code == 204
    assert client.get("/v1/connections/shop", headers=ADMIN).status_code == 404
    assert client.delete("/v1/connections/shop", headers=ADMIN).status_code == 404


def test_update_that_resends_the_placeholder_keeps_the_secret(client: TestClient, store: Store) -> None:
    doc = {"base_url": "https://api.example.com", "auth": {"header": "X-Api-Key", "secret": SECRET}}
    put(client, "shop", doc)
    shown = client.get("/v1/connections/shop", headers=ADMIN).json()
    assert put(client, "shop", {**shown, "timeout_ms": 250}).status_code == 200
    assert client.portal is not None
    stored = client.portal.call(store.resource_get, "connection", "shop")
    assert stored is not None and stored["auth"]["secret"] == SECRET and stored["timeout_ms"] == 250


@pytest.mark.parametrize(
    ("doc", "pointer"),
    [
        ({"base_url": "ftp://api.example.com"}, "/base_url"),
        ({"base_url": "https://user:pw@api.example.com"}, "/base_url"),
        ({"base_url": "https://api.example.com", "allowed_hosts": ["other.example.com"]}, "/base_url"),
        ({"base_url": "https://api.example.com", "timeout_ms": 0}, "/timeout_ms"),
        ({"base_url": "https://api.example.com", "auth": {"header": "X-Key"}}, "/auth"),
        ({"base_url": "https://api.example.com", "auth": {"header": "X", "secret": "a", "secret_env": "B"}}, "/auth"),
        ({"base_url": "https://api.example.com", "circuit": {"failures": 0}}, "/circuit/failures"),
        ({"base_url": "https://api.example.com", "bogus": 1}, "/bogus"),
        ([], ""),
    ],
)
def test_invalid_connections_are_422_with_a_pointer(client: TestClient, doc: Any, pointer: str) -> None:
    r = put(client, "shop", doc)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert pointer in [e["pointer"] for e in r.json()["errors"]]


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8080", "http://localhost", "http://169.254.169.254/latest", "http://10.0.0.5"]
)
def test_private_and_metadata_hosts_are_refused_at_publish(client: TestClient, base_url: str) -> None:
    r = put(client, "internal", {"base_url": base_url})
    assert r.status_code == 422 and r.json()["pointer"] == "/base_url"
    assert "non-public address" in r.json()["detail"]
    assert put(client, "internal", {"base_url": base_url, "allow_private": True}).status_code == 201


def test_wildcard_allowed_hosts(client: TestClient) -> None:
    doc = {"base_url": "https://eu.api.example.com", "allowed_hosts": ["*.api.example.com"]}
    assert put(client, "shop", doc).status_code == 201
    apex = {"base_url": "https://api.example.com", "allowed_hosts": ["*.api.example.com"]}
    assert put(client, "apex", apex).status_code == 422


def test_admin_only(client: TestClient) -> None:
    assert put(client, "shop", {"base_url": "https://api.example.com"}, headers=PUBLIC).status_code == 403
    assert client.get("/v1/connections", headers={}).status_code == 401


MODEL = {
    "deadline_ms": 2000,  # the in-process test client and the stub share one GIL: be generous
    "nodes": [
        {
            "id": "products", "kind": "external", "connection": "commerce", "path": "/products",
            "query": {"categoryID": "context.category", "tier": "guest.attributes.tier"},
            "output": "response.products.id", "timeout_ms": 500, "cache_ttl_s": 60, "fallback": [],
        }
    ]
}  # fmt: skip


def test_external_node_end_to_end(
    client: TestClient, commerce: StubServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("COMMERCE_TOKEN", SECRET)
    auth = {"header": "Authorization", "scheme": "Bearer", "secret_env": "COMMERCE_TOKEN"}
    assert put(client, "commerce", {"base_url": commerce.url, "allow_private": True, "auth": auth}).status_code == 201
    r = client.put("/v1/models/recs?publish=1", content=orjson.dumps(MODEL), headers=ADMIN)
    assert r.status_code == 201, r.text
    body = {"guest": {"browser_id": "b1"}, "context": {"category": "shoes"}, "explain": True}
    first = client.post("/v1/decide/recs", json=body, headers=PUBLIC).json()
    second = client.post("/v1/decide/recs", json=body, headers=PUBLIC).json()
    # An unknown guest has no tier: a null query value is left out, so every shoe comes back.
    assert first["outputs"] == second["outputs"] == {"products": ["p1", "p2", "p3"]}
    assert [d["trace"][0]["cache"] for d in (first, second)] == ["miss", "hit"]
    assert commerce.knobs.calls["/products"] == 1 and commerce.knobs.auth == f"Bearer {SECRET}"

    # Pointing the connection elsewhere reaches the node without republishing the model.
    put(client, "commerce", {"base_url": "http://127.0.0.1:9", "allow_private": True})
    moved = client.post("/v1/decide/recs", json={**body, "context": {"category": "x"}}, headers=PUBLIC)
    assert moved.json()["outputs"] == {"products": []} and moved.json()["trace"][0]["fallback"] == "error"
    assert SECRET not in caplog.text
