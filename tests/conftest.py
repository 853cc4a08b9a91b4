"""Shared fixtures: a real redis-server on a free port, both stores, an in-process app client.

No fakes: the Redis tests talk to a real ``redis-server`` started here (flushed before each test), so
the Lua scripts that make writes atomic are exercised for real.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from engine.app import create_app
from engine.config import Settings
from engine.store import Store
from engine.store.memory import MemoryStore
from tests.listening import ManualClock, make_ingest

ADMIN = {"Authorization": "Bearer test-admin"}
PUBLIC = {"X-API-Key": "test-public"}
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check, timeout_s: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll instead of sleeping a fixed time: returns as soon as ``check()`` is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 — not up yet
            pass
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real redis-server on a free port for as long as the block runs: (url, process)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_until(client.ping, what="redis-server")
        yield url, proc
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_arbiter(
    log_dir: Path,
    *,
    models: Path | str = "models",
    keys: tuple[str, str] = ("e2e-admin", "e2e-public"),
    redis_url: str | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """A real ``arbiter serve`` process (uvicorn, uvloop, httptools) on a free port; yields its base URL.

    Ready means /ready answered 200; its output goes to ``log_dir/server.log``, shown if it never gets there.
    """
    port = free_port()
    full_env = {**os.environ, "ARBITER_ADMIN_KEY": keys[0], "ARBITER_PUBLIC_KEY": keys[1], **(env or {})}
    args = [sys.executable, "-m", "engine", "serve", "--port", str(port), "--models", str(models), "--quiet"]
    if redis_url is not None:
        args += ["--redis", redis_url, "--workers", str(workers)]
    log_path = log_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def settings() -> Settings:
    return Settings(admin_key="test-admin", public_keys={"test-public": "default", "eu-key": "eu"})


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    """The same behaviour suite runs against the embedded store and a real Redis."""
    if request.param == "memory":
        return MemoryStore()
    from engine.store.redis import RedisStore

    return RedisStore(request.getfixturevalue("redis_url"))


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def clock() -> ManualClock:
    """An injectable clock for the listen side: sessions time out without sleeping."""
    return ManualClock()


@pytest.fixture
async def ingest(store: Store, clock: ManualClock):  # type: ignore[no-untyped-def]
    yield make_ingest(store, clock)
    await store.close()
