"""The load harness's report: server-side timings from ``/metrics``, ratios to the floor, and the tables.

Each uvicorn worker keeps its own Prometheus registry and ``/metrics`` shows the one whose process accepted
the scrape's connection. :func:`scrape` therefore scrapes several times on fresh connections, tells the
registries apart by the worker's pid (``arbiter_worker_start_time_seconds``), and sums those it saw; the report
says how many of the workers that was.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from benchmarks import _http

DECISION = "(decision: fetch+evaluate)"
SCRAPES_PER_WORKER = 8
_SAMPLE = re.compile(
    r"^(arbiter_(?:node|decision)_seconds_(?:sum|count)|arbiter_node_errors_total)\{([^}]*)\} (\S+)$", re.M
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_WORKER = re.compile(r'^arbiter_worker_start_time_seconds\{pid="([^"]+)"\}', re.M)
_LAG = re.compile(r'^arbiter_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
LATE_MS = (5, 25, 100)
"""Event-loop lag thresholds the report counts late ticks over (each a bucket bound of the engine's histogram)."""
TICKS, LATE = "loop ticks", {ms: f"loop late >{ms} ms" for ms in LATE_MS}
"""The counter names of the lag-watch ticks, and of those late by more than each threshold."""


@dataclass(slots=True)
class Registry:
    """One worker's numbers for one model."""

    sums_s: dict[tuple[str, str], float] = field(default_factory=dict)
    counts: dict[tuple[str, str], float] = field(default_factory=dict)
    fallbacks: dict[tuple[str, str], float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    """The worker's event-loop lag histogram: cumulative tick counts by upper bound (``le``)."""
    worker: str = ""
    """The worker's pid: which registry this is (its counts change while it drains requests still queued)."""


def parse(text: str, model: str) -> Registry:
    found = _WORKER.search(text)
    reg = Registry(worker=found.group(1) if found else "")
    for name, labels, value in _SAMPLE.findall(text):
        lab = dict(_LABEL.findall(labels))
        if lab.get("model") != model:
            continue
        if name == "arbiter_node_errors_total":
            reg.fallbacks[(lab["node"], lab["reason"])] = float(value)
            continue
        key = (lab["node"], lab["kind"]) if name.startswith("arbiter_node") else (DECISION, "-")
        (reg.sums_s if name.endswith("_sum") else reg.counts)[key] = float(value)
    reg.lag = {le: float(n) for le, n in _LAG.findall(text)}
    return reg


def scrape(port: int, workers: int, model: str) -> dict[str, Any]:
    """Per-node count and mean, and fallbacks per node and reason, summed over the workers' registries seen."""
    seen: dict[str, Registry] = {}
    for _ in range(SCRAPES_PER_WORKER * workers):
        reg = parse(_http.get(port, "/metrics").decode(), model)
        seen.setdefault(reg.worker, reg)
        if len(seen) >= workers:
            break
    counts: dict[tuple[str, str], float] = {}
    sums_s: dict[tuple[str, str], float] = {}
    fallbacks: dict[tuple[str, str], float] = {}
    lag: dict[str, float] = {}
    for reg in seen.values():
        for total, part in ((counts, reg.counts), (sums_s, reg.sums_s), (fallbacks, reg.fallbacks), (lag, reg.lag)):
            for key, value in part.items():
                total[key] = total.get(key, 0.0) + value
    nodes = [
        {"node": n, "kind": k, "count": int(c), "mean_us": round(sums_s.get((n, k), 0.0) / c * 1e6, 1)}
        for (n, k), c in sorted(counts.items())
        if c
    ]
    return {
        "workers": workers,
        "workers_seen": len(seen),
        "nodes": nodes,
        "fallbacks": [{"node": n, "reason": r, "count": int(c)} for (n, r), c in sorted(fallbacks.items()) if c],
        "loop_lag": late_ticks(lag),
    }


def late_ticks(lag: dict[str, float]) -> dict[str, int]:
    """Lag-watch ticks, and how many ran more than each of ``LATE_MS`` late (from the cumulative buckets)."""
    ticks = int(lag.get("+Inf", 0))
    out = {TICKS: ticks}
    for ms, name in LATE.items():
        on_time = lag.get(repr(ms / 1000))
        if on_time is not None:
            out[name] = ticks - int(on_time)
    return out


def _cache(run: dict[str, Any], decisions: int, node: str) -> dict[str, Any]:
    """The external node's cache in one run. Hits are not counted by the engine; what is known is the calls
    the stub answered and the node's fallbacks, each of which is a decision that was not a hit. A timed-out
    call can be both (a call and a fallback), so ``hit_rate_min`` is a lower bound; without fallbacks it is
    exact up to retries."""
    counters = run.get("counters", {})
    calls = int(counters.get("stub_calls", 0))
    fallbacks = {k.split(" ", 1)[1]: v for k, v in counters.items() if k.startswith(f"{node} ")}
    hits_min = max(0, decisions - calls - sum(fallbacks.values()))
    rate = round(hits_min / decisions, 4) if decisions else None
    # Per-run differences leave out what did not change: no late tick is a zero, not a missing number.
    late = {k: int(counters.get(k, 0)) for k in (TICKS, *LATE.values())}
    return {"decisions": decisions, "stub_calls": calls, "fallbacks": fallbacks, "hit_rate_min": rate, "loop": late}


def ratios(report: dict[str, Any], external_node: str) -> dict[str, Any]:
    """Arbiter against the floor (throughput at saturation, latency at the same offered rates), and the
    external node's cache per decide run."""
    floor, decide = report["floor"], report["decide"]
    floor_rps = floor["saturation"]["rps"]
    shared = [d for d in decide["fixed_rate"] if d["fraction_of"] == "floor"]
    out: dict[str, Any] = {
        "decide_over_floor_throughput": round(decide["saturation"]["rps"] / floor_rps, 3),
        "decide_over_floor_latency": [
            {
                "rate": d["target_rps"],
                "p50": round(d["p50_ms"] / f["p50_ms"], 2),
                "p99": round(d["p99_ms"] / f["p99_ms"], 2),
                "p99.9": round(d["p99.9_ms"] / f["p99.9_ms"], 2),
            }
            for f, d in zip(floor["fixed_rate"], shared, strict=True)
        ],
        "cache": [_cache(decide["saturation"], decide["saturation"]["requests"], external_node)]
        + [{"rate": d["target_rps"], **_cache(d, d["sent"], external_node)} for d in decide["fixed_rate"]],
    }
    pairs = [p["ratio"] for p in report.get("pairs", [])]
    if pairs:
        out["decide_over_floor_throughput_paired"] = {"ratios": pairs, "median": statistics.median(pairs)}
    for key in ("events", "events_batch"):
        if key in report:
            out[f"{key}_per_s_over_floor_rps"] = round(report[key]["saturation"]["events_per_s"] / floor_rps, 3)
    return out


def _row(name: str, load: str, rps: float, events_per_s: str, run: dict[str, Any], lost: int) -> str:
    if run.get("unsettled"):
        load += ", started unsettled"
    ms = " | ".join(f"{run[p]:.2f}" for p in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"))
    late = f"{run['late_p99_ms']:.2f} / {run['late_max_ms']:.2f}" if "late_max_ms" in run else "–"  # open loop only
    return f"| {name} | {load} | {rps:.0f} | {events_per_s} | {ms} | {late} | {_paused(run)} | {busy(run)} | {lost} |"


def busy(run: dict[str, Any]) -> str:
    """The driven server's CPU in a run and its wait for a core (benchmarks/cpu.py), or – where not read."""
    used = run.get("server_cpu")
    if not used or used.get("cpu_us_per_request") is None:  # nothing read, or nothing answered
        return "–"
    return f"{used['cores_busy']:.0%}, {used['cpu_us_per_request']:.0f} µs, {used['runqueue_wait_ms']:.0f} ms"


def _paused(run: dict[str, Any]) -> str:
    """The machine's longest pause during an open-loop run (benchmarks/hiccup.py), or – where not probed."""
    pauses = run.get("box_pauses")
    return f"{pauses['max_ms']:.1f}" if pauses else "–"


def _rows(name: str, r: dict[str, Any]) -> list[str]:
    def events(run: dict[str, Any]) -> str:
        return f"{run['events_per_s']:.0f}" if name.startswith("events") else "–"

    s = r["saturation"]
    load = f"saturation (wrk, closed loop, {s['connections']} conn.)"
    rows = [_row(name, load, s["rps"], events(s), s, s["non2xx"] + s["socket_errors"])]
    for f in r["fixed_rate"]:
        basis = "floor sat." if f["fraction_of"] == "floor" else "own sat."
        load = f"{f['target_rps']:.0f}/s open loop ({f['fraction']:.0%} of {basis})"
        rows.append(_row(name, load, f["achieved_rps"], events(f), f, f["errors"] + f["timeouts"]))
    return rows


def render(report: dict[str, Any]) -> str:
    sc, ra, me = report["scenario"], report["ratios"], report["metrics"]
    lines = [
        f"workers={report['workers']} guests={report['guests']} duration={report['duration_s']}s per run, "
        f"Redis profile {report.get('redis_profile', 'default')}; "
        f"model {sc['model']} v{sc['version']} (connection {sc['connection']}, experiment {sc['experiment']}), "
        f"{sc['decisions_checked']} explained decisions checked clean before measuring",
        "",
        "| target | load | achieved req/s | events/s accepted | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
        "| sent late p99 / max ms | machine paused, max ms | server: share of a core, CPU a request, waited for a core "
        "| non-2xx / lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"floor": "floor", "decide": "decide", "events": "events"}
    if "events_batch" in report:
        names["events_batch"] = f"events ×{report['events_batch']['batch']}"
    for key, name in names.items():
        if key in report:
            lines += _rows(name, report[key])
    lines.append(f"\ndecide / floor throughput at saturation: {ra['decide_over_floor_throughput']:.2f}")
    if "decide_over_floor_throughput_paired" in ra:
        p = ra["decide_over_floor_throughput_paired"]
        each = ", ".join(f"{r:.2f}" for r in p["ratios"])
        lines.append(f"decide / floor throughput in back-to-back pairs: {each}; median {p['median']:.2f}")
    lines += _target_lines(report)
    for lat in ra["decide_over_floor_latency"]:
        ratio = ", ".join(f"{p} ×{lat[p]}" for p in ("p50", "p99", "p99.9"))
        lines.append(f"decide / floor latency at the same offered {lat['rate']:.0f}/s: {ratio}")
    for key in ("events", "events_batch"):
        if f"{key}_per_s_over_floor_rps" in ra:
            lines.append(
                f"{names[key]}: events/s accepted at saturation / floor req/s: {ra[f'{key}_per_s_over_floor_rps']:.2f}"
            )
    cache = ra["cache"]
    lines.append(
        "\nexternal node result cache, per decide run (hits ≥ decisions − stub calls − the node's fallbacks; "
        "fallbacks are not cached):"
    )
    for c, label in zip(cache, ["saturation", *(f"{c['rate']:.0f}/s open loop" for c in cache[1:])], strict=True):
        rate = "n/a" if c["hit_rate_min"] is None else f"≥ {c['hit_rate_min']:.2%}"
        falls = ", ".join(f"{r} × {n}" for r, n in sorted(c["fallbacks"].items())) or "none"
        lines.append(f"  {label}: hit rate {rate}; {c['decisions']} decisions, {c['stub_calls']} stub calls, "
                     f"fallbacks: {falls}")  # fmt: skip
    lines.append(
        f"\nthe worker's event loop during each decide run: ticks due every 50 ms that ran more than "
        f"{' / '.join(f'{ms}' for ms in LATE_MS)} ms late (arbiter_event_loop_lag_seconds; a late tick is a "
        "stall every request in flight shared):"
    )
    for c, label in zip(cache, ["saturation", *(f"{c['rate']:.0f}/s open loop" for c in cache[1:])], strict=True):
        loop = c.get("loop", {})
        late = " / ".join(str(loop.get(name, "?")) for name in LATE.values())
        lines.append(f"  {label}: {late} of {loop.get(TICKS, '?')} ticks")
    seen = f"{me['workers_seen']} of {me['workers']} workers' /metrics, summed"
    lines += ["", f"| node ({seen}) | kind | count | mean µs |", "|---|---|---:|---:|"]
    lines += [f"| {n['node']} | {n['kind']} | {n['count']} | {n['mean_us']} |" for n in me["nodes"]]
    if me["fallbacks"]:
        lines.append("\nnode fallbacks and errors since start-up, set-up check included (arbiter_node_errors):")
        lines += [f"  {f['node']}: {f['reason']} × {f['count']}" for f in me["fallbacks"]]
    else:
        lines.append("\nno node fallbacks or errors since start-up (arbiter_node_errors)")
    return "\n".join(lines)


def _target_lines(report: dict[str, Any]) -> list[str]:
    """The target check run by run, and the profile taken at its rate."""
    lines: list[str] = []
    checks = report.get("target_check", [])
    if checks:
        each = "; ".join(
            f"{c['p99_ms']:.1f}" + (" (AOF rewrite)" if c["aof_rewrite"] else "") + ("" if c["met"] else " ✗")
            for c in checks
        )
        p99s = [c["p99_ms"] for c in checks]
        lines.append(
            f"decide's p99 at half the floor's saturation, measured {len(checks)} times, each right after the floor "
            f"(target ≤ 5 ms): {each} ms; median {statistics.median(p99s):.1f} ms, met in "
            f"{sum(c['met'] for c in checks)} of {len(checks)}"
        )
        late = "; ".join(f"{c['late_max_ms']:.1f}" for c in checks)
        paused = "; ".join(_paused(c) for c in checks)
        lines.append(
            f"  in those runs the generator itself sent late by up to {late} ms, and the machine paused for up to "
            f"{paused} ms (benchmarks/hiccup.py: a lateness or a pause of tens of ms stalls every process, not only "
            "decide)"
        )
        if any(c.get("server_cpu") for c in checks):
            spent = "; ".join(busy(c) for c in checks)
            redis_us = "; ".join(f"{c.get('redis_cpu_us_per_request')}" for c in checks)
            lines.append(
                f"  decide's server in those runs (share of a core, CPU a request, time runnable but waiting for a "
                f"core; benchmarks/cpu.py): {spent}; Redis's CPU a request: {redis_us} µs"
            )
        if any(c.get("warmup_s") for c in checks):
            warm = "; ".join(f"{c['warmup_p99_ms']:.1f} / {c['warmup_max_ms']:.1f}" for c in checks)
            lines.append(
                f"  each after {checks[0]['warmup_s']:g} s at that rate, not measured above (a worker idle during the "
                f"floor's run answers slowly at first): the warm-ups' p99 / max: {warm} ms"
            )
    profiled = report.get("profile_at_target")
    if profiled and "table" in profiled:
        lines.append(
            f"where a request's CPU goes at {profiled['rate']:.0f}/s, the target check's rate (perf, "
            f"benchmarks/profile.py; decide, then the floor):\n{profiled['table']}"
        )
    elif profiled:
        lines.append(f"no profile at the target's rate: {profiled['skipped']}")
    return lines
