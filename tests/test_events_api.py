"""``POST /v1/events`` and the Sitecore-compatible endpoints over real HTTP (in-process ASGI), both stores."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from engine.store import Store, empty_guest
from tests.conftest import ADMIN, PUBLIC

EVENT = {"type": "VIEW", "channel": "WEB", "browser_id": "b1", "language": "EN", "currency": "EUR", "page": "home"}
CTX = "sitecoreContextId=ctx-1&siteId=shop"


@pytest.fixture
def settings():  # type: ignore[no-untyped-def]
    from engine.config import Settings

    return Settings(admin_key="test-admin", public_keys={"test-public": "default"}, context_ids={"ctx-1": "eu"})


def test_one_event_is_acknowledged_with_its_guest(client: TestClient) -> None:
    r = client.post("/v1/events", json={**EVENT, "ref": "e-1"}, headers=PUBLIC)
    assert r.status_code == 201, r.text
    assert r.json() == {"ref": "e-1", "guest_ref": "b1", "status": "accepted"}
    again = client.post("/v1/events", json={**EVENT, "ref": "e-1"}, headers=PUBLIC)
    assert again.json()["status"] == "duplicate"
    guest = client.get("/v1/guests/b1", headers=ADMIN).json()
    assert guest["facts"]["event_count"] == 1 and guest["sessions"][0]["pos"] == "default"


def test_a_batch_keeps_each_browsers_order(client: TestClient) -> None:
    batch = [
        {**EVENT, "type": "ADD", "product": {"item_id": "a", "price": 3, "quantity": 1}},
        {**EVENT, "browser_id": "b2"},
        {**EVENT, "type": "ADD", "product": {"item_id": "a", "price": 3, "quantity": 4}},
    ]
    r = client.post("/v1/events", json={"events": batch}, headers=PUBLIC)
    assert r.status_code == 201 and [e["guest_ref"] for e in r.json()["events"]] == ["b1", "b2", "b1"]
    assert client.get("/v1/guests/b1", headers=ADMIN).json()["cart"]["value"] == 12


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({k: v for k, v in EVENT.items() if k != "type"}, "/type"),
        ({**EVENT, "type": "view"}, "/type"),
        ({**EVENT, "browser_id": ""}, "/browser_id"),
        ({**EVENT, "currency": 3}, "/currency"),
        ({**EVENT, "ext": {"nested": {"a": 1}}}, "/ext/nested"),
        ({**EVENT, "ext": {f"k{i}": i for i in range(51)}}, "/ext"),
        ({**EVENT, "type": "IDENTITY"}, "/identifiers"),
        ({**EVENT, "type": "IDENTITY", "identifiers": [{"provider": "email"}]}, "/identifiers/0/id"),
        ({**EVENT, "type": "ADD"}, "/product"),
        ({**EVENT, "requested_at": "yesterday"}, "/requested_at"),
        ({"events": [EVENT, {**EVENT, "page": None}]}, "/events/1/page"),
        ({"events": []}, "/events"),
        ([EVENT, 7], "/1"),
        ("hello", ""),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_bad_event_is_a_400_with_a_pointer(client: TestClient, body: object, pointer: str) -> None:
    r = client.post("/v1/events", json=body, headers=PUBLIC)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["pointer"] == pointer
    assert client.get("/v1/guests/b1", headers=ADMIN).status_code == 404  # nothing half-recorded


def test_bad_json_oversized_and_unauthenticated(client: TestClient) -> None:
    assert client.post("/v1/events", content=b"{nope", headers=PUBLIC).status_code == 400
    assert client.post("/v1/events", content=b"[" + b"1," * 600_000 + b"1]", headers=PUBLIC).status_code == 413
    assert client.post("/v1/events", json=EVENT).status_code == 401
    assert client.post("/v1/events", json=EVENT, headers={"X-API-Key": "nope"}).status_code == 401


def test_sdk_browser_bootstrap_event_and_show(client: TestClient) -> None:
    created = client.get(f"/v1/events/v1.2/browser/create.json?{CTX}&client_key=")
    assert created.status_code == 200
    browser = created.json()["ref"]
    assert created.json()["customer_ref"] == browser
    shown = client.get(f"/v1/events/v1.2/browser/{browser}/show.json?{CTX}&client_key=&api_token=")
    assert shown.json()["customer"]["ref"] == browser
    sdk_event = {**EVENT, "browser_id": browser, "pos": "", "client_key": "", "requested_at": "2026-01-01T10:00:00Z"}
    r = client.post(f"/v1/events/v1.2/events?{CTX}", json=sdk_event)
    assert r.status_code == 201 and r.headers["content-type"] == "application/json"
    assert r.json()["status"] == "OK" and r.json()["version"] == "1.2" and r.json()["customer_ref"] == browser
    assert client.get(f"/v1/guests/{browser}", headers=ADMIN).json()["sessions"][0]["pos"] == "eu"
    direct = client.post("/v1.2/events?sitecoreContextId=ctx-1", json=sdk_event)
    assert direct.status_code == 201


def test_sdk_errors_use_the_sdk_shapes(client: TestClient) -> None:
    r = client.get(f"/v1/events/v1.2/browser/nobody/show.json?{CTX}")
    assert r.status_code == 404 and set(r.json()) == {"error_msg", "moreInfo"}
    assert client.get("/v1.2/browser/create.json?sitecoreContextId=unknown").status_code == 401
    bad = client.post(f"/v1/events/v1.2/events?{CTX}", json={**EVENT, "type": "nope"})
    assert bad.status_code == 400 and "/type" in bad.json()["error_msg"]
    p = client.post(f"/v1/personalize?{CTX}", json={"channel": "WEB"})
    assert p.status_code == 400 and set(p.json()) == {"status", "code", "message", "developerMessage", "moreInfoUrl"}
    p = client.post(f"/v1/personalize?{CTX}", json={"friendlyId": "no-such-model", "browserId": "b1"})
    assert p.status_code == 404 and p.json()["status"] == 404


def test_sdk_cors_preflight(client: TestClient) -> None:
    r = client.options(
        "/v1/events/v1.2/events",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://shop.example")


def test_personalize_and_call_flows_decide_from_the_guests_events(client: TestClient) -> None:
    model = {"nodes": [
        {"id": "answer", "kind": "output",
         "value": {"variantId": 'if guest.cart.value > 50 then "rescue" else "default"', "pos": "context.pos"}},
    ]}  # fmt: skip
    assert client.put("/v1/models/cart-banner?publish=1", json=model, headers=ADMIN).status_code == 201
    add = {**EVENT, "type": "ADD", "product": {"item_id": "tv", "price": 80, "quantity": 1}}
    client.post("/v1/events", json=add, headers=PUBLIC)
    body = {"friendlyId": "cart-banner", "channel": "WEB", "currencyCode": "EUR", "language": "EN", "params": {}}
    r = client.post(f"/v1/personalize?{CTX}", json={**body, "guestRef": "b1"})
    assert r.status_code == 200 and r.json() == {"variantId": "rescue", "pos": "eu"}
    r = client.post("/v2/callFlows", json={**body, "clientKey": "test-public", "browserId": "b1"})
    assert r.json() == {"variantId": "rescue", "pos": "default"}
    r = client.post("/v2/callFlows", json={**body, "clientKey": "test-public", "browserId": "stranger"})
    assert r.json()["variantId"] == "default"


def test_guest_with_sessions_and_cart_of_an_older_shape_still_takes_events(client: TestClient, store: Store) -> None:
    """Regression: seeded/imported sessions without ``status``/``last_ms`` made every event a 500."""
    legacy = {**empty_guest("old-1"), "sessions": [{"channel": "WEB", "pages": 3}],
              "cart": {"items": [{"sku": "x", "price": 5}], "value": 5}}  # fmt: skip
    client.portal.call(store.guest_save, "old-1", legacy)  # type: ignore[union-attr]
    add = {**EVENT, "type": "ADD", "browser_id": "old-1", "product": {"item_id": "SKU-9", "price": 20, "quantity": 1}}
    r = client.post("/v1/events", json=add, headers=PUBLIC)
    assert r.status_code == 201, r.text
    guest = client.get("/v1/guests/old-1", headers=ADMIN).json()
    assert any(s.get("status") == "open" for s in guest["sessions"])
