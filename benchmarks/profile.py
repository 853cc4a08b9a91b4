"""Where a server's CPU goes at a fixed request rate, native code and kernel included: µs a request by component.

The other tools each see part of a request: py-spy sees Python frames only (its samples in system calls and C
extensions are lost or lumped into the calling frame), valgrind counts instructions in process (no sockets, no
kernel, no cold caches), ``benchmarks.cpu`` gives the total a request costs. This one samples the server's workers
with ``perf`` (Linux; kernel stacks included) while the open-loop generator (benchmarks/openloop.py) drives them at
``--rate``, and splits the workers' CPU a request (read from the kernel's schedstat, as the harness does) by where
each sample fell: the CPython interpreter, the C extensions (Lua, uvloop, httptools, orjson, hiredis, decimal),
the C library, and the kernel by what it was doing for the worker (socket writes, which on loopback include the
receiver's side of TCP and waking it; socket reads; waiting in epoll; the rest).

``--compare PORT`` profiles a second server at the same rate right after (the floor, benchmarks/floor_app.py, for
"what does Arbiter add to the least a decide-shaped request costs"), and prints the two side by side.

    python -m benchmarks.profile --port DECIDE --compare FLOOR --rate 2400 --api-key bench-public

Needs ``perf`` (Debian: ``apt-get install linux-perf``) and the right to trace the workers (root, or
``kernel.perf_event_paranoid`` ≤ 1). The workers are found by the port they listen on (``ss``), or given by ``--pid``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import cpu, openloop
from benchmarks.data import decide_bodies, event_bodies

EVENTS_PATH = "/v1/events"
"""With ``--path /v1/events`` the requests are single events (benchmarks/data.py), each with a fresh ref."""
SAMPLE_HZ = 997
"""Not a round number: sampling in step with a periodic timer of the worker would over-count it."""

KERNEL = "[kernel.kallsyms]"
KERNEL_PARTS = (
    ("kernel: socket writes (TCP send, the receiver's side on loopback, waking it)", ("ksys_write", "__sys_sendto")),
    ("kernel: socket reads", ("ksys_read", "__sys_recvfrom")),
    ("kernel: waiting in epoll", ("do_epoll_wait",)),
)
"""Kernel work split by the system call it served (inclusive of what the call did); the rest is "kernel: other"."""

LIBRARIES = (
    ("Python interpreter (CPython)", re.compile(r"^(lib)?python3")),
    ("Lua scripts (lupa)", re.compile(r"^lua5")),
    ("event loop (uvloop)", re.compile(r"^loop\.")),
    ("HTTP parsing (httptools)", re.compile(r"^(parser|url_parser)\.")),
    ("JSON (orjson)", re.compile(r"^orjson\.")),
    ("Redis replies (hiredis)", re.compile(r"^hiredis\.")),
    ("decimal numbers (_decimal)", re.compile(r"^_decimal\.")),
    ("C library (malloc, memcpy…)", re.compile(r"^libc\.")),
)
OTHER = "other native code"
KERNEL_OTHER = "kernel: other (interrupts, scheduling…)"
COMPONENTS = (LIBRARIES[0][0], *(name for name, _ in KERNEL_PARTS), KERNEL_OTHER, *(n for n, _ in LIBRARIES[1:]), OTHER)
"""Report order."""

_ROW = re.compile(r"^\s*([\d.]+)%\s*\|\s*(?:([\d.]+)%\s*\|\s*)?(.*?)\s*$")


def parse_report(text: str) -> list[tuple[float, float | None, str]]:
    """``perf report --stdio -t '|'`` rows: (first percentage, second percentage or None, the rest)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        found = _ROW.match(line)
        if found:
            second = float(found.group(2)) if found.group(2) is not None else None
            rows.append((float(found.group(1)), second, found.group(3)))
    return rows


def shares(by_dso: Iterable[tuple[float, str]], kernel_children: dict[str, float]) -> dict[str, float]:
    """Percent of the samples per component, from each shared object's percent and the inclusive percent of the
    kernel's system-call entry points (``kernel_children``: symbol → %)."""
    out = dict.fromkeys(COMPONENTS, 0.0)
    kernel = 0.0
    for pct, dso in by_dso:
        if dso == KERNEL:
            kernel += pct
            continue
        name = next((label for label, pattern in LIBRARIES if pattern.search(dso)), OTHER)
        out[name] += pct
    rest = kernel
    for label, symbols in KERNEL_PARTS:
        part = min(rest, sum(kernel_children.get(s, 0.0) for s in symbols))
        out[label] = part
        rest -= part
    out[KERNEL_OTHER] = max(0.0, rest)
    return out


@dataclass(frozen=True)
class Load:
    """What a profiled server is driven with: ``rate`` requests a second to ``path`` for ``warmup_s`` + ``duration_s``
    (both sampled), over ``guests`` benchmark guests."""

    rate: float
    duration_s: float
    warmup_s: float
    guests: int
    path: str
    api_key: str

    @property
    def seconds(self) -> float:
        """How long it drives and samples."""
        return self.warmup_s + self.duration_s


@dataclass
class Profile:
    label: str
    requests: int
    cpu_us_per_request: float
    cores_busy: float
    p50_ms: float
    p99_ms: float
    percent: dict[str, float] = field(default_factory=dict)

    def us(self, component: str) -> float:
        return self.percent.get(component, 0.0) / 100 * self.cpu_us_per_request


