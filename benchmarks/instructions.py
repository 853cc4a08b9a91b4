"""Machine instructions per decision (or per event), counted by valgrind: an A/B measure a noisy VM does not move.

Wall-clock CPU per decision moved by ±10 % from one run to the next on the shared VM this project is measured on
(benchmarks/RESULTS.md), which hides any change worth less than that. Counting instructions is deterministic up
to the timing-dependent paths (how many writes share a flush): the in-process harness
(:mod:`benchmarks.inprocess`) runs under ``valgrind --tool=cachegrind`` twice, with ``--small`` and with
``--large`` decisions after the same warm-up, and the difference of the two totals divided by the difference of
the counts is what one decision costs, start-up and warm-up cancelled. Instructions are not time (a cache miss
costs as much as hundreds of them), so use it to compare two versions of the code, not to predict throughput.
Point it at the Redis of a harness started with ``--serve``, as for :mod:`benchmarks.inprocess`:

    python -m benchmarks.instructions --redis redis://127.0.0.1:PORT/0 [--model realistic] [--rounds 2]
    python -m benchmarks.instructions --redis redis://127.0.0.1:PORT/0 --events   # single-event requests
    python -m benchmarks.instructions --redis redis://127.0.0.1:PORT/0 --floor    # the floor app, same bodies

With ``--events`` each request is one ``POST /v1/events`` for a benchmark guest, every event with a ref no run sent
before (a repeated ref is only acknowledged as a duplicate). With ``--floor`` it is the load harness's floor app
(benchmarks/floor_app.py, its keys seeded first) taking the decide bodies: decide's instructions over the floor's is
the throughput ratio without the sockets and the VM.

Under valgrind the program runs some 20–35× slower, and what the engine does on a clock would then happen that much more
often per decision than at native speed: decision records and exposures flushed every 5 ms in batches of one
instead of ~15, experiments refreshed, cached responses expiring, and the 50 ms decision
deadline and 20 ms call timeouts firing on work that natively takes a millisecond (the first version of this
tool counted that: a third of "the realistic model's" instructions were timed-out catalogue calls). So the
measured run stretches the flush, experiment-refresh and housekeeping timers by :data:`DILATION` (not, with
``--events``, the housekeeping that settles the event log: that is work per event; nor the registry's 1 s model
pointer refresh, one read a second), and decides against a copy of the model whose
deadline, call timeouts and cache lifetimes cannot expire mid-run (:func:`timing_neutral`, published as
``<model>-timing-neutral`` before the runs): every external call a cache hit, as at native speed, where a 5 s
TTL at thousands of decisions per second misses about once in ten thousand.

Needs ``valgrind`` (``apt-get install valgrind``); each round takes about a minute.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks.data import event_bodies, seed_floor
from benchmarks.inprocess import (
    cpu_per_request_us,
    decide_path,
    harness_parser,
    in_process_app,
    post_once,
    shuffled_bodies,
)
from engine import listen

ROOT = Path(__file__).resolve().parent.parent
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")
DILATION = 50
"""The engine's timers are stretched by this much in the measured run, so background work batches per decision
as it does at native speed. Under cachegrind (``--cache-sim=no``) the program runs 20–35× slower (300 + 2,300 decisions,
start-up included: 21.5 s against 1.25 s natively); erring long is harmless (batches a little larger than
native), erring short is not (a flush per decision)."""
NEUTRAL_SUFFIX = "-timing-neutral"


def timing_neutral(definition: dict[str, Any]) -> dict[str, Any]:
    """A copy of a model whose clocks cannot change which paths a decision takes when it runs tens of times slower: the
    longest deadline a model may have, external calls with long timeouts and no retries, and cached responses
    that outlive the run."""
    out = copy.deepcopy(definition)
    out["deadline_ms"] = 10_000
    for node in out.get("nodes", []):
        if node.get("kind") == "external":
            node.update(timeout_ms=10_000, retries=0, cache_ttl_s=86_400)
    return out


async def publish(app: Any, key: str, definition: dict[str, Any]) -> None:
    """``definition`` in production as ``key`` (a new version only if it changed)."""
    registry = app.state.rt.registry
    created = await registry.upload(key, orjson.dumps(definition), "application/json")
    if created["state"] != "production":
        await registry.set_state(key, created["version"], "production")


async def publish_neutral(redis_url: str, model: str) -> str:
    app = in_process_app(redis_url)
    async with app.router.lifespan_context(app):
        registry = app.state.rt.registry
        pointers = await registry.pointers(model)
        if pointers is None or pointers.production is None:
            raise SystemExit(f"no model '{model}' in production at {redis_url}")
        doc = await registry.version_document(model, pointers.production)
        await publish(app, model + NEUTRAL_SUFFIX, timing_neutral(doc["definition"]))
    return model + NEUTRAL_SUFFIX


def _stretch_timers(rt: Any) -> None:
    """The engine's background intervals × :data:`DILATION` (see the module's docstring)."""
    rt.recorder.flush_interval_s *= DILATION
    lab = rt.services.get("experiments")
    if lab is not None:
        lab.flush_interval_s *= DILATION
        lab.refresh_s *= DILATION


async def _measured(redis_url: str, model: str, target: str, count: int, guests: int) -> None:
    """The measured program: 300 requests of warm-up, then ``count`` more, 16 in flight (as benchmarks.inprocess)."""
    if target == "floor":
        os.environ["FLOOR_REDIS_URL"] = redis_url
        from benchmarks.floor_app import app as floor  # after the environment is set

        async with floor.router.lifespan_context(floor):
            bodies, path = shuffled_bodies(guests), decide_path(model)
            for body in bodies[:300]:
                await post_once(floor, body, path)
            await cpu_per_request_us(floor, bodies, path, count, 16)
        return
    events = target == "events"
    app = in_process_app(redis_url)
    if events:
        bodies, path = event_bodies(300 + count, guests, run=os.getpid()), "/v1/events"
    else:
        bodies, path = shuffled_bodies(guests), decide_path(model)
        # Housekeeping (closing idle sessions, settling the event log) is work per event, not per decision: with
        # events it keeps its pace, so each round reads back what the run logged; with decisions it would only
        # close sessions left idle by earlier runs, on valgrind's clock.
        listen.SWEEP_INTERVAL_S *= DILATION  # read by the housekeeping loop at each turn
    async with app.router.lifespan_context(app):
        _stretch_timers(app.state.rt)
        for body in bodies[:300]:
            await post_once(app, body, path)
        await cpu_per_request_us(app, bodies[300:] if events else bodies, path, count, 16)


def _instructions(redis_url: str, model: str, target: str, count: int, guests: int) -> int:
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.instructions", "--redis", redis_url, "--model", model,
        "--guests", str(guests), "--run", str(count), *([f"--{target}"] if target != "decide" else []),
    ]  # fmt: skip
    # numpy's OpenBLAS starts a thread per core that spins while idle; under valgrind how long it spins depends on
    # the wall clock, and it moved the count by 76 M instructions between identical runs. The engine does no
    # linear algebra, so one BLAS thread changes nothing else.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    found = _TOTAL.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the measured run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request_of(
    redis_url: str, model: str, guests: int, target: str = "decide", small: int = 300, large: int = 2300
) -> float:
    """Instructions one request costs — a decision of ``model``, an event or a floor request (``target``): two runs
    under valgrind, differenced."""
    return (
        _instructions(redis_url, model, target, large, guests) - _instructions(redis_url, model, target, small, guests)
    ) / (large - small)


def main(argv: list[str] | None = None) -> int:
    parser = harness_parser(__doc__)
    parser.add_argument("--model", default="realistic")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--events", action="store_true", help="single-event requests instead of decisions")
    which.add_argument("--floor", action="store_true", help="the floor app's requests instead of decisions")
    parser.add_argument("--small", type=int, default=300, help="decisions in the shorter run")
    parser.add_argument("--large", type=int, default=2300, help="decisions in the longer run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured run, inside valgrind
    args = parser.parse_args(argv)
    target = "events" if args.events else "floor" if args.floor else "decide"
    if args.run is not None:
        uvloop.run(_measured(args.redis, args.model, target, args.run, args.guests))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    what, unit = {"events": ("events", "event"), "floor": ("floor", "request")}.get(target, (args.model, "decision"))
    if target == "floor":
        seed_floor(args.redis, args.guests)
    model = args.model if target != "decide" else uvloop.run(publish_neutral(args.redis, args.model))
    per_request = []
    for _ in range(args.rounds):
        per_request.append(per_request_of(args.redis, model, args.guests, target, args.small, args.large))
        print(f"{what}: {per_request[-1]:,.0f} instructions per {unit}", flush=True)
    if args.rounds > 1:
        print(f"{what}: median {statistics.median(per_request):,.0f} over {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
