"""The load harness's child processes: redis-server, the floor app, the catalogue stub and Arbiter.

Each runs in its own process group (uvicorn forks workers) and is stopped with the whole group when its
``with`` block ends, however it ends; its output goes to a log file in the run's temp dir, whose tail is
printed when the process does not come up.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks import _http
from benchmarks._http import LOOPBACK

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_KEY = "bench-public"
ADMIN_KEY = "bench-admin"
UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


@dataclass(frozen=True, slots=True)
class Server:
    port: int
    pid: int
    """The process started (with one worker, uvicorn serves in it; with more, it is their parent)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it returns something truthy without raising."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _tail(log: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def process(
    cmd: list[str], log: Path, ready: Callable[[], object], what: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, wait until ``ready()`` holds (≤ 60 s), yield, then stop its whole process group."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True)
    try:
        try:
            wait_until(lambda: proc.poll() is None and ready(), 60, what)
        except TimeoutError:
            raise SystemExit(f"{what} did not come up ({' '.join(cmd)}); its log ends:\n{_tail(log)}") from None
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


REDIS_STALL_MS = 5
"""Redis's latency monitor records events at least this long (``LATENCY LATEST``)."""


REDIS_PROFILES: dict[str, tuple[str, ...]] = {
    "default": (),
    # docs/operations.md: AOF rewrites scheduled (BGREWRITEAOF), the automatic one kept as a safety net above what is
    # written between two scheduled ones. A whole harness run writes ~2 GB of AOF, so none falls inside it.
    "production": ("--auto-aof-rewrite-percentage", "100", "--auto-aof-rewrite-min-size", "16gb"),
}
"""Redis settings beyond the harness's own, by name (``loadtest --redis-profile``): ``default`` is what an
untuned Redis does (an automatic AOF rewrite each time the file doubles, from 64 MB: every few tens of seconds at
the harness's write rates), ``production`` what docs/operations.md recommends where Redis shares cores with the
workers."""


@contextlib.contextmanager
def running_redis(workdir: Path, profile: str = "default") -> Iterator[str]:
    """A redis-server on a free port in ``workdir``, AOF ``everysec`` (what makes accepted events durable), with the
    settings of ``profile`` (:data:`REDIS_PROFILES`)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    url = f"redis://{LOOPBACK}:{port}/0"
    cmd = [exe, "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir), "--save", ""]
    cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
    # Redis's own record of its stalls (forks, AOF writes and fsyncs, slow commands), read per run by the harness.
    cmd += ["--latency-monitor-threshold", str(REDIS_STALL_MS), *REDIS_PROFILES[profile]]

    def ping() -> bool:
        client = redis.Redis.from_url(url)
        try:
            return bool(client.ping())
        finally:
            client.close()

    with process(cmd, workdir / "redis.log", ping, "redis-server"):
        yield url


def _env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    # Everything the engine would read on its own (a models dir, other keys) is dropped: the harness decides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env |= {"PYTHONPATH": str(ROOT), **extra}
    if redis_url is not None:
        env["FLOOR_REDIS_URL"] = redis_url
    return env


def _uvicorn(app: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port), "--workers", str(workers)]


@contextlib.contextmanager
def running_floor(workdir: Path, redis_url: str, workers: int) -> Iterator[Server]:
    """benchmarks/floor_app.py with ``workers``, served as Arbiter is (a listening socket per worker)."""
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.floor_app", "--host", LOOPBACK, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    ready = functools.partial(_http.get, port, "/health")
    with process(cmd, workdir / "floor.log", ready, "the floor app", _env(redis_url)) as proc:
        yield Server(port, proc.pid)


@contextlib.contextmanager
def running_stub(workdir: Path, delay_ms: float = 0.0) -> Iterator[Server]:
    """benchmarks/stub_app.py (the external node's commerce API), one worker."""
    port = free_port()
    cmd = [*_uvicorn("benchmarks.stub_app:app", port, 1), *UVICORN_FLAGS]
    ready = functools.partial(_http.get, port, "/stats")
    with process(cmd, workdir / "stub.log", ready, "the catalogue stub", _env(STUB_DELAY_MS=str(delay_ms))) as proc:
        yield Server(port, proc.pid)


@contextlib.contextmanager
def running_arbiter(workdir: Path, redis_url: str, workers: int, models: Path | None = None) -> Iterator[Server]:
    """``arbiter serve``; without a models dir (the harness publishes through the admin API, as an operator would) or
    with one (``models``: loaded at start-up)."""
    port = free_port()
    cmd = [sys.executable, "-m", "engine", "serve", "--port", str(port), "--redis", redis_url]
    cmd += ["--workers", str(workers), "--quiet", *(["--models", str(models)] if models is not None else [])]
    env = _env(ARBITER_PUBLIC_KEY=PUBLIC_KEY, ARBITER_ADMIN_KEY=ADMIN_KEY)
    with process(cmd, workdir / "arbiter.log", functools.partial(_http.get, port, "/ready"), "arbiter", env) as proc:
        yield Server(port, proc.pid)
