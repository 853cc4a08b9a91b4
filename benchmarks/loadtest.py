"""The load harness: real Redis, the floor app and Arbiter, driven at saturation and at fixed rates.

One command (``make bench-load``, or ``make bench`` before the micro-benchmarks) runs, in this order:

1. a ``redis-server`` on a free loopback port in its own temp dir (AOF on, ``appendfsync everysec``:
   the production setting that makes accepted events durable), seeded with ``--guests`` guests with
   history (benchmarks/data.py: sessions carrying up to ``--session-events`` page views, as many as the engine
   keeps by default; orders; cart) plus, for the floor, one guest-sized string per guest (without the events);
2. the floor (benchmarks/floor_app.py) under uvicorn with ``--workers``: saturation with wrk, then
   open-loop fixed rates (benchmarks/openloop.py) at fractions of the floor's saturation throughput;
3. the catalogue stub (benchmarks/stub_app.py) and Arbiter (``python -m engine serve``, same workers, no
   models dir); the scenario goes in through the admin API (benchmarks/scenario_setup.py: connection,
   experiment, model upload + publish) and must decide cleanly, trace included, before anything is measured;
4. ``POST /v1/decide/realistic`` at saturation, at the same fractions of *the floor's* saturation and at
   ``--own-fractions`` of its own (a load it can sustain); before each run Arbiter must decide cleanly again
   (an overload leaves the external node's circuit open). Per run: the stub's calls and the node fallbacks
   (the external node's cache hit rate); at the end, the per-node timings from ``/metrics``;
5. ``--pairs`` back-to-back saturation runs of the floor and decide, alternating which goes first: the
   throughput ratio as the median of ratios measured seconds apart (:func:`paired`);
6. the target check (:func:`target_check`): ``--target-runs`` times the floor's saturation, then decide at half
   of it; then, unless ``--no-profile``, decide and the floor sampled with perf at that rate
   (:func:`profile_at_target`, benchmarks/profile.py): where a request's CPU goes there, µs by component;
7. ``POST /v1/events`` with one event per request, then with ``--event-batch`` events per request, each at
   saturation and at fractions of *its own* saturation (events are not decide-shaped: the floor's rate
   means nothing to them); events/s accepted = 2xx requests × batch size.

The floor, the stub and Arbiter all run from the start, and one target is driven at a time: the idle servers
take no CPU, so each measured one has the machine (2 cores shared with wrk/openloop and Redis). Every phase
is bounded in time; every process started here is stopped here.

Run: python -m benchmarks.loadtest [--workers 1] [--guests 20000] [--duration 10] [--json out.json]
     python -m benchmarks.loadtest --serve   (set everything up, print the URL, wait: for locust)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop

from benchmarks import _http, cpu, hiccup, load_report, openloop, profile, scenario_setup, servers
from benchmarks._http import LOOPBACK
from benchmarks.data import decide_bodies, event_bodies, seed_floor, seed_guests
from benchmarks.servers import ADMIN_KEY, PUBLIC_KEY
from engine.sessions import Limits

HERE = Path(__file__).resolve().parent
MODEL = scenario_setup.MODEL
MAX_OPEN_LOOP_BODIES = 20_000
CONNECTIONS_PER_WORKER = 32
"""wrk's connections at saturation, per server worker. A closed loop with too few connections measures latency, not
capacity: with two workers, 32 connections left a tenth of the box idle during decide's saturation run (5,388 req/s,
and 6,119-6,129 at 64 and 128), while the floor saturated at 32 (11,436; 11,470 and 11,184 at 64 and 128). Each
decide worker alternates between computing the requests whose guests came back in one Redis reply and waiting for
the next: 16 requests a worker are not enough to cover the wait, 32 are (benchmarks/RESULTS.md, session 12)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to measure: where it is, how wrk and the open-loop generator build its requests."""

    name: str
    path: str
    wrk_args: tuple[str, ...]
    """After wrk's ``--``: mode, model, guests, batch (benchmarks/wrk_decide.lua)."""
    bodies: Callable[[int, int], list[bytes]]
    """(count, run) → request bodies for one open-loop run; ``run`` keeps event refs unique per run."""
    batch: int = 1
    connections_divisor: int = 1
    """wrk's connections are divided by this: a batched run keeps as many *events* in flight as a single one."""


