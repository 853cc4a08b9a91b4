"""The decide API: answers, guests, auth and every kind of bad input — against both stores."""

from __future__ import annotations

import orjson
import pytest
from starlette.testclient import TestClient

from engine.ids import time_of
from engine.store import Store, empty_guest
from tests.conftest import ADMIN, PUBLIC

MODEL = {
    "nodes": [
        {"id": "big_spender", "kind": "rule", "expr": "guest.facts.lifetime_value >= 500"},
        {
            "id": "answer",
            "kind": "output",
            "value": {"variant": 'if big_spender then "premium" else "standard"', "page": "context.page"},
        },
    ]
}


@pytest.fixture
def published(client: TestClient) -> TestClient:
    r = client.put("/v1/models/hero?publish=true", json=MODEL, headers=ADMIN)
    assert r.status_code == 201 and r.json()["state"] == "production"
    return client


def decide(client: TestClient, body: object, headers: dict[str, str] = PUBLIC) -> dict:
    r = client.post("/v1/decide/hero", content=orjson.dumps(body), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_unknown_guest_is_a_new_anonymous_guest(published: TestClient) -> None:
    out = decide(published, {"guest": {"browser_id": "never-seen"}, "context": {"page": "/home"}})
    assert out["outputs"] == {"variant": "standard", "page": "/home"}
    assert out["model"] == {"key": "hero", "version": 1}
    assert len(out["decision_id"]) == 32 and "trace" not in out


async def _save(store: Store, ref: str, ltv: int) -> None:
    guest = empty_guest(ref)
    guest["facts"] = {"lifetime_value": ltv}
    guest["identifiers"] = [{"provider": "email", "id": f"{ref}@example.com"}]
    await store.guest_save(ref, guest)


@pytest.mark.parametrize("how", ["browser_id", "guest_ref", "identifiers"])
def test_known_guest_by_each_lookup(published: TestClient, store: Store, how: str) -> None:
    published.portal.call(_save, store, "g42", 900)  # type: ignore[union-attr]
    guest = {"identifiers": {"provider": "email", "id": "g42@example.com"}} if how == "identifiers" else {how: "g42"}
    assert decide(published, {"guest": guest})["outputs"]["variant"] == "premium"


def test_explain_returns_the_trace(published: TestClient) -> None:
    out = decide(published, {"guest": {"browser_id": "b"}, "explain": True})
    assert [(t["id"], t["kind"], t["output"]) for t in out["trace"]] == [
        ("big_spender", "rule", False),
        ("answer", "output", {"variant": "standard", "page": None}),
    ]
    assert all(isinstance(t["time_us"], int) for t in out["trace"])


def test_decisions_are_recorded(published: TestClient) -> None:
    out = decide(published, {"guest": {"browser_id": "b9"}, "context": {"page": "/p"}})
    log = published.get("/v1/decisions", headers=ADMIN).json()["decisions"]
    assert log[0]["decision_id"] == out["decision_id"] and log[0]["guest_ref"] == "b9"
    # The outputs are serialised once and shared by the response and the log: both carry the same JSON.
    assert log[0]["outputs"] == out["outputs"] == {"variant": "standard", "page": "/p"}
    # One clock: the record's time is the one in its id (the exposure writer files units by the id's minute).
    assert log[0]["at_ms"] == time_of(out["decision_id"])


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (b"{not json", ""),
        (b"[1, 2]", ""),
        (b"", ""),
        (orjson.dumps({"guest": "b1"}), "/guest"),
        (orjson.dumps({"guest": {"browser_id": 7}}), "/guest/browser_id"),
        (orjson.dumps({"guest": {"nickname": "x"}}), "/guest"),
        (orjson.dumps({"guest": {"identifiers": {"provider": "email"}}}), "/guest/identifiers"),
        (orjson.dumps({"guest": {"browser_id": "b"}, "context": [1]}), "/context"),
        (orjson.dumps({"guest": {"browser_id": "b"}, "explain": "yes"}), "/explain"),
    ],
)
def test_bad_input_is_a_400_with_a_pointer(published: TestClient, body: bytes, pointer: str) -> None:
    r = published.post("/v1/decide/hero", content=body, headers=PUBLIC)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 400 and problem["pointer"] == pointer and problem["detail"]


