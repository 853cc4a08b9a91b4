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


def _move_slot(cluster: Cluster, slot: int) -> tuple[int, int]:
    """Migrate one slot, keys and all, to another primary, as ``redis-cli --cluster reshard`` does: (from, to)."""
    nodes = {p: redis.Redis(port=p, decode_responses=True) for p in cluster.ports}
    ids = {p: n.execute_command("CLUSTER", "MYID") for p, n in nodes.items()}
    src = next(p for p, n in nodes.items() if n.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0)
    dst = next(p for p in cluster.ports if p != src)
    nodes[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
    nodes[src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
    for key in nodes[src].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
        nodes[src].execute_command("MIGRATE", "127.0.0.1", dst, key, 0, 5000)
    for node in nodes.values():
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
    return src, dst


async def test_a_slot_moved_under_the_store_is_followed_for_reads_scripts_and_batches(cluster: Cluster) -> None:
    """The hot paths' own connections route by redis-py's slot map; a slot that moved answers MOVED, and the
    redirected command (only it) goes through redis-py, which follows it and refreshes the map."""
    from engine import keys
    from engine.profiles_redis import RedisProfiles
    from engine.store.base import GuestLookup
    from engine.store.redis import RedisStore

    for port in cluster.ports:
        redis.Redis(port=port).flushall()
    store = RedisStore(cluster.url())
    profiles = RedisProfiles(store)
    try:
        refs = [f"mv-{i}" for i in range(12)]
        for ref in refs:
            await store.guest_save(ref, {"ref": ref, "facts": {"n": ref}, "sessions": []})
        assert (await store.guest_load(GuestLookup(guest_ref=refs[0])) or {}).get("facts") == {"n": refs[0]}
        moved = refs[0]
        slot = store.client.keyslot(keys.guest(moved))
        assert store.slots is not None and store.slots.for_key(keys.guest(moved)) is not None  # map known
        src, dst = _move_slot(cluster, slot)
        assert store.slots.for_key(keys.guest(moved)).port == src  # type: ignore[union-attr]  # the map is stale

        guest = await store.guest_load(GuestLookup(guest_ref=moved))  # MOVED, then through redis-py
        assert guest is not None and guest["facts"] == {"n": moved}
        assert store.slots.for_key(keys.guest(moved)).port == dst  # type: ignore[union-attr]  # map refreshed
        # A batch whose items live on several primaries, one of them in a slot that moves again.
        _move_slot(cluster, slot)
        snaps = await profiles.read_many(refs)
        assert [s.guest["facts"]["n"] for s in snaps if s.guest is not None] == refs
        # A script (an event's compare-and-set) after another move: it runs once, on the slot's new owner.
        snap = await profiles.read(moved)
        assert snap.guest is not None
        _move_slot(cluster, slot)
        snap.guest["facts"] = {"n": "changed"}
        outcome = await profiles.commit(moved, snap.guest, snap.rev, token="t-1", now_ms=1, stored=snap.stored)
        assert outcome.name == "OK"
        assert ((await profiles.read(moved)).guest or {}).get("facts") == {"n": "changed"}
    finally:
        await store.close()


async def test_a_batch_of_exposures_spans_slots_on_a_cluster(cluster: Cluster) -> None:
    """One flush's minute units go in one script call per slot (a multi-key script must not cross slots); its
    guests' assignment fields, on guests of many slots, land each guest's entries in the order served."""
    import time

    from engine import keys
    from engine.ids import timed_id
    from engine.ledger import Exposure, RedisLedger
    from engine.store.redis import RedisStore

    store = RedisStore(cluster.url())
    ledger = RedisLedger(store)
    now_ms = int(time.time() * 1000)
    try:
        guests = [f"cg-{i}" for i in range(12)]
        groups = store.slot_groups([keys.guest(g) for g in guests * 2], 64)
        assert len(groups) > 1 and sorted(i for g in groups for i in g.indices) == list(range(24))
        assert all(len({store.client.keyslot(k) for k in g.keys}) == 1 for g in groups)
        ids = {(g, arm): timed_id(now_ms) for arm in "ab" for g in guests}  # units in minute shards of several slots
        batch = [Exposure("cx", arm, "1.0", d, d, g, now_ms, 3600, False) for (g, arm), d in ids.items()]
        await ledger.expose(batch)
        assert [((await ledger.assignment(g, "cx")) or {}).get("arm") for g in guests] == ["b"] * 12
        a, b = await ledger.totals("cx", ("a", "b"))
        assert (a.exposures, b.exposures) == (12, 12)
        claims = [(await ledger.claim("cx", d, now_ms, 1.0, per_decision=True))[:2] for (_, arm), d in ids.items()]
        assert claims == [("counted", arm) for _, arm in ids]
    finally:
        await store.close()


def test_the_benchmark_data_copies_into_a_cluster(redis_url: str, cluster: Cluster) -> None:
    """benchmarks/copy_to_cluster.py: what the in-process benchmark on a cluster reads is the harness's data."""
    from benchmarks.copy_to_cluster import copy

    for port in cluster.ports:
        redis.Redis(port=port).flushall()
    src = redis.Redis.from_url(redis_url)
    for i in range(50):
        src.hset(f"arb:{{g:cp-{i}}}", mapping={"profile": f'{{"ref": "cp-{i}"}}', "rev": i})
    src.set("arb:expiring", "1", px=600_000)
    assert copy(redis_url, cluster.url()) == 51
    dst = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    assert [dst.hget(f"arb:{{g:cp-{i}}}", "rev") for i in range(50)] == [str(i).encode() for i in range(50)]
    assert 0 < dst.pttl("arb:expiring") <= 600_000
    dst.close()