def seed(url: str, guests: int, session_events: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    seed_guests(url, guests, session_events=session_events)
    seed_floor(url, guests)
    client = redis.Redis.from_url(url)
    try:
        used = int(client.info("memory")["used_memory"])
    finally:
        client.close()
    return {"guests": guests, "seconds": round(time.perf_counter() - t0, 1), "redis_used_memory": used}


def wrk(port: int, target: Target, duration_s: float, args: argparse.Namespace) -> dict[str, Any]:
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    connections = max(args.wrk_threads, -(-args.connections // target.connections_divisor))
    cmd = [exe, f"-t{args.wrk_threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "5s"]
    cmd += ["-s", str(HERE / "wrk_decide.lua"), f"http://{LOOPBACK}:{port}", "--", *target.wrk_args]
    env = {**os.environ, "ARBITER_PUBLIC_KEY": PUBLIC_KEY}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    match = re.search(r"^WRK_JSON (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["connections"] = connections
    ok = result["requests"] - result["non2xx"]
    result["events_per_s"] = round(ok * target.batch / result["duration_s"], 1) if result["duration_s"] else 0.0
    return result


def open_loop(
    port: int, target: Target, bodies: list[bytes], rate: float, duration_s: float, warmup_s: float = 0.0
) -> dict[str, Any]:
    headers = {"X-API-Key": PUBLIC_KEY}
    reqs = [openloop.request_bytes(LOOPBACK, port, target.path, b, headers) for b in bodies]
    report = uvloop.run(openloop.run(LOOPBACK, port, reqs, rate=rate, duration_s=duration_s, warmup_s=warmup_s))
    result = report.as_dict()
    result["events_per_s"] = round(result["achieved_rps"] * target.batch, 1)
    return result


@dataclass(frozen=True, slots=True)
class Watched:
    """Whose CPU a run reads around itself: the driven server's process group and its Redis."""

    pgid: int
    redis_url: str


def redis_info(redis_url: str, section: str) -> dict[str, Any]:
    """One section of Redis's ``INFO``, on a connection of its own."""
    client = redis.Redis.from_url(redis_url)
    try:
        return dict(client.info(section))
    finally:
        client.close()


def redis_cpu_s(redis_url: str) -> float:
    """Redis's CPU so far (``INFO cpu``: user + system, all its threads), in seconds."""
    info = redis_info(redis_url, "cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Spend:
    """``with Spend(watched) as spent: <a run>``, then ``spent.summary(requests)``: what the server (its CPU, share of a
    core and wait for one, :mod:`benchmarks.cpu`) and Redis (``INFO cpu``) spent on the run, per request. Nothing
    when ``watched`` is None."""

    def __init__(self, watched: Watched | None) -> None:
        self._redis_url = watched.redis_url if watched else ""
        self._server = cpu.Meter(watched.pgid) if watched else None
        self._redis_s = self._wall_s = 0.0

    def __enter__(self) -> Spend:
        if self._server is not None:
            self._redis_s = redis_cpu_s(self._redis_url)
            self._server.__enter__()
        self._wall_s = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wall_s = time.perf_counter() - self._wall_s
        if self._server is not None:
            self._server.__exit__(*exc)
            self._redis_s = redis_cpu_s(self._redis_url) - self._redis_s

    def summary(self, requests: int) -> dict[str, Any]:
        if self._server is None:
            return {}
        redis_us = round(self._redis_s * 1e6 / requests, 1) if requests else None
        return {"server_cpu": self._server.summary(requests, self._wall_s), "redis_cpu_us_per_request": redis_us}


def observed_open_loop(
    port: int, target: Target, bodies: list[bytes], rate: float, args: argparse.Namespace, watched: Watched | None
) -> dict[str, Any]:
    """:func:`open_loop` with the box watched through it: the machine's own pauses (``box_pauses``,
    :mod:`benchmarks.hiccup`) and what the server and Redis spent (:class:`Spend`), over the run and its warm-up
    together."""
    with hiccup.Probe() as box, Spend(watched) as spent:
        result = open_loop(port, target, bodies, rate, args.duration, args.warmup)
    result["box_pauses"] = box.summary
    return result | spent.summary(result["sent"] + round(rate * args.warmup))


def aof_rewrites(redis_url: str) -> tuple[int, bool]:
    """Redis's AOF rewrites started so far, and whether one is running now."""
    info = redis_info(redis_url, "persistence")
    return int(info["aof_rewrites"]), bool(info["aof_rewrite_in_progress"])


def redis_stalls(redis_url: str) -> dict[str, int]:
    """Redis's stalls since the last call, longest of each kind in ms (its latency monitor: ``fork``,
    ``aof-write``, ``aof-fsync-always``, ``command``, …), and start counting afresh."""
    client = redis.Redis.from_url(redis_url)
    try:
        latest = client.execute_command("LATENCY", "LATEST")
        client.execute_command("LATENCY", "RESET")
    finally:
        client.close()
    return {(e[0].decode() if isinstance(e[0], bytes) else str(e[0])): int(e[3]) for e in latest}


def _rewrite_since(rewrites: Callable[[], tuple[int, bool]] | None, before: tuple[int, bool] | None) -> bool:
    """Whether an AOF rewrite ran at any moment since ``before`` (an :func:`aof_rewrites` reading)."""
    if rewrites is None or before is None:
        return False
    after = rewrites()
    return after[0] > before[0] or before[1] or after[1]


def measure(
    target: Target,
    port: int,
    args: argparse.Namespace,
    fractions: list[tuple[float, str]],
    floor_rps: float | None = None,
    probe: Callable[[], dict[str, int]] | None = None,
    settle: Callable[[], object] | None = None,
    rewrites: Callable[[], tuple[int, bool]] | None = None,
    stalls: Callable[[], dict[str, int]] | None = None,
    watched: Watched | None = None,
) -> dict[str, Any]:
    """Warm up, saturate with wrk, then one open-loop run per ``(fraction, basis)``: that fraction of the
    floor's saturation (``floor_rps``; the floor's own when None) or of this target's own (``"own"``).
    ``probe`` reads counters (stub calls, node fallbacks) before and after each measured run; the
    differences go into the run's ``counters``. ``settle`` runs before each measured run (after the
    warm-up) and may raise :class:`NotClean`, which is recorded in the run as ``unsettled``. ``rewrites``
    (:func:`aof_rewrites`) marks a run that an AOF rewrite overlapped: a child process writing the whole
    dataset takes most of a core from the two the run shares. ``stalls`` (:func:`redis_stalls`) records what
    Redis itself stalled on during each run, in the run's ``redis_stalls_ms``: a latency tail with none was not
    Redis's. ``watched``: whose CPU each run reads (:class:`Spend`)."""

    def say(msg: str, overlapped: bool = False, redis_stalled: dict[str, int] | None = None) -> None:
        note = " [an AOF rewrite overlapped this run]" if overlapped else ""
        if redis_stalled:
            note += " [Redis stalled: " + ", ".join(f"{k} {v} ms" for k, v in sorted(redis_stalled.items())) + "]"
        print(f"  {target.name}: {msg}{note}", file=sys.stderr)

    def stalled() -> dict[str, int]:
        return stalls() if stalls is not None else {}

    def overlapped(before: tuple[int, bool] | None) -> bool:
        return _rewrite_since(rewrites, before)

    def settled() -> dict[str, str]:
        try:
            if settle is not None:
                settle()
        except scenario_setup.NotClean as exc:
            say(f"did not settle before the run: {exc}")
            return {"unsettled": str(exc)}
        return {}

    wrk(port, target, args.warmup, args)
    unsettled = settled()
    before = probe() if probe else {}
    aof = rewrites() if rewrites else None
    stalled()
    with Spend(watched) as spent:
        sat = wrk(port, target, args.duration, args) | unsettled
    sat |= spent.summary(sat["requests"])
    sat["aof_rewrite"] = overlapped(aof)
    sat["redis_stalls_ms"] = stalled()
    if probe:
        sat["counters"] = _delta(before, before := probe())
    events = f" ({sat['events_per_s']:.0f} events/s)" if target.path == "/v1/events" else ""
    say(
        f"saturation {sat['rps']:.0f} req/s{events}, p99 {sat['p99_ms']} ms", sat["aof_rewrite"], sat["redis_stalls_ms"]
    )
    fixed = []
    for run, (frac, basis) in enumerate(fractions, 1):
        base = floor_rps if basis == "floor" and floor_rps is not None else sat["rps"]
        rate = max(1.0, round(base * frac))
        bodies = target.bodies(min(MAX_OPEN_LOOP_BODIES, int(rate * (args.warmup + args.duration)) + 1), run)
        unsettled = settled()
        if probe:
            before = probe()
        aof = rewrites() if rewrites else None
        stalled()
        result = observed_open_loop(port, target, bodies, rate, args, watched) | unsettled
        result["aof_rewrite"] = overlapped(aof)
        result["redis_stalls_ms"] = stalled()
        if probe:
            result["counters"] = _delta(before, before := probe())
        result |= {"fraction": frac, "fraction_of": basis}
        fixed.append(result)
        say(
            f"{rate:.0f} req/s open loop → p99 {result['p99_ms']} ms, p99.9 {result['p99.9_ms']} ms "
            f"(sent late by up to {result['late_max_ms']} ms, p99 {result['late_p99_ms']}){_warmup_note(result)}"
            f"{_cpu_note(result)}{_pause_note(result)}",
            result["aof_rewrite"],
            result["redis_stalls_ms"],
        )
    return {"batch": target.batch, "saturation": sat, "fixed_rate": fixed}


def paired(
    floor: Target,
    floor_port: int,
    decide: Target,
    decide_port: int,
    args: argparse.Namespace,
    rewrites: Callable[[], tuple[int, bool]] | None = None,
) -> list[dict[str, Any]]:
    """``--pairs`` back-to-back saturation runs of the floor and decide, in alternating order.

    The VM this is developed on drifts by 10-20 % within minutes, for every process alike; one floor run and
    one decide run minutes apart can move their ratio by that much. Runs a few seconds apart share the
    machine's state, and alternating which goes first cancels a steady drift across a pair. A pair that an AOF
    rewrite overlapped is marked (see :func:`measure`)."""
    out = []
    for i in range(args.pairs):
        order = [(floor, floor_port), (decide, decide_port)]
        rps = {}
        before = rewrites() if rewrites else None
        for target, port in order if i % 2 == 0 else order[::-1]:
            wrk(port, target, 1, args)
            rps[target.name] = wrk(port, target, args.pair_duration, args)["rps"]
        rewrite = _rewrite_since(rewrites, before)
        ratio = round(rps["decide"] / rps["floor"], 3) if rps["floor"] else 0.0
        out.append({"first": order[0 if i % 2 == 0 else 1][0].name, **rps, "ratio": ratio, "aof_rewrite": rewrite})
        say = f"  pair {i + 1}: floor {rps['floor']:.0f}, decide {rps['decide']:.0f} req/s → {ratio:.2f}"
        print(say + (" [an AOF rewrite overlapped this pair]" if rewrite else ""), file=sys.stderr)
    return out


TARGET_P99_MS = 5.0
"""Issue 7's latency target: decide's p99 at half the floor's saturation."""


def target_check(
    floor: Target,
    floor_port: int,
    decide: Target,
    decide_port: int,
    args: argparse.Namespace,
    settle: Callable[[], object] | None = None,
    rewrites: Callable[[], tuple[int, bool]] | None = None,
    stalls: Callable[[], dict[str, int]] | None = None,
    watched: Watched | None = None,
) -> list[dict[str, Any]]:
    """``--target-runs`` times: the floor's saturation (``--pair-duration``), then decide open loop at half of it for
    ``--duration``. The target is p99 at that rate, and one run of 10 s on a shared VM is a coin toss (a stall of 20
    ms near decide's capacity queues for a tenth of a second), so it is measured several times, each against a floor
    measured seconds before, and reported run by run with how many met it."""
    out = []
    for i in range(args.target_runs):
        wrk(floor_port, floor, 1, args)
        floor_rps = float(wrk(floor_port, floor, args.pair_duration, args)["rps"])
        rate = max(1.0, round(floor_rps / 2))
        try:
            if settle is not None:
                settle()
            unsettled = {}
        except scenario_setup.NotClean as exc:
            unsettled = {"unsettled": str(exc)}
        before = rewrites() if rewrites else None
        if stalls is not None:
            stalls()
        bodies = decide.bodies(min(MAX_OPEN_LOOP_BODIES, int(rate * (args.warmup + args.duration)) + 1), 100 + i)
        run = observed_open_loop(decide_port, decide, bodies, rate, args, watched) | unsettled
        run |= {
            "floor_rps": floor_rps,
            "aof_rewrite": _rewrite_since(rewrites, before),
            "redis_stalls_ms": stalls() if stalls is not None else {},
            "met": run["p99_ms"] <= TARGET_P99_MS and not run["errors"] and not run["timeouts"],
        }
        out.append(run)
        note = " [an AOF rewrite overlapped this run]" if run["aof_rewrite"] else ""
        print(
            f"  target check {i + 1}: floor {floor_rps:.0f} req/s, decide at {rate:.0f}/s → p99 {run['p99_ms']} ms, "
            f"p99.9 {run['p99.9_ms']} ms{_warmup_note(run)}{_cpu_note(run)}{_pause_note(run)}{note}",
            file=sys.stderr,
        )
    return out


def profile_at_target(
    decide: Target,
    decide_port: int,
    floor_port: int,
    checks: list[dict[str, Any]],
    args: argparse.Namespace,
    settle: Callable[[], object],
) -> dict[str, Any]:
    """Where decide's and the floor's CPU goes at the target check's rate (half the floor's saturation, the median of
    its runs), sampled with perf (benchmarks/profile.py): what stands in the way of the target, in µs a request."""
    if not checks:
        return {"skipped": "no target check ran (--target-runs 0)"}
    rate = max(1.0, round(statistics.median(c["floor_rps"] for c in checks) / 2))
    with contextlib.suppress(scenario_setup.NotClean):  # the target check says when a run started unsettled
        settle()
    found = profile.side_by_side(
        [("decide", decide_port), ("floor", floor_port)], rate, duration_s=args.duration, warmup_s=args.warmup,
        guests=args.guests, path=decide.path, api_key=PUBLIC_KEY,
    )  # fmt: skip
    done = f"decide and the floor profiled at {rate:.0f}/s (the table is in the report)"
    print(f"  {done if 'table' in found else 'no profile at the target rate: ' + found['skipped']}", file=sys.stderr)
    return found


def _pause_note(run: dict[str, Any]) -> str:
    pauses = run.get("box_pauses") or {}
    if not pauses.get("late_over_5ms"):
        return ""
    return f" [the machine paused: up to {pauses['max_ms']} ms, {pauses['late_over_5ms']} times over 5 ms]"


def _cpu_note(run: dict[str, Any]) -> str:
    if not run.get("server_cpu"):
        return ""
    return (
        f"; the server (share of a core, CPU a request, waited for a core): {load_report.busy(run)}; "
        f"Redis {run.get('redis_cpu_us_per_request')} µs a request"
    )


def _warmup_note(run: dict[str, Any]) -> str:
    if not run.get("warmup_s"):
        return ""
    return f"; its {run['warmup_s']:g} s warm-up: p99 {run['warmup_p99_ms']} ms, max {run['warmup_max_ms']} ms"


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def decide_counters(stub_port: int, arbiter_port: int, workers: int) -> dict[str, int]:
    """Calls the stub has answered, node fallbacks by ``node reason``, and event-loop lag-watch ticks, late
    ones by threshold (all workers' registries seen)."""
    counters = {"stub_calls": int(orjson.loads(_http.get(stub_port, "/stats"))["calls"])}
    scraped = load_report.scrape(arbiter_port, workers, MODEL)
    for f in scraped["fallbacks"]:
        counters[f"{f['node']} {f['reason']}"] = f["count"]
    counters.update(scraped["loop_lag"])  # "loop ticks", "loop late >5 ms", …: differences per run
    return counters


def require_events_accepted(port: int, targets: list[Target]) -> None:
    for target in targets:
        status, answer = _http.call(port, "POST", target.path, target.bodies(1, 0)[0], key=PUBLIC_KEY)
        if status != 201:
            raise SystemExit(f"{target.name}: POST {target.path} answered {status}: {answer[:300]!r}")


def _events_source(guests: int, batch: int) -> Callable[[int, int], list[bytes]]:
    return lambda n, run: event_bodies(n, guests, batch=batch, run=run)


def targets(args: argparse.Namespace) -> tuple[Target, Target, list[Target]]:
    """The floor, decide, and events one at a time then ``--event-batch`` at a time (if that is not 1)."""
    decide = decide_bodies(10_000, args.guests)
    path = f"/v1/decide/{MODEL}"
    wrk_args = ("decide", MODEL, str(args.guests))
    floor = Target("floor", path, wrk_args, lambda n, run: decide)
    arbiter = Target("decide", path, wrk_args, lambda n, run: decide)
    events = [
        Target(
            "events" if batch == 1 else f"events ×{batch}",
            "/v1/events",
            ("events", "-", str(args.guests), str(batch)),
            _events_source(args.guests, batch),
            batch,
            batch,
        )
        for batch in dict.fromkeys((1, args.event_batch))
    ]
    return floor, arbiter, events


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "workers": args.workers,
        "guests": args.guests,
        "duration_s": args.duration,
        "redis_profile": args.redis_profile,
    }
    floor_target, decide_target, event_targets = targets(args)
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-") as tmp:
        workdir = Path(tmp)
        with servers.running_redis(workdir, args.redis_profile) as url:
            report["seed"] = seed(url, args.guests, args.session_events)
            print(f"seeded {args.guests} guests in {report['seed']['seconds']} s", file=sys.stderr)
            with (
                servers.running_floor(workdir, url, args.workers) as floor,
                servers.running_stub(workdir, args.stub_delay_ms) as stub,
                servers.running_arbiter(workdir, url, args.workers) as arbiter,
            ):
                # All three run from here on; each target is measured while the others idle.
                rewrites = functools.partial(aof_rewrites, url)
                stalls = functools.partial(redis_stalls, url)
                report["floor"] = measure(
                    floor_target,
                    floor.port,
                    args,
                    [(f, "floor") for f in args.fractions],
                    rewrites=rewrites,
                    stalls=stalls,
                    watched=Watched(floor.pid, url),
                )
                floor_rps = float(report["floor"]["saturation"]["rps"])
                report["scenario"] = scenario_setup.install(arbiter.port, stub.port, ADMIN_KEY)
                check = functools.partial(scenario_setup.check, arbiter.port, PUBLIC_KEY, decide_target.bodies(0, 0))
                try:
                    report["scenario"]["decisions_checked"] = check()["decisions_checked"]
                except scenario_setup.NotClean as exc:
                    raise SystemExit(f"not measuring: {exc}") from None
                probe = functools.partial(decide_counters, stub.port, arbiter.port, args.workers)
                fractions = [(f, "floor") for f in args.fractions] + [(f, "own") for f in args.own_fractions]
                on_arbiter = Watched(arbiter.pid, url)
                report["decide"] = measure(
                    decide_target, arbiter.port, args, fractions, floor_rps, probe, check, rewrites, stalls, on_arbiter
                )
                report["metrics"] = load_report.scrape(arbiter.port, args.workers, MODEL)
                # Before the events runs, which grow the guests that decide reads.
                report["pairs"] = paired(floor_target, floor.port, decide_target, arbiter.port, args, rewrites)
                report["target_check"] = target_check(
                    floor_target, floor.port, decide_target, arbiter.port, args, check, rewrites, stalls, on_arbiter
                )
                if args.profile:
                    report["profile_at_target"] = profile_at_target(
                        decide_target, arbiter.port, floor.port, report["target_check"], args, check
                    )
                require_events_accepted(arbiter.port, event_targets)
                for target in event_targets:
                    key = "events" if target.batch == 1 else "events_batch"
                    fixed = [(f, "own") for f in args.fractions]
                    report[key] = measure(
                        target, arbiter.port, args, fixed, rewrites=rewrites, stalls=stalls, watched=on_arbiter
                    )
    report["ratios"] = load_report.ratios(report, scenario_setup.EXTERNAL_NODE)
    return report


def serve(args: argparse.Namespace) -> int:
    """Everything ``run_all`` sets up, then wait (Ctrl-C): for locust or a hand-driven session."""
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-") as tmp:
        workdir = Path(tmp)
        with servers.running_redis(workdir, args.redis_profile) as url:
            seed_guests(url, args.guests, session_events=args.session_events)
            with (
                servers.running_stub(workdir, args.stub_delay_ms) as stub,
                servers.running_arbiter(workdir, url, args.workers) as arbiter,
            ):
                scenario_setup.install_checked(
                    arbiter.port, stub.port, ADMIN_KEY, PUBLIC_KEY, decide_bodies(100, args.guests)
                )
                print(
                    f"arbiter on http://{LOOPBACK}:{arbiter.port} (public key {PUBLIC_KEY}, admin key {ADMIN_KEY}), "
                    f"{args.guests} guests, model '{MODEL}'; e.g.\n  BENCH_GUESTS={args.guests} "
                    f"locust -f benchmarks/locustfile.py --host http://{LOOPBACK}:{arbiter.port}\nCtrl-C stops it.",
                    flush=True,
                )
                try:
                    signal.pause()
                except KeyboardInterrupt:
                    pass
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # A harness killed by SIGTERM (make, a CI timeout) still unwinds its ``with`` blocks: no orphans.
    raise SystemExit(128 + signum)


def _fractions(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load before measuring: wrk before a saturation run; each open-loop run's first seconds, at "
        "its rate, reported apart (benchmarks/openloop.py)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        help=f"wrk connections at saturation (default {CONNECTIONS_PER_WORKER} per worker: see CONNECTIONS_PER_WORKER)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--session-events",
        type=int,
        default=Limits().max_closed_session_events,
        help="page views kept in each guest's newest sessions, at most (0: sessions without events)",
    )
    parser.add_argument("--event-batch", type=int, default=20, help="events per request in the batched runs")
    parser.add_argument("--stub-delay-ms", type=float, default=0.0, help="delay the stub adds per call")
    parser.add_argument(
        "--fractions",
        type=_fractions,
        default=[0.25, 0.5],
        help="open-loop rates: fractions of the floor's saturation (floor, decide) or of the target's own (events)",
    )
    parser.add_argument(
        "--own-fractions",
        type=_fractions,
        default=[0.5, 0.7],
        help="more decide open-loop rates, as fractions of decide's own saturation: half, and the share of its "
        "capacity half the floor's saturation would be were decide at 0.7 of the floor (what the p99 target needs)",
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="back-to-back floor/decide saturation runs, for the throughput ratio"
    )
    parser.add_argument("--pair-duration", type=float, default=5.0, help="seconds per run of a pair")
    parser.add_argument(
        "--target-runs",
        type=int,
        default=3,
        help="times to measure decide's p99 at half the floor's saturation, each after a fresh floor saturation run",
    )
    parser.add_argument(
        "--redis-profile",
        choices=sorted(servers.REDIS_PROFILES),
        default="default",
        help="the harness Redis's settings: default (Redis's automatic AOF rewrites) or production "
        "(docs/operations.md: rewrites scheduled, not automatic)",
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the target check, sample decide and the floor with perf at its rate (benchmarks/profile.py); "
        "skipped, with the reason in the report, where perf is missing or may not sample",
    )
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--serve", action="store_true", help="set up and wait instead of measuring (for locust)")
    args = parser.parse_args(argv)
    if args.connections is None:
        args.connections = CONNECTIONS_PER_WORKER * args.workers
    if not 1 <= args.event_batch <= 500:
        parser.error("--event-batch must be from 1 to 500 (the engine's max_batch_events)")
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if args.serve:
            return serve(args)
        report = run_all(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(load_report.render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
