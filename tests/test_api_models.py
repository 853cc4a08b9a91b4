"""Model lifecycle over HTTP, against both stores: upload → validate → publish → shadow → roll back → archive."""

from __future__ import annotations

import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import ADMIN, PUBLIC, wait_until


def model(discount: int) -> bytes:
    return orjson.dumps(
        {
            "nodes": [
                {"id": "vip", "kind": "rule", "expr": "guest.attributes.vip = true"},
                {"id": "answer", "kind": "output", "value": {"discount": f"if vip then {discount} else 0"}},
            ]
        }
    )


def upload(client: TestClient, key: str, body: bytes, ct: str = "application/json") -> dict:
    r = client.put(f"/v1/models/{key}", content=body, headers={**ADMIN, "Content-Type": ct})
    assert r.status_code == 201, r.text
    return r.json()


def decide_discount(client: TestClient, key: str) -> int:
    r = client.post(f"/v1/decide/{key}", json={"guest": {"browser_id": "b1"}}, headers=PUBLIC)
    assert r.status_code == 200, r.text
    return r.json()["model"]["version"]


def test_upload_creates_drafts_with_increasing_versions(client: TestClient) -> None:
    assert upload(client, "promo", model(10)) == {"key": "promo", "version": 1, "state": "draft", "created": True}
    assert upload(client, "promo", model(20))["version"] == 2
    r = client.get("/v1/models/promo", headers=ADMIN)
    assert [(v["version"], v["state"]) for v in r.json()["versions"]] == [(1, "draft"), (2, "draft")]
    assert r.json()["production"] is None


def test_identical_upload_returns_the_existing_version(client: TestClient) -> None:
    upload(client, "promo", model(10))
    client.post("/v1/models/promo/versions/1/publish", headers=ADMIN)
    # Same content, even re-serialised differently: no new version, 200 not 201, state as stored.
    same = orjson.dumps(orjson.loads(model(10)), option=orjson.OPT_INDENT_2)
    r = client.put("/v1/models/promo", content=same, headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.json() == {"key": "promo", "version": 1, "state": "production", "created": False}
    assert client.get("/v1/models/promo", headers=ADMIN).json()["latest"] == 1


def test_a_draft_is_not_served(client: TestClient) -> None:
    upload(client, "promo", model(10))
    r = client.post("/v1/decide/promo", json={"guest": {"browser_id": "b1"}}, headers=PUBLIC)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_publish_rollback_and_archive(client: TestClient) -> None:
    for d in (10, 20, 30):
        upload(client, "promo", model(d))
    assert client.post("/v1/models/promo/versions/1/publish", headers=ADMIN).json()["production"] == 1
    assert decide_discount(client, "promo") == 1
    client.post("/v1/models/promo/versions/3/publish", headers=ADMIN)
    assert decide_discount(client, "promo") == 3
    # Rollback without a version goes back to the previous production version, instantly.
    r = client.post("/v1/models/promo/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["production"] == 1
    assert decide_discount(client, "promo") == 1
    # ... or to any earlier version by number.
    assert client.post("/v1/models/promo/rollback", json={"version": 2}, headers=ADMIN).json()["production"] == 2
    states = {v["version"]: v["state"] for v in client.get("/v1/models/promo", headers=ADMIN).json()["versions"]}
    assert states == {1: "archived", 2: "production", 3: "archived"}
    # Production cannot be archived out from under the traffic.
    r = client.post("/v1/models/promo/versions/2/state", json={"state": "archived"}, headers=ADMIN)
    assert r.status_code == 409
    assert client.post("/v1/models/promo/versions/3/state", json={"state": "draft"}, headers=ADMIN).status_code == 200


def test_shadow_version_is_evaluated_and_recorded_but_not_served(client: TestClient) -> None:
    upload(client, "promo", model(10))
    upload(client, "promo", model(99))
    client.post("/v1/models/promo/versions/1/publish", headers=ADMIN)
    r = client.post("/v1/models/promo/versions/2/state", json={"state": "test"}, headers=ADMIN)
    assert r.json()["test"] == 2
    r = client.post("/v1/decide/promo", json={"guest": {"browser_id": "b1"}}, headers=PUBLIC)
    served = r.json()
    assert served["model"]["version"] == 1

    def mine() -> list[tuple[int, bool]]:
        log = client.get("/v1/decisions?limit=10", headers=ADMIN).json()["decisions"]
        return sorted((d["version"], d["shadow"]) for d in log if d["decision_id"] == served["decision_id"])

    # The shadow evaluation runs after the response is sent: poll for it rather than assume it is done.
    wait_until(lambda: len(mine()) == 2, timeout_s=5, what="the shadow decision to be recorded")
    assert mine() == [(1, False), (2, True)]


def test_invalid_model_is_rejected_with_pointers_and_not_stored(client: TestClient) -> None:
    bad = {"nodes": [{"id": "a", "kind": "rule", "expr": "1 +"}, {"id": "b", "kind": "nope"}]}
    r = client.put("/v1/models/broken", json=bad, headers=ADMIN)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert {"/nodes/0/expr", "/nodes/1/kind"} <= pointers
    assert client.get("/v1/models/broken", headers=ADMIN).status_code == 404


def test_validate_does_not_save(client: TestClient) -> None:
    r = client.post("/v1/models/promo/validate", content=model(5), headers=ADMIN)
    assert r.status_code == 200 and r.json()["valid"] is True
    assert client.get("/v1/models", headers=ADMIN).json() == {"models": []}


def test_yaml_upload(client: TestClient) -> None:
    body = b"nodes:\n  - {id: answer, kind: output, value: {x: '1 + 1'}}\n"
    created = upload(client, "yaml-model", body, "application/yaml")
    r = client.post("/v1/models/yaml-model/test", json={}, headers=ADMIN)
    assert created["version"] == 1 and r.json()["outputs"] == {"x": 2}


def test_test_endpoint_uses_supplied_guest_and_writes_nothing(client: TestClient) -> None:
    upload(client, "promo", model(15))
    r = client.post(
        "/v1/models/promo/test", json={"guest": {"attributes": {"vip": True}}, "context": {}}, headers=ADMIN
    )
    assert r.status_code == 200
    body = r.json()
    assert body["outputs"] == {"discount": 15}
    assert [t["id"] for t in body["trace"]] == ["vip", "answer"]
    assert client.get("/v1/decisions", headers=ADMIN).json()["decisions"] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("PUT", "/v1/models/x"), ("POST", "/v1/models/x/versions/1/publish")],
)
def test_admin_endpoints_need_the_admin_key(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 401
    assert client.request(method, path, headers=PUBLIC).status_code == 403
    assert client.request(method, path, headers={"X-API-Key": "wrong"}).status_code == 401


def test_bad_version_and_unknown_model(client: TestClient) -> None:
    assert client.post("/v1/models/none/versions/abc/publish", headers=ADMIN).status_code == 400
    assert client.post("/v1/models/none/versions/1/publish", headers=ADMIN).status_code == 404
    assert client.post("/v1/models/none/rollback", headers=ADMIN).status_code == 404
