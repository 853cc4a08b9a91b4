"""End to end: a real ``arbiter serve`` process (uvicorn, uvloop, httptools) answering real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_until


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "ARBITER_ADMIN_KEY": "e2e-admin", "ARBITER_PUBLIC_KEY": "e2e-public"}
    args = [sys.executable, "-m", "engine", "serve", "--port", str(port), "--models", "models", "--quiet"]
    if request.param == "redis":
        args += ["--redis", request.getfixturevalue("redis_url"), "--workers", "2"]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(lambda: httpx.get(f"{base}/ready", timeout=1).status_code == 200, timeout_s=30, what="arbiter")
        except TimeoutError:
            pytest.fail(f"arbiter did not become ready; its log:\n{log_path.read_text()}")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


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