def listening_pids(port: int) -> list[int]:
    """The processes listening on ``port`` on loopback (one per worker: engine.workers gives each its socket)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
    if not pids:
        raise SystemExit(f"nothing listens on port {port}")
    return pids


def _perf_report(data: Path, *options: str) -> str:
    cmd = ["perf", "report", "-i", str(data), "--stdio", "-g", "none", "-t", "|", *options]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def profile(port: int, pids: list[int], load: Load, label: str) -> Profile:
    """Drive ``port`` with ``load`` under perf; split its workers' CPU by where each sample fell."""
    if load.path == EVENTS_PATH:
        # Each event a ref no run sent before: a repeated one is only acknowledged as a duplicate.
        count = int(load.rate * load.seconds) + 1
        bodies = event_bodies(count, load.guests, run=time.time_ns() // 1000)
    else:
        bodies = decide_bodies(10_000, load.guests)
    requests = [openloop.request_bytes("127.0.0.1", port, load.path, b, {"X-API-Key": load.api_key}) for b in bodies]
    with tempfile.TemporaryDirectory(prefix="arbiter-profile-") as tmp:
        data = Path(tmp) / "perf.data"
        record = [
            "perf", "record", "-q", "-F", str(SAMPLE_HZ), "-g", "-o", str(data), "-p", ",".join(map(str, pids)),
            "--", "sleep", str(load.seconds),
        ]  # fmt: skip
        perf = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        meter = cpu.Meter(pids=pids)
        with meter:
            report = uvloop.run(
                openloop.run(
                    "127.0.0.1", port, requests, rate=load.rate, duration_s=load.duration_s, warmup_s=load.warmup_s
                )
            )
        _, err = perf.communicate(timeout=30)
        if perf.returncode != 0 or not data.exists():
            raise SystemExit(f"perf record failed ({perf.returncode}): {err.strip()}")
        by_dso = [(pct, rest) for pct, _, rest in parse_report(_perf_report(data, "--no-children", "--sort", "dso"))]
        children = {
            rest.removeprefix("[k] ").strip(): inclusive
            for inclusive, _, rest in parse_report(_perf_report(data, "--children", "--sort", "sym"))
            if rest.startswith("[k] ")
        }
    answered = len(report.latencies_ms) + len(report.warmup_latencies_ms)  # errors too: they cost the server
    used = meter.summary(answered, load.seconds)
    stats = report.as_dict()
    return Profile(
        label, answered, float(used.get("cpu_us_per_request") or 0.0), float(used.get("cores_busy") or 0),
        float(stats["p50_ms"]), float(stats["p99_ms"]), shares(by_dso, children),
    )  # fmt: skip


def render(profiles: list[Profile]) -> str:
    head = "| µs a request (share) | " + " | ".join(p.label for p in profiles) + " |"
    lines = [head, "|---|" + "---:|" * len(profiles)]
    for component in COMPONENTS:
        if all(p.percent.get(component, 0.0) < 0.5 for p in profiles):
            continue
        cells = [f"{p.us(component):.0f} ({p.percent[component]:.0f} %)" for p in profiles]
        lines.append(f"| {component} | " + " | ".join(cells) + " |")
    for name, cells in (
        ("**total: CPU a request**", [f"**{p.cpu_us_per_request:.0f}**" for p in profiles]),
        ("share of a core", [f"{p.cores_busy:.0%}" for p in profiles]),
        ("p50 / p99 ms", [f"{p.p50_ms:.2f} / {p.p99_ms:.2f}" for p in profiles]),
    ):
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side_by_side(
    targets: list[tuple[str, int]], rate: float, *, duration_s: float, warmup_s: float, guests: int, path: str,
    api_key: str,
) -> dict[str, Any]:  # fmt: skip
    """Each ``(label, port)`` profiled in turn at ``rate``, for a report (benchmarks/loadtest.py): the profiles and
    their table, or why there are none (perf missing, or not allowed to sample here)."""
    if shutil.which("perf") is None:
        return {"skipped": "perf is not installed (Debian: apt-get install linux-perf)"}
    load = Load(rate, duration_s, warmup_s, guests, path, api_key)
    try:
        found = [profile(port, listening_pids(port), load, label) for label, port in targets]
    except (SystemExit, subprocess.SubprocessError) as exc:
        return {"skipped": f"perf could not sample: {exc}"}
    return {"rate": rate, "profiles": [asdict(p) for p in found], "table": render(found)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the server to profile (on loopback)")
    parser.add_argument("--pid", type=int, action="append", help="its worker processes (default: who listens)")
    parser.add_argument("--compare", type=int, help="a second server's port, profiled the same way right after")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured after the warm-up")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the rate first (sampled too)")
    parser.add_argument("--path", default="/v1/decide/realistic", help=f"a decide path, or {EVENTS_PATH}")
    parser.add_argument("--guests", type=int, default=20_000)
    parser.add_argument("--api-key", default="demo-public")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (Debian: apt-get install linux-perf)")
    targets = [(f"port {args.port}", args.port, args.pid or listening_pids(args.port))]
    if args.compare:
        targets.append((f"port {args.compare}", args.compare, listening_pids(args.compare)))
    load = Load(args.rate, args.duration, args.warmup, args.guests, args.path, args.api_key)
    profiles = [profile(port, pids, load, label) for label, port, pids in targets]
    print(f"at {args.rate:.0f} requests/s, {args.duration:.0f} s after {args.warmup:.0f} s of warm-up (both sampled):")
    print(render(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
