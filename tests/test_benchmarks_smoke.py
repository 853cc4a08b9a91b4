"""The load harness at toy scale, so it does not rot: it must produce a well-formed report.

No timings are asserted (benchmarks/RESULTS.md holds the numbers); only the report's shape, and that the
scenario really exercises every node kind it claims (script, external with cache, experiment) and both
ways of sending events.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
from pathlib import Path

import httpx
import pytest
import redis

from benchmarks import history, inprocess, instructions, load_report, loadtest, servers

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")]


def test_load_harness_reports(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["--guests", "300", "--duration", "1", "--warmup", "1", "--connections", "4", "--fractions", "0.1"]
    args += ["--own-fractions", "0.2", "--pairs", "2", "--pair-duration", "1"]
    args += ["--redis-profile", "production", "--target-runs", "2"]
    assert loadtest.main([*args, "--workers", "1", "--event-batch", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["redis_profile"] == "production"
    for target in ("floor", "decide", "events", "events_batch"):
        sat = report[target]["saturation"]
        assert sat["requests"] > 0 and sat["non2xx"] == 0
        runs = report[target]["fixed_rate"]
        for fixed in runs:
            assert fixed["sent"] > 0 and fixed["errors"] == 0 and fixed["timeouts"] == 0
            assert {"p50_ms", "p90_ms", "p99_ms", "p99.9_ms"} <= fixed.keys()
            assert 0 <= fixed["late_p99_ms"] <= fixed["late_max_ms"] <= fixed["max_ms"]
            assert isinstance(fixed["redis_stalls_ms"], dict)
            # Each open-loop run warmed up at its rate first (--warmup), its figures apart.
            assert fixed["warmup_s"] == 1 and fixed["warmup_errors"] == 0
            assert 0 < fixed["warmup_p99_ms"] <= fixed["warmup_max_ms"]
            # A probe watched the machine through the run (benchmarks/hiccup.py): ~1,000 wake-ups a second.
            pauses = fixed["box_pauses"]
            assert pauses["probes"] > 500 * pauses["seconds"] > 0 and pauses["max_ms"] >= 0
            # The driven server's CPU over the run (benchmarks/cpu.py): it answered, so it ran.
            used = fixed["server_cpu"]
            assert used["processes"] >= 1 and used["cpu_us_per_request"] > 0 and used["runqueue_wait_ms"] >= 0
            assert 0 < used["cores_busy"] <= 2.2 and fixed["redis_cpu_us_per_request"] > 0
        assert isinstance(sat["redis_stalls_ms"], dict)
        assert sat["server_cpu"]["cpu_us_per_request"] > 0 and sat["redis_cpu_us_per_request"] > 0
        bases = {"floor": ["floor"], "decide": ["floor", "own"]}.get(target, ["own"])
        assert [f["fraction_of"] for f in runs] == bases
    assert report["events_batch"]["batch"] == 5
    batch_sat = report["events_batch"]["saturation"]
    assert batch_sat["events_per_s"] == pytest.approx(batch_sat["rps"] * 5, rel=0.01)
    assert report["scenario"]["decisions_checked"] >= 20
    assert report["ratios"]["decide_over_floor_throughput"] > 0
    # Back-to-back pairs alternate which target goes first; the ratio is their median.
    assert [p["first"] for p in report["pairs"]] == ["floor", "decide"]
    assert all(p["floor"] > 0 and p["decide"] > 0 for p in report["pairs"])
    paired = report["ratios"]["decide_over_floor_throughput_paired"]
    assert paired["ratios"] == [p["ratio"] for p in report["pairs"]] and min(paired["ratios"]) <= paired["median"]
    kinds = {n["kind"] for n in report["metrics"]["nodes"]}
    assert kinds >= {"expression", "table", "rule", "offers", "script", "external", "experiment", "output"}
    assert report["metrics"]["workers_seen"] == 1
    assert all(0 <= c["hit_rate_min"] <= 1 for c in report["ratios"]["cache"])
    # The worker's lag watch ticked through every decide run (~20 ticks a second), counted per run.
    assert all(c["loop"]["loop ticks"] >= 10 for c in report["ratios"]["cache"])
    assert all(0 <= c["loop"]["loop late >5 ms"] <= c["loop"]["loop ticks"] for c in report["ratios"]["cache"])
    assert report["metrics"]["loop_lag"]["loop ticks"] > 0
    rendered = load_report.render(report)
    assert "of own sat." in rendered and "ticks due every 50 ms" in rendered and "back-to-back pairs" in rendered
    assert "sent late p99 / max ms" in rendered and "Redis profile production" in rendered
    # The p99 target, measured twice, each at half of a floor saturation run made just before it.
    checks = report["target_check"]
    assert len(checks) == 2 and all(c["sent"] > 0 and c["floor_rps"] > 0 for c in checks)
    assert all(c["target_rps"] == max(1.0, round(c["floor_rps"] / 2)) for c in checks)
    assert all(c["met"] == (c["p99_ms"] <= 5.0 and not c["errors"] and not c["timeouts"]) for c in checks)
    assert all(c["warmup_s"] == 1 and c["warmup_max_ms"] > 0 for c in checks)
    assert "measured 2 times" in rendered and "the warm-ups' p99 / max" in rendered
    assert "the generator itself sent late by up to" in rendered and "machine paused, max ms" in rendered
    assert all(c["box_pauses"]["probes"] > 0 for c in checks)
    assert all(c["server_cpu"]["cpu_us_per_request"] > 0 for c in checks)
    assert "decide's server in those runs" in rendered and "waited for a core" in rendered
    # Then decide and the floor sampled at that rate (benchmarks/profile.py), or the reason there is no profile.
    profiled = report["profile_at_target"]
    if "skipped" in profiled:
        assert "perf" in profiled["skipped"] and "no profile at the target's rate" in rendered
    else:
        assert profiled["rate"] == max(1.0, round(statistics.median(c["floor_rps"] for c in checks) / 2))
        assert [p["label"] for p in profiled["profiles"]] == ["decide", "floor"]
        assert all(p["cpu_us_per_request"] > 0 and p["requests"] > 0 for p in profiled["profiles"])
        assert "where a request's CPU goes at" in rendered and "Python interpreter (CPython)" in rendered


@pytest.mark.parametrize("profile", ["default", "production"])
def test_the_harness_redis_runs_with_its_profile(tmp_path: Path, profile: str) -> None:
    with servers.running_redis(tmp_path, profile) as url:
        client = redis.Redis.from_url(url)
        try:
            min_size = int(client.config_get("auto-aof-rewrite-min-size")["auto-aof-rewrite-min-size"])
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        finally:
            client.close()
    # Redis's own default rewrites from 64 MB; the production profile leaves rewrites to a schedule.
    assert min_size == (64 << 20 if profile == "default" else 16 << 30)


def test_history_harness_reports_a_row_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    def sizes_kb(budget: int) -> list[float]:
        small = ["--steps", "1", "3", "6", "--events-per-session", "10", "--events", "3"]
        assert history.main([*small, "--closed-budget", str(budget)]) == 0
        rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
        assert [int(r[0]) for r in rows] == [1, 3, 6]
        assert all(float(r[2]) > 0 and float(r[3]) > 0 and float(r[4]) > 0 for r in rows)
        return [float(r[1]) for r in rows]

    kept, unbounded = sizes_kb(5), sizes_kb(1_000_000)
    assert kept[0] == unbounded[0]  # one session: nothing closed yet
    assert unbounded[2] > 2 * kept[2]  # six sessions: the budget keeps 5 closed events, not 50


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counter_reports(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ARBITER_REDIS_URL", "ARBITER_PUBLIC_KEY", "ARBITER_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)  # in_process_app sets them; restored after the test
    model = {"nodes": [{"id": "answer", "kind": "output", "value": {"greeting": '"hello"'}}]}

    async def publish() -> None:
        app = inprocess.in_process_app(redis_url)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://arbiter") as client:
                reply = await client.put(
                    "/v1/models/tiny?publish=1", json=model, headers={"x-api-key": inprocess.ADMIN_KEY}
                )
                assert reply.status_code == 201, reply.text

    asyncio.run(publish())
    assert instructions.main(["--redis", redis_url, "--model", "tiny", "--small", "50", "--large", "300"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("tiny: ") and line.endswith(" instructions per decision")
    assert int(line.split()[1].replace(",", "")) > 10_000  # a decision is more than a few thousand instructions
    assert instructions.main(["--redis", redis_url, "--events", "--small", "50", "--large", "300"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("events: ") and line.endswith(" instructions per event")
    assert int(line.split()[1].replace(",", "")) > 10_000
    assert (
        instructions.main(["--redis", redis_url, "--floor", "--guests", "300", "--small", "50", "--large", "300"]) == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("floor: ") and line.endswith(" instructions per request")
    assert int(line.split()[1].replace(",", "")) > 10_000


def test_memory_report_files_attribution_units_by_minute(redis_url: str) -> None:
    from benchmarks.memory import unit_memory

    report = unit_memory(redis_url, 3_000, 10.0)  # five minutes of decisions: 40 minute hashes, 3 arm tallies
    assert report["units"] == 3_000 and report["redis_bytes_per_unit"] > 0
    assert report["keys"] <= 6 * 8 + 3  # a key per minute hash, not per unit


def test_redis_stalls_reads_what_redis_stalled_on_and_starts_afresh(redis_url: str) -> None:
    """The harness marks each run with Redis's own stalls (its latency monitor), to tell a tail Redis caused."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.config_set("latency-monitor-threshold", 5)
        loadtest.redis_stalls(redis_url)  # whatever earlier tests left
        busy = (
            "local t = redis.call('TIME'); local t0 = t[1] * 1e6 + t[2]; "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - t0 > 30000"
        )
        client.eval(busy, 0)  # a 30 ms command (DEBUG SLEEP is refused by default)
        stalls = loadtest.redis_stalls(redis_url)
        assert stalls.get("command", 0) >= 25
        assert loadtest.redis_stalls(redis_url) == {}  # read once, then reset
    finally:
        client.config_set("latency-monitor-threshold", 0)
        client.close()
