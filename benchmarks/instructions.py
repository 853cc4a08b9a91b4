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

With ``--events`` each request is one ``POST /v1/events`` for a benchmark guest, every event with a ref no run sent
before (a repeated ref is only acknowledged as a duplicate).

Needs ``valgrind`` (``apt-get install valgrind``); each round takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import uvloop

from benchmarks.data import event_bodies
from benchmarks.inprocess import (
    cpu_per_request_us,
    decide_path,
    harness_parser,
    in_process_app,
    post_once,
    shuffled_bodies,
)

ROOT = Path(__file__).resolve().parent.parent
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


async def _measured(redis_url: str, model: str, events: bool, count: int, guests: int) -> None:
    """The measured program: 300 requests of warm-up, then ``count`` more, 16 in flight (as benchmarks.inprocess)."""
    app = in_process_app(redis_url)
    if events:
        bodies, path = event_bodies(300 + count, guests, run=os.getpid()), "/v1/events"
    else:
        bodies, path = shuffled_bodies(guests), decide_path(model)
    async with app.router.lifespan_context(app):
        for body in bodies[:300]:
            await post_once(app, body, path)
        await cpu_per_request_us(app, bodies[300:] if events else bodies, path, count, 16)


def _instructions(redis_url: str, model: str, events: bool, count: int, guests: int) -> int:
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.instructions", "--redis", redis_url, "--model", model,
        "--guests", str(guests), "--run", str(count), *(["--events"] if events else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    found = _TOTAL.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the measured run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = harness_parser(__doc__)
    parser.add_argument("--model", default="realistic")
    parser.add_argument("--events", action="store_true", help="single-event requests instead of decisions")
    parser.add_argument("--small", type=int, default=300, help="decisions in the shorter run")
    parser.add_argument("--large", type=int, default=2300, help="decisions in the longer run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured run, inside valgrind
    args = parser.parse_args(argv)
    if args.run is not None:
        uvloop.run(_measured(args.redis, args.model, args.events, args.run, args.guests))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    what, unit = ("events", "event") if args.events else (args.model, "decision")
    per_request = []
    for _ in range(args.rounds):
        small = _instructions(args.redis, args.model, args.events, args.small, args.guests)
        large = _instructions(args.redis, args.model, args.events, args.large, args.guests)
        per_request.append((large - small) / (args.large - args.small))
        print(f"{what}: {per_request[-1]:,.0f} instructions per {unit}", flush=True)
    if args.rounds > 1:
        print(f"{what}: median {statistics.median(per_request):,.0f} over {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
