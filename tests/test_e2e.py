"""End to end: a real ``arbiter serve`` process (uvicorn, uvloop, httptools) answering real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_arbiter, wait_until


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with running_arbiter(tmp_path, redis_url=redis_url, workers=2) as base:
        yield base


@pytest.mark.e2e
def test_readme_decide_call_returns_a_decision(server: str) -> None:
    r = httpx.post(
        f"{server}/v1/decide/next-best-offer",
        headers={"Authorization": "Bearer e2e-public"},
        json={"guest": {"browser_id": "3f1c9a"}, "context": {"channel": "WEB"}, "explain": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outputs"]["offer"] == "welcome-10" and body["outputs"]["tier"] == "new"
    assert [t["id"] for t in body["trace"]][-1] == "answer"


@pytest.mark.e2e
def test_publish_and_rollback_reach_every_worker(server: str) -> None:
    admin = {"Authorization": "Bearer e2e-admin"}
    model = {"nodes": [{"id": "answer", "kind": "output", "value": {"v": '"two"'}}]}
    assert httpx.put(f"{server}/v1/models/next-best-offer?publish=1", json=model, headers=admin).status_code == 201

    def served() -> object:
        r = httpx.post(
            f"{server}/v1/decide/next-best-offer",
            headers={"X-API-Key": "e2e-public"},
            json={"guest": {"browser_id": "x"}},
        )
        return r.json()["model"]["version"]

    # Each worker may hold the old pointer for up to model_cache_ttl_s; every answer must converge.
    wait_until(lambda: all(served() == 2 for _ in range(10)), timeout_s=3, what="publish to reach all workers")
    assert httpx.post(f"{server}/v1/models/next-best-offer/rollback", headers=admin).json()["production"] == 1
    wait_until(lambda: all(served() == 1 for _ in range(10)), timeout_s=5, what="rollback to reach all workers")


@pytest.mark.e2e
def test_bad_json_is_a_problem_not_a_traceback(server: str) -> None:
    r = httpx.post(f"{server}/v1/decide/next-best-offer", headers={"X-API-Key": "e2e-public"}, content=b"{oops")
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in r.text
