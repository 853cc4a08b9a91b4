"""The performance budget, checked on every CI run: a decision of the realistic model in instructions, against the
floor's request.

Issue 7 asks for decide within 2× of the floor "and keep it true afterwards". Wall-clock numbers cannot be a gate on
a shared VM (they move ±10 % from one run to the next, benchmarks/RESULTS.md), but instructions counted by valgrind
move ±0.25 % and, for the same bodies on the same stack, their ratio tracks the throughput ratio the load harness
measures (0.575 by instructions against 0.50-0.61 at saturation, sessions 13-16). So this sets up the load harness's
scenario at a smaller scale (its own Redis, the catalogue stub, the connection, the experiment and the model,
published through the admin API and checked clean), counts what one decision and one floor request cost
(:func:`benchmarks.instructions.per_request_of`, timing-neutral) and fails when their ratio passes
:data:`MAX_DECIDE_OVER_FLOOR`.

    python -m benchmarks.gate [--guests 2000]      # exit 1 when over budget; about 2 minutes

A change that needs more must say so: raise the budget in the same commit, with its reason in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvloop

from benchmarks import scenario_setup, servers
from benchmarks.data import decide_bodies, seed_floor, seed_guests
from benchmarks.instructions import per_request_of, publish_neutral
from engine.sessions import Limits

MAX_DECIDE_OVER_FLOOR = 1.85
"""Instructions of a realistic decision over a floor request. Measured 1.73 (2,000 guests, 2026-12-07; 1.74 with
20,000): the budget leaves ~7 % for noise between machines and library releases, and a regression past that fails.
At 2.0 decide's throughput would be half the floor's, the issue's line."""


@dataclass(frozen=True, slots=True)
class Measured:
    decide: float
    floor: float

    @property
    def ratio(self) -> float:
        return self.decide / self.floor


def verdict(measured: Measured, budget: float = MAX_DECIDE_OVER_FLOOR) -> tuple[bool, str]:
    """Whether ``measured`` keeps the budget, and the line that says so."""
    ok = measured.ratio <= budget
    line = (
        f"decide {measured.decide:,.0f} instructions, floor {measured.floor:,.0f}: "
        f"{measured.ratio:.3f}× the floor ({'within' if ok else 'OVER'} the budget of {budget:.2f}×)"
    )
    return ok, line


def measure(guests: int) -> Measured:
    """The realistic scenario on a fresh Redis and stub, as the load harness sets it up; both counts."""
    with tempfile.TemporaryDirectory(prefix="arbiter-gate-") as tmp:
        workdir = Path(tmp)
        with servers.running_redis(workdir) as url, servers.running_stub(workdir) as stub:
            seed_guests(url, guests, session_events=Limits().max_closed_session_events)
            seed_floor(url, guests)
            with servers.running_arbiter(workdir, url, 1) as arbiter:
                scenario_setup.install(arbiter.port, stub.port, servers.ADMIN_KEY)
                try:
                    scenario_setup.check(arbiter.port, servers.PUBLIC_KEY, decide_bodies(100, guests))
                except scenario_setup.NotClean as exc:
                    raise SystemExit(str(exc)) from None
            # The counting runs are in-process (benchmarks/instructions.py); the stub answers their cache misses.
            neutral = uvloop.run(publish_neutral(url, scenario_setup.MODEL))
            decide = per_request_of(url, neutral, guests)
            floor = per_request_of(url, scenario_setup.MODEL, guests, "floor")
    return Measured(decide, floor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=2_000)
    parser.add_argument("--budget", type=float, default=MAX_DECIDE_OVER_FLOOR, help="decide over floor, at most")
    args = parser.parse_args(argv)
    ok, line = verdict(measure(args.guests), args.budget)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
