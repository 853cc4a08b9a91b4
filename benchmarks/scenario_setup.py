"""Puts the realistic scenario into a running Arbiter the way an operator would, through the admin API.

1. ``PUT /v1/connections/bench-catalogue``: the catalogue stub (benchmarks/stub_app.py) on loopback, hence
   ``allow_private: true`` (the SSRF guard refuses loopback otherwise);
2. ``PUT /v1/experiments/bench-hero``: benchmarks/scenario/experiments/bench-hero.json, a Thompson-sampling
   bandit over three banners;
3. ``PUT /v1/models/realistic?publish=1``: benchmarks/scenario/realistic.json, uploaded and published.

The model compiles without the connection or the experiment (both are looked up when a decision runs), but
a decision before they exist would take fallbacks and errors; so they go first, and :func:`check` then
insists on clean decisions, with the trace (``"explain": true``), before anything is measured (the load
harness also uses it to let Arbiter settle between runs: an overload leaves the external node's circuit open).

Run against a running Arbiter and stub:
``python -m benchmarks.scenario_setup --port 8080 --stub-port 8181 [--admin-key demo-admin]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks import _http
from benchmarks._http import LOOPBACK

SCENARIO_DIR = Path(__file__).resolve().parent / "scenario"
MODEL = "realistic"
MODEL_FILE = SCENARIO_DIR / f"{MODEL}.json"
EXPERIMENT = "bench-hero"
EXPERIMENT_FILE = SCENARIO_DIR / "experiments" / f"{EXPERIMENT}.json"
CONNECTION = "bench-catalogue"
EXTERNAL_NODE = "picks"
"""The model's external node (its cache and fallbacks are reported per run)."""
CHECKS = 20
"""Clean decisions in a row before measuring: with several workers, each must have picked up the
experiment (workers refresh definitions every second) and the model (pointer cache, ~1 s)."""


def connection_document(stub_port: int) -> dict[str, Any]:
    return {
        "base_url": f"http://{LOOPBACK}:{stub_port}",
        "allow_private": True,
        "timeout_ms": 50,
        "circuit": {"failures": 20, "cooldown_ms": 1000},
    }


def _put(port: int, path: str, body: bytes, admin_key: str) -> dict[str, Any]:
    status, answer = _http.call(port, "PUT", path, body, key=admin_key)
    if status not in (200, 201):
        raise SystemExit(f"PUT {path} answered {status}: {answer.decode(errors='replace')}")
    doc: dict[str, Any] = orjson.loads(answer)
    return doc


def install(port: int, stub_port: int, admin_key: str) -> dict[str, Any]:
    """Create the connection and the experiment, then upload and publish the model; returns the model version."""
    _put(port, f"/v1/connections/{CONNECTION}", orjson.dumps(connection_document(stub_port)), admin_key)
    _put(port, f"/v1/experiments/{EXPERIMENT}", EXPERIMENT_FILE.read_bytes(), admin_key)
    created = _put(port, f"/v1/models/{MODEL}?publish=1", MODEL_FILE.read_bytes(), admin_key)
    return {"model": MODEL, "version": created["version"], "connection": CONNECTION, "experiment": EXPERIMENT}


def problems(decision: dict[str, Any]) -> list[str]:
    """What is wrong with one explained decision: errors, and nodes that failed, fell back or were skipped."""
    out = [f"error: {e}" for e in decision.get("errors", [])]
    for entry in decision.get("trace", []):
        for what in ("error", "fallback"):
            if entry.get(what):
                out.append(f"node {entry['id']} ({entry['kind']}): {what} {entry[what]} {entry.get('reason', '')}")
    outputs = decision.get("outputs") or {}
    if not outputs.get("recommended"):
        out.append("outputs.recommended is empty: the external node gave nothing")
    if outputs.get("banner") is None:
        out.append("outputs.banner is null: the experiment node chose no arm")
    return out


class NotClean(Exception):
    """Decisions kept showing errors or fallbacks; the message is the last decision's problems."""


def check(port: int, public_key: str, bodies: list[bytes], timeout_s: float = 20.0) -> dict[str, Any]:
    """Decide until ``CHECKS`` explained decisions in a row are clean; raise :class:`NotClean` otherwise."""
    deadline = time.monotonic() + timeout_s
    clean, seen, last = 0, 0, "no decision yet"
    while clean < CHECKS:
        if time.monotonic() > deadline:
            raise NotClean(f"the scenario does not decide cleanly after {timeout_s:.0f} s: {last}")
        body = orjson.loads(bodies[seen % len(bodies)])
        seen += 1
        status, answer = _http.call(port, "POST", f"/v1/decide/{MODEL}", orjson.dumps({**body, "explain": True}),
                                    key=public_key)  # fmt: skip
        found = [f"HTTP {status}: {answer[:300].decode(errors='replace')}"] if status != 200 else []
        decision = orjson.loads(answer) if status == 200 else {}
        found = found or problems(decision)
        if found:
            clean, last = 0, "; ".join(found)
            time.sleep(0.1)
            continue
        clean += 1
    return {"decisions_checked": seen, "example": decision}


def install_checked(port: int, stub_port: int, admin_key: str, public_key: str, bodies: list[bytes]) -> dict[str, Any]:
    """:func:`install`, then :func:`check`; a scenario that does not decide cleanly stops the program with why."""
    installed = install(port, stub_port, admin_key)
    try:
        installed["checked"] = check(port, public_key, bodies)
    except NotClean as exc:
        raise SystemExit(str(exc)) from None
    return installed


def main(argv: list[str] | None = None) -> int:
    from benchmarks.data import decide_bodies

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="Arbiter's port on 127.0.0.1")
    parser.add_argument("--stub-port", type=int, required=True, help="benchmarks/stub_app.py's port on 127.0.0.1")
    parser.add_argument("--admin-key", default="demo-admin")
    parser.add_argument("--public-key", default="demo-public")
    args = parser.parse_args(argv)
    installed = install_checked(args.port, args.stub_port, args.admin_key, args.public_key, decide_bodies(CHECKS, 1000))
    example = installed.pop("checked")["example"]
    print(orjson.dumps(installed).decode())
    print(orjson.dumps(example, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