def test_oversized_body_is_refused(published: TestClient) -> None:
    big = orjson.dumps({"guest": {"browser_id": "b"}, "context": {"pad": "x" * 2_000_000}})
    r = published.post("/v1/decide/hero", content=big, headers=PUBLIC)
    assert r.status_code == 413 and r.json()["status"] == 413


def test_unknown_model_is_404_problem(published: TestClient) -> None:
    r = published.post("/v1/decide/nope", json={"guest": {"browser_id": "b"}}, headers=PUBLIC)
    assert r.status_code == 404 and r.json()["pointer"] == "/model"


def test_auth(published: TestClient) -> None:
    body = {"guest": {"browser_id": "b"}}
    assert published.post("/v1/decide/hero", json=body).status_code == 401
    assert published.post("/v1/decide/hero", json=body, headers={"X-API-Key": "nope"}).status_code == 401
    assert (
        published.post("/v1/decide/hero", json=body, headers={"Authorization": "Bearer test-public"}).status_code == 200
    )
    assert published.post("/v1/decide/hero", json=body, headers={"X-API-Key": "eu-key"}).status_code == 200


def test_point_of_sale_from_the_key_reaches_the_context(published: TestClient) -> None:
    model = {"nodes": [{"id": "answer", "kind": "output", "value": {"pos": "context.pos"}}]}
    published.put("/v1/models/pos?publish=1", json=model, headers=ADMIN)
    r = published.post("/v1/decide/pos", json={"guest": {"browser_id": "b"}}, headers={"X-API-Key": "eu-key"})
    assert r.json()["outputs"] == {"pos": "eu"}


def test_result_size_cap(published: TestClient) -> None:
    model = {"nodes": [{"id": "answer", "kind": "output", "value": {"echo": "context.blob"}}]}
    published.put("/v1/models/echo?publish=1", json=model, headers=ADMIN)
    r = published.post(
        "/v1/decide/echo", json={"guest": {"browser_id": "b"}, "context": {"blob": "y" * 70_000}}, headers=PUBLIC
    )
    assert r.status_code == 422 and r.json()["pointer"] == "/outputs"


def test_unknown_route_and_method_are_problems(published: TestClient) -> None:
    r = published.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert published.get("/v1/decide/hero", headers=PUBLIC).status_code == 405


def test_each_path_reaches_its_own_model_however_many_paths_were_seen(published: TestClient) -> None:
    """The per-page routes remember what a path matched (engine.app.Arbiter): two models alternating get their own
    answers, paths of no model answer 404 each time, and past the memo's bound everything still routes right."""
    from engine.app import MATCHED_PATHS

    other = {"nodes": [{"id": "answer", "kind": "output", "value": {"which": '"other"'}}]}
    assert published.put("/v1/models/other?publish=true", json=other, headers=ADMIN).status_code == 201
    body = {"guest": {"browser_id": "b"}, "context": {"page": "/p"}}
    for _ in range(2):
        assert published.post("/v1/decide/hero", json=body, headers=PUBLIC).json()["outputs"]["variant"] == "standard"
        assert published.post("/v1/decide/other", json=body, headers=PUBLIC).json()["outputs"] == {"which": "other"}
    for i in range(MATCHED_PATHS + 10):
        r = published.post(f"/v1/decide/none-{i}", json=body, headers=PUBLIC)
        assert r.status_code == 404 and f"none-{i}" in r.json()["detail"]
    assert published.post("/v1/decide/other", json=body, headers=PUBLIC).json()["outputs"] == {"which": "other"}
    assert published.post("/v1/decide/hero/extra", json=body, headers=PUBLIC).status_code == 404
