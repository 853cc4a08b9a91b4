"""What each node of the realistic model costs a decision, measured by taking it away.

A profile attributes time to the code that runs, not to what a part costs the code around it (a Lua call leaves
the interpreter's caches cold for the Python that follows). So each node is replaced by a constant of the same
shape in its own copy of the model, every copy is published, and the copies run in one process (the ASGI app
called directly, 16 in flight) in alternating blocks, so machine noise hits them alike. Point it at the Redis of
a harness started with ``--serve``, as for ``benchmarks/inprocess.py``:

    python -m benchmarks.ablation --redis redis://127.0.0.1:PORT/0 --rounds 7 --block 2000
    python -m benchmarks.ablation --redis redis://127.0.0.1:PORT/0 --instructions

Prints the median CPU µs per decision of each variant and what removing the node saved; with
``--instructions``, machine instructions per decision counted by valgrind instead (``benchmarks.instructions``),
which the VM's noise does not move — about 1.5 minutes per variant (each variant timing-neutral, as there).
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks.inprocess import (
    cpu_per_request_us,
    decide_once,
    decide_path,
    harness_parser,
    in_process_app,
    shuffled_bodies,
)
from benchmarks.instructions import per_request_of, publish, timing_neutral

SCENARIO = Path(__file__).with_name("scenario") / "realistic.json"
CONSTANTS = {
    "loyalty": '{tier: "gold", score: 100, idle_days: 3}',
    "candidates": '[{id: "a", name: "b"}, {id: "c", name: "d"}]',
    "recency": '{spent: 100, big_orders: 1, last_order: "2026-10-01", dormant: false, pages: 10}',
    "hero": '{arm: "classic", payload: {headline: "x"}, propensity: 0.5}',
    "picks": '[{id: "p1"}, {id: "p2"}]',
    "segment": '{name: "vip", rank: 4, discount_pct: 10}',
    "affinity": '{boost: 2, theme: "shoes"}',
}
"""Each node's stand-in: a FEEL constant shaped like what the node outputs."""
VARIANTS = {"full": (), **{f"no {node}": (node,) for node in CONSTANTS}, "no tables": ("segment", "affinity")}


def variant(model: dict[str, Any], removed: tuple[str, ...]) -> dict[str, Any]:
    missing = set(removed) - {n["id"] for n in model["nodes"]}
    if missing:  # the scenario changed: a "no X" variant would silently measure the full model
        raise SystemExit(f"the scenario has no node {', '.join(sorted(missing))}: update CONSTANTS")
    out = copy.deepcopy(model)
    out["nodes"] = [
        {"id": n["id"], "kind": "expression", "expr": CONSTANTS[n["id"]]} if n["id"] in removed else n
        for n in out["nodes"]
    ]
    return out


KEYS = {name: "ablation-" + name.replace(" ", "-") for name in VARIANTS}
"""The model key each variant is published under."""


async def _publish(app: Any, bodies: list[bytes], neutral: bool) -> None:
    """Every variant in production (timing-neutral ones to count instructions), each warmed with a few decisions."""
    model = orjson.loads(SCENARIO.read_bytes())
    for name, removed in VARIANTS.items():
        definition = variant(model, removed)
        await publish(app, KEYS[name], timing_neutral(definition) if neutral else definition)
        for body in bodies[:300]:
            await decide_once(app, body, KEYS[name])


async def _publish_all(redis_url: str, guests: int, neutral: bool) -> None:
    app = in_process_app(redis_url)
    async with app.router.lifespan_context(app):
        await _publish(app, shuffled_bodies(guests), neutral)


async def _run(redis_url: str, rounds: int, block: int, guests: int) -> dict[str, list[float]]:
    app = in_process_app(redis_url)
    bodies = shuffled_bodies(guests)
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    async with app.router.lifespan_context(app):
        await _publish(app, bodies, neutral=False)
        for r in range(rounds):
            for name in list(VARIANTS)[:: 1 if r % 2 == 0 else -1]:
                samples[name].append(await cpu_per_request_us(app, bodies, decide_path(KEYS[name]), block, 16))
    return samples


def _table(unit: str, values: dict[str, float], digits: int) -> None:
    full = values["full"]
    print(f"| variant | {unit} | saved |\n|---|---:|---:|")
    for name, value in values.items():
        print(f"| {name} | {value:,.{digits}f} | {'–' if name == 'full' else f'{full - value:,.0f}'} |")


def main(argv: list[str] | None = None) -> int:
    parser = harness_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=2_000, help="decisions per variant per round")
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind) instead")
    args = parser.parse_args(argv)
    if args.instructions:
        uvloop.run(_publish_all(args.redis, args.guests, neutral=True))
        counted = {}
        for name in VARIANTS:
            counted[name] = per_request_of(args.redis, KEYS[name], args.guests)
            print(f"{name}: {counted[name]:,.0f}", flush=True)
        _table("instructions per decision", counted, 0)
        return 0
    samples = uvloop.run(_run(args.redis, args.rounds, args.block, args.guests))
    _table("median CPU µs per decision", {name: statistics.median(v) for name, v in samples.items()}, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
