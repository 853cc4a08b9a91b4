"""The ``arbiter`` command, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def arbiter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_eval_prints_outputs_as_json() -> None:
    inp = {
        "guest": {"facts": {"lifetime_value": 2500, "order_count": 3}},
        "context": {"channel": "WEB", "now": "2026-01-01"},
    }
    r = arbiter("eval", "models/next-best-offer.json", "--input", json.dumps(inp))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["outputs"]["tier"] == "gold" and out["outputs"]["offer"] == "gold-lounge"
    assert out["errors"] == []


def test_eval_reports_bad_input_json() -> None:
    r = arbiter("eval", "models/next-best-offer.json", "--input", "{nope")
    assert r.returncode == 2 and "not JSON" in json.loads(r.stdout)["errors"][0]["error"]


def test_validate_runs_embedded_tests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = arbiter("validate", "models/next-best-offer.json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["tests"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nodes": [{"id": "a", "kind": "rule", "expr": "1 +"}]}))
    r = arbiter("validate", str(bad))
    assert r.returncode == 1
    assert json.loads(r.stdout)["errors"][0]["pointer"] == "/nodes/0/expr"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps(
            {
                "nodes": [{"id": "answer", "kind": "output", "value": {"x": "1"}}],
                "tests": [{"name": "t", "input": {}, "expect": {"x": 2}}],
            }
        )
    )
    r = arbiter("validate", str(wrong))
    assert r.returncode == 1 and json.loads(r.stdout)["test_failures"][0]["got"] == {"x": 1}


def test_serve_without_its_redis_says_so_and_exits() -> None:
    from tests.conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    r = arbiter("serve", "--port", str(free_port()), "--redis", url, "--workers", "2")
    assert r.returncode == 2
    assert f"cannot reach Redis at {url}" in r.stderr and "Traceback" not in r.stderr
