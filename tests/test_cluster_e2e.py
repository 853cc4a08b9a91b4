"""End to end on a real Redis Cluster: three ``redis-server --cluster-enabled`` nodes and two Arbiter workers.

Every script touches keys of one hash slot only (``engine/keys.py``); a key misplaced in a script fails here
with CROSSSLOT, never on a single Redis. The flow is the product's: decide, events with a merge of two guests,
a bandit served and rewarded by decision id and by a goal event, a publish that reaches both workers.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import free_port, running_arbiter, wait_until

ADMIN = {"Authorization": "Bearer e2e-admin"}
PUBLIC = {"Authorization": "Bearer e2e-public"}
NODES = 3


class Cluster:
    """Three primaries, no replicas, every slot assigned; a node can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            pytest.fail("redis-server and redis-cli are needed: run `make test` (it installs them)")
        self.exe, self.cli, self.workdir = exe, cli, workdir
        self.ports = [free_port() for _ in range(NODES)]
        # The bus port is set too: by default it is the port + 10,000, past 65,535 for a high free port.
        self.bus_ports = [free_port() for _ in range(NODES)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * NODES

    def start(self, i: int) -> None:
        node_dir = self.workdir / str(self.ports[i])
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [self.exe, "--port", str(self.ports[i]), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        args += ["--cluster-port", str(self.bus_ports[i]), "--cluster-config-file", "nodes.conf"]
        # A lost node stays "possibly failed" for the whole test (the default 15 s could pass on a slow machine),
        # so only its own slots are lost, not the whole cluster.
        args += ["--cluster-node-timeout", "60000", "--save", "", "--appendonly", "no", "--dir", str(node_dir)]
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(redis.Redis(port=self.ports[i]).ping, what=f"cluster node {self.ports[i]}")

    def stop(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            self.procs[i] = None

    def wait_ok(self) -> None:
        for port in self.ports:
            node = redis.Redis(port=port)
            wait_until(lambda n=node: n.cluster("info")["cluster_state"] == "ok", timeout_s=20, what="cluster ok")

    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[Cluster]:
    cluster = Cluster(workdir)
    try:
        for i in range(NODES):
            cluster.start(i)
        create = [cluster.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports)]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60
        )
        cluster.wait_ok()
        yield cluster
    finally:
        for i in range(NODES):
            cluster.stop(i)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def server(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    for port in cluster.ports:
        redis.Redis(port=port).flushall()
    with running_arbiter(tmp_path, redis_url=cluster.url(), workers=2) as base:
        yield base
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "CROSSSLOT" not in log, log[-3000:]


def post(base: str, path: str, body: object, headers: dict[str, str] = PUBLIC) -> dict:
    r = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=10)
    assert r.status_code in (200, 201, 202), r.text
    answer: dict = r.json()
    return answer


def event(browser: str, kind: str, **more: object) -> dict:
    return {
        "type": kind,
        "channel": "WEB",
        "browser_id": browser,
        "language": "EN",
        "currency": "EUR",
        "page": "/",
        **more,
    }


@pytest.mark.e2e
def test_guests_and_events_on_a_cluster(server: str, cluster: Cluster) -> None:
    def offer(browser: str) -> str:
        return str(post(server, "/v1/decide/next-best-offer", {"guest": {"browser_id": browser}})["outputs"]["offer"])

    assert offer("c-1") == "welcome-10"
    post(server, "/v1/events", event("c-1", "ADD", product={"item_id": "SKU-1", "price": 80, "quantity": 1}))
    assert offer("c-1") == "cart-rescue"
    # Two browsers of one shopper: the second IDENTITY merges its guest into the first (two slots, one guest).
    email = [{"provider": "email", "id": "shopper@example.com"}]
    first = post(server, "/v1/events", event("c-1", "IDENTITY", identifiers=email))["guest_ref"]
    second = post(server, "/v1/events", event("c-2", "IDENTITY", identifiers=email))["guest_ref"]
    assert first == second == "c-1"
    assert offer("c-2") == "cart-rescue"  # the merged browser sees the survivor's cart
    batch = [event(f"c-{i}", "VIEW") for i in range(3, 23)]
    receipts = post(server, "/v1/events", {"events": batch})["events"]
    assert [r["status"] for r in receipts] == ["accepted"] * 20
    # The guests are spread over the nodes, not piled on one slot.
    holders = [p for p in cluster.ports if any(redis.Redis(port=p).scan_iter("arb:{g:*", count=1000))]
    assert len(holders) >= 2


@pytest.mark.e2e
def test_a_bandit_on_a_cluster_is_served_rewarded_and_published_to_every_worker(server: str) -> None:
    experiment = {
        "status": "running",
        "arms": [{"id": "a", "payload": "A"}, {"id": "b", "payload": "B"}],
        "goal": {"event": "ORDER_CHECKOUT"},
        "allocation": {"mode": "bandit"},
    }
    r = httpx.put(f"{server}/v1/experiments/cx", json=experiment, headers=ADMIN, timeout=10)
    assert r.status_code in (200, 201), r.text
    model = {
        "nodes": [
            {"id": "x", "kind": "experiment", "experiment": "cx"},
            {"id": "answer", "kind": "output", "value": {"arm": "x.arm"}},
        ]
    }
    r = httpx.put(f"{server}/v1/models/cx?publish=1", json=model, headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text

    def served(browser: str) -> dict:
        return post(server, "/v1/decide/cx", {"guest": {"browser_id": browser}})

    # Both workers know the experiment (change notices over the cluster): no decision falls back to its default.
    wait_until(
        lambda: all(served(f"w-{i}")["outputs"]["arm"] in ("a", "b") for i in range(10)),
        timeout_s=5,
        what="the experiment to reach both workers",
    )
    decisions = [served(f"b-{i}") for i in range(40)]
    # Rewards by decision id: each decision's unit is filed in its minute's hash, in that hash's own slot.
    statuses = [
        post(server, "/v1/experiments/cx/rewards", {"decision_id": d["decision_id"]})["status"] for d in decisions[:10]
    ]
    assert statuses == ["counted"] * 10
    again = post(server, "/v1/experiments/cx/rewards", {"decision_id": decisions[0]["decision_id"]})
    assert again["status"] == "duplicate"
    # A goal event rewards the guest's latest decision, last touch.
    post(server, "/v1/events", event("b-20", "ORDER_CHECKOUT", ref="order-b-20"))
    r = httpx.get(f"{server}/v1/experiments/cx/results", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    arms = r.json()["arms"]
    assert sum(a["exposures"] for a in arms) >= 40 and sum(a["conversions"] for a in arms) == 11
    # A new version reaches both workers.
    model["nodes"][1]["value"] = {"arm": '"fixed"'}
    assert httpx.put(f"{server}/v1/models/cx?publish=1", json=model, headers=ADMIN, timeout=10).status_code == 201
    wait_until(
        lambda: all(served(f"p-{i}")["outputs"]["arm"] == "fixed" for i in range(10)),
        timeout_s=5,
        what="the publish to reach both workers",
    )


@pytest.mark.e2e
def test_a_node_down_degrades_decisions_and_refuses_events_plainly_then_recovers(tmp_path: Path) -> None:
    """A primary lost (no replica to take over): decisions still answer, from defaults where the guest's slot is
    gone (``degraded``); an event is accepted or refused with a 503 problem, never a 500. Back up, all is well."""
    with running_cluster(tmp_path / "nodes") as cluster, running_arbiter(tmp_path, redis_url=cluster.url()) as base:
        browsers = [f"n-{i}" for i in range(30)]
        for b in browsers:
            post(base, "/v1/events", event(b, "VIEW"))
        cluster.stop(2)
        answers = [
            httpx.post(
                f"{base}/v1/decide/next-best-offer", json={"guest": {"browser_id": b}}, headers=PUBLIC, timeout=10
            )
            for b in browsers
        ]
        assert [a.status_code for a in answers] == [200] * len(browsers), answers[0].text
        degraded = sum(bool(a.json().get("degraded")) for a in answers)
        assert 0 < degraded < len(browsers)  # the guests on the lost node's slots, and only those
        refused = 0
        for b in browsers:
            r = httpx.post(f"{base}/v1/events", json=event(b, "VIEW"), headers=PUBLIC, timeout=10)
            assert r.status_code in (201, 503), r.text
            if r.status_code == 503:
                assert r.headers["content-type"] == "application/problem+json" and r.json()["status"] == 503
                refused += 1
        assert 0 < refused < len(browsers)
        cluster.start(2)
        cluster.wait_ok()

        def recovered() -> bool:
            for b in browsers:
                r = httpx.post(f"{base}/v1/events", json=event(b, "VIEW"), headers=PUBLIC, timeout=10)
                d = httpx.post(
                    f"{base}/v1/decide/next-best-offer", json={"guest": {"browser_id": b}}, headers=PUBLIC, timeout=10
                )
                if r.status_code != 201 or d.json().get("degraded"):
                    return False
            return True

        wait_until(recovered, timeout_s=30, what="events and decisions to recover with the node")
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
