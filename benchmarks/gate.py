"""The performance budget, checked on every CI run: what one decision of the realistic model costs, in instructions.

Issue 7 asks for decide within 2× of the floor "and keep it true afterwards". Wall-clock numbers cannot be a gate on
a shared VM (they move ±10 % from one run to the next, benchmarks/RESULTS.md), but a decision's instructions counted
by valgrind moved ±0.5 % between runs, with or without other work on the machine. The floor's did not (523 k alone,
478 k beside a test suite: its redis-py client reads replies as they happen to arrive), so the budget is on the
decision alone. This sets up the load harness's scenario at a smaller scale (its own Redis, the catalogue stub, the
connection, the experiment and the model, published through the admin API and checked clean), counts what one
decision costs (:func:`benchmarks.instructions.per_request_of`, timing-neutral, 16 in flight) and fails past
:data:`MAX_DECISION_INSTRUCTIONS`.

    python -m benchmarks.gate [--guests 2000]      # exit 1 when over budget; about a minute

Instructions are not time: evaluating decisions together (engine/batching.py) costs 4.6 % more of them and saves a
third of the CPU at saturation. A change that needs more must say why: raise the budget in the same commit, with the
reason in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import uvloop

from benchmarks import scenario_setup, servers
from benchmarks.data import decide_bodies, seed_guests
from benchmarks.instructions import per_request_of, publish_neutral
from engine.sessions import Limits

MAX_DECISION_INSTRUCTIONS = 1_050_000
"""Measured 952 k (2,000 guests, 2026-12-07, decisions batched; 907 k one by one): ~10 % for noise between machines
and releases of the stack, and a regression past that fails. For scale: a floor request is ~520 k."""


def verdict(instructions: float, budget: float = MAX_DECISION_INSTRUCTIONS) -> tuple[bool, str]:
    """Whether a decision's ``instructions`` keep the budget, and the line that says so."""
    ok = instructions <= budget
    state = "within" if ok else "OVER"
    return ok, f"a realistic decision: {instructions:,.0f} instructions ({state} the budget of {budget:,.0f})"


def measure(guests: int) -> float:
    """A realistic decision's instructions, on a fresh Redis and stub with the scenario set up as the load harness
    sets it up."""
    with tempfile.TemporaryDirectory(prefix="arbiter-gate-") as tmp:
        workdir = Path(tmp)
        with servers.running_redis(workdir) as url, servers.running_stub(workdir) as stub:
            seed_guests(url, guests, session_events=Limits().max_closed_session_events)
            with servers.running_arbiter(workdir, url, 1) as arbiter:
                bodies = decide_bodies(100, guests)
                scenario_setup.install_checked(arbiter.port, stub.port, servers.ADMIN_KEY, servers.PUBLIC_KEY, bodies)
            # The counting runs are in-process (benchmarks/instructions.py); the stub answers their cache misses.
            neutral = uvloop.run(publish_neutral(url, scenario_setup.MODEL))
            return per_request_of(url, neutral, guests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=2_000)
    parser.add_argument("--budget", type=float, default=MAX_DECISION_INSTRUCTIONS, help="instructions, at most")
    args = parser.parse_args(argv)
    ok, line = verdict(measure(args.guests), args.budget)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
