"""benchmarks/profile.py: perf's report read right, every sample put in one component, and a real profile of a real
server when this machine lets perf sample (root or a permissive ``perf_event_paranoid``; CI need not)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import profile, servers

DSO_REPORT = """\
# Samples: 7K of event 'cpu-clock:ppp'
#
# Overhead|Shared Object
 65.91% |libpython3.11.so.1.0
 13.96% |[kernel.kallsyms]
 6.50%  |libc.so.6
 4.53%  |lua54.cpython-311-x86_64-linux-gnu.so
 2.55%  |loop.cpython-311-x86_64-linux-gnu.so
 2.45%  |orjson.cpython-311-x86_64-linux-gnu.so
 1.02%  |parser.cpython-311-x86_64-linux-gnu.so
 0.54%  |hiredis.cpython-311-x86_64-linux-gnu.so
 1.10%  |_decimal.cpython-311-x86_64-linux-gnu.so
 1.44%  |_asyncio.cpython-311-x86_64-linux-gnu.so
"""

SYMBOL_REPORT = """\
# Children|    Self|Symbol
 31.95% | 0.00%  |[.] 0x00007f9653e56240
 23.84% | 23.42% |[.] _PyEval_EvalFrameDefault
 13.71% | 0.23%  |[k] do_syscall_64
 11.38% | 0.00%  |[k] ksys_write
 1.01%  | 0.01%  |[k] ksys_read
 0.77%  | 0.04%  |[k] do_epoll_wait
"""


def test_reads_perfs_rows_and_skips_its_comments() -> None:
    rows = profile.parse_report(SYMBOL_REPORT)
    assert rows[0] == (31.95, 0.00, "[.] 0x00007f9653e56240")
    assert rows[3] == (11.38, 0.0, "[k] ksys_write")
    dso = profile.parse_report(DSO_REPORT)
    assert dso[0] == (65.91, None, "libpython3.11.so.1.0") and len(dso) == 10


def test_every_sample_lands_in_exactly_one_component() -> None:
    by_dso = [(pct, name) for pct, _, name in profile.parse_report(DSO_REPORT)]
    kernel = {rest.removeprefix("[k] "): incl for incl, _, rest in profile.parse_report(SYMBOL_REPORT)}
    shares = profile.shares(by_dso, kernel)
    assert sum(shares.values()) == pytest.approx(sum(p for p, _ in by_dso))
    assert shares["Python interpreter (CPython)"] == 65.91
    assert shares["Lua scripts (lupa)"] == 4.53 and shares["C library (malloc, memcpy…)"] == 6.50
    # The kernel's 13.96 % split by the system call it served, the rest apart.
    writes = next(k for k in shares if k.startswith("kernel: socket writes"))
    assert shares[writes] == 11.38 and shares["kernel: socket reads"] == 1.01
    assert shares["kernel: waiting in epoll"] == 0.77
    assert shares[profile.KERNEL_OTHER] == pytest.approx(13.96 - 11.38 - 1.01 - 0.77)
    assert shares[profile.OTHER] == 1.44  # _asyncio: no component of its own


def test_a_kernel_split_never_exceeds_the_kernels_samples() -> None:
    # Inclusive percentages can overlap (a write that ends in a read); the parts are capped by what is left.
    shares = profile.shares([(10.0, profile.KERNEL)], {"ksys_write": 8.0, "ksys_read": 5.0})
    assert shares[next(k for k in shares if k.startswith("kernel: socket writes"))] == 8.0
    assert shares["kernel: socket reads"] == 2.0 and shares[profile.KERNEL_OTHER] == 0.0


def _perf_can_sample(tmp: Path) -> bool:
    if shutil.which("perf") is None:
        return False
    probe = [sys.executable, "-c", "sum(range(3_000_000))"]
    done = subprocess.run(["perf", "record", "-q", "-o", str(tmp / "probe.data"), "--", *probe], capture_output=True)
    return done.returncode == 0


@pytest.mark.e2e
def test_profiles_a_real_server(tmp_path: Path) -> None:
    if not _perf_can_sample(tmp_path):
        pytest.skip("perf is not installed or may not sample here (apt-get install linux-perf; root)")
    with servers.running_redis(tmp_path) as url:
        with servers.running_arbiter(tmp_path, url, 1, models=servers.ROOT / "models") as arbiter:
            port = arbiter.port
            load = profile.Load(200.0, 1.0, 0.5, 50, "/v1/decide/next-best-offer", servers.PUBLIC_KEY)
            found = profile.profile(port, profile.listening_pids(port), load, "decide")
            single_events = dataclasses.replace(load, path=profile.EVENTS_PATH)  # each with a ref of its own
            events = profile.profile(port, profile.listening_pids(port), single_events, "events")
    for run in (found, events):
        assert run.requests >= 250 and run.cpu_us_per_request > 0
        assert sum(run.percent.values()) == pytest.approx(100, abs=1.5)
        assert run.percent["Python interpreter (CPython)"] > 10
    table = profile.render([found, events])
    assert "| **total: CPU a request** |" in table and "| decide | events |" in table
