"""A DMN file from a mainstream modeller round-trips over HTTP: upload → test → publish → decide."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.conftest import ADMIN, PUBLIC, ROOT

CAMUNDA = (ROOT / "tests" / "cases" / "dmn" / "camunda-discount.dmn").read_bytes()


def test_camunda_dmn_round_trip(client: TestClient) -> None:
    r = client.put("/v1/models/discount", content=CAMUNDA, headers={**ADMIN, "Content-Type": "application/xml"})
    assert r.status_code == 201, r.text
    stored = client.get("/v1/models/discount/versions/1", headers=ADMIN).json()
    assert stored["source"] == "dmn" and stored["definition"]["nodes"][0]["id"] == "Discount"

    r = client.post(
        "/v1/models/discount/test", json={"context": {"customerTier": "gold", "orderTotal": 250}}, headers=ADMIN
    )
    assert r.json()["outputs"] == {"Discount": {"discount": 20, "reason": "gold, big basket"}}
    assert r.json()["trace"][0]["matched"] == ["DecisionRule_gold_big"]

    assert client.post("/v1/models/discount/versions/1/publish", headers=ADMIN).status_code == 200
    r = client.post(
        "/v1/decide/discount",
        json={"guest": {"browser_id": "b1"}, "context": {"customerTier": "silver", "orderTotal": 10}},
        headers=PUBLIC,
    )
    assert r.status_code == 200
    assert r.json()["model"] == {"key": "discount", "version": 1}
    assert r.json()["outputs"]["Discount"]["discount"] is not None


def test_invalid_dmn_is_a_422_naming_the_decision(client: TestClient) -> None:
    broken = CAMUNDA.replace(b'<text>"gold"</text>', b"<text>&gt;&gt; oops</text>", 1)
    r = client.put("/v1/models/discount", content=broken, headers={**ADMIN, "Content-Type": "application/xml"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "Discount" in r.json()["errors"][0]["pointer"]


def test_malformed_xml_is_a_clear_error(client: TestClient) -> None:
    r = client.put("/v1/models/x", content=b"<definitions><decision", headers={**ADMIN, "Content-Type": "text/xml"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "malformed XML" in r.json()["detail"] and "line 1" in r.json()["detail"]
