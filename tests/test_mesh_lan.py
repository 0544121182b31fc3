"""The mesh on a LAN in a box: one ``tests/lan_node.py`` process per namespace host.

Nodes find each other with zeroconf on each host's ``eth0`` (or through seeds), and the
tests break things for real: SIGKILL, SIGSTOP, link down, restart, a foreign secret.
Each node prints its view as JSON lines (with ``time.time()``: one clock for every
namespace, so the times of different hosts compare); the tests poll those lines with
deadlines and print the figures that docs/performance.md quotes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from mesh import PROFILES, write_secret
from mesh._core.membership import suspicion_bounds
from tests.lan import Lan
from tests.lan_cluster import (
    GONE,
    RPC_PORT,
    Cluster,
    LanNode,
    full_view,
    seen_by_all,
)

pytestmark = pytest.mark.lan

HOSTS = 5


def gossip_rate(nodes: Iterable[LanNode], start: float, end: float) -> float:
    """Mean gossip bytes sent per node per second between ``start`` and ``end``."""
    rates: list[float] = []
    for node in nodes:
        window = [v for v in node.views if start <= v["t"] <= end]
        assert len(window) >= 2, (node.name, len(window))
        first, last = window[0], window[-1]
        sent = float(last["gossip_bytes_out"] - first["gossip_bytes_out"])
        rates.append(sent / (last["t"] - first["t"]))
    return sum(rates) / len(rates)


def form(
    cluster: Cluster,
    *,
    providers: Iterable[str] = ("h4", "h5"),
    timeout: float = 20.0,
    **settings: str,
) -> tuple[float, float]:
    """Start one node per host and wait until every node lists all of them alive, with
    the calc providers. Returns (last ready time, listed by all time)."""
    offering = set(providers)
    nodes = [cluster.start(h, service=h.name in offering, **settings) for h in cluster.lan.hosts]
    last_ready = cluster.wait_ready(nodes)
    check = full_view([n.name for n in nodes], {"calc": sorted(offering)} if offering else {})
    cluster.wait("every node lists all", lambda: all(check(n.view) for n in nodes), timeout)
    return last_ready, seen_by_all(nodes, check, 0.0)


@pytest.fixture
def cluster(lan_factory: Callable[[int], Lan], tmp_path: Path) -> Cluster:
    return Cluster(lan_factory(HOSTS), tmp_path)


def kill_and_measure(cluster: Cluster, victim: str, dead_within: float) -> tuple[float, float]:
    """SIGKILL ``victim``; wait until every other node lists it dead (or purged).
    Returns (seconds until suspected by all, seconds until dead by all)."""
    observers = cluster.others(victim)
    killed_at = time.time()
    os.kill(cluster.nodes[victim].proc.pid, signal.SIGKILL)
    cluster.wait(
        f"{victim} dead for all",
        lambda: all(n.status(victim) in GONE for n in observers),
        dead_within,
    )
    suspected = seen_by_all(observers, lambda v: v["members"].get(victim) != "alive", killed_at)
    dead = seen_by_all(observers, lambda v: v["members"].get(victim) in GONE, killed_at)
    explicit = sum(
        any(v["t"] >= killed_at and v["members"].get(victim) == "suspect" for v in n.views)
        for n in observers
    )
    print(f"\n  ({explicit} of {len(observers)} observers listed {victim} suspect on the way)")
    return suspected - killed_at, dead - killed_at


# --------------------------------------------------------------------------- the tests


@pytest.mark.timeout(90)
def test_zeroconf_alone_builds_the_mesh_and_calls_cross_hosts(cluster: Cluster) -> None:
    last_ready, listed = form(cluster)
    print(
        f"\nzeroconf, test profile: listed by all {listed - last_ready:.3f} s after the last ready"
    )
    assert listed - last_ready < 3.0

    for caller in ("h1", "h2", "h4"):
        answer = cluster.call(cluster.nodes[caller], "calc.add", 1, 2)
        assert answer["event"] == "result", answer
        assert answer["value"] == 3
    served = {cluster.call(cluster.nodes["h1"], "calc.where")["value"] for _ in range(8)}
    assert served, served
    assert served <= {"h4", "h5"}
    slow = cluster.call(cluster.nodes["h2"], "calc.slow", 0.2)
    assert slow["event"] == "result", slow
    assert slow["value"] in {"h4", "h5"}

    quiet = time.time()
    cluster.settle(2.2)
    rate = gossip_rate(cluster.nodes.values(), quiet, time.time())
    print(f"gossip, test profile: {rate:,.0f} bytes/node/s over a quiet 2 s")
    assert all(full_view(cluster.nodes, {"calc": ["h4", "h5"]})(n.view)
               for n in cluster.nodes.values())  # fmt: skip

    # meshctl from any host, finding a node by zeroconf alone, lists every node and service
    meshctl = str(Path(sys.executable).parent / "meshctl")
    for host in (cluster.lan.hosts[0], cluster.lan.hosts[2]):
        where = ["--mesh", cluster.mesh, "--interface", host.interface, "--discovery"]
        listed = host.run([meshctl, "nodes", "--json", "--fresh", *where], timeout=20)
        assert listed.returncode == 0, listed.stderr
        members = json.loads(listed.stdout)
        assert sorted(m["name"] for m in members) == [h.name for h in cluster.lan.hosts]
        assert all(m["status"] == "alive" and m["stats"] is not None for m in members)
        offered = host.run([meshctl, "services", "--json", *where], timeout=20)
        assert offered.returncode == 0, offered.stderr
        [calc] = json.loads(offered.stdout)
        assert sorted(p["node"] for p in calc["providers"]) == ["h4", "h5"]
        called = host.run([meshctl, "call", "calc.add", "2", "3", "--json", *where], timeout=20)
        assert (called.returncode, called.stdout.strip()) == (0, "5"), called.stderr
        inspected = host.run([meshctl, "inspect", "calc", "--json", *where], timeout=20)
        assert inspected.returncode == 0, inspected.stderr
        assert {"add", "where", "slow"} <= {
            m["name"] for m in json.loads(inspected.stdout)["methods"]
        }
        pinged = host.run([meshctl, "ping", "--json", *where], timeout=20)
        assert pinged.returncode == 0, pinged.stderr
        rtts = {p["name"]: p["rtt_ms"] for p in json.loads(pinged.stdout)}
        assert sorted(rtts) == [h.name for h in cluster.lan.hosts]
        assert all(r is not None and 0 < r["min"] <= r["max"] < 1000 for r in rtts.values())
        published = host.run([meshctl, "publish", "lan.note", "1", "--json", *where], timeout=20)
        assert published.returncode == 0, published.stderr


@pytest.mark.timeout(90)
def test_sigkill_suspect_then_dead_and_calls_go_elsewhere(cluster: Cluster) -> None:
    form(cluster)
    suspected, dead = kill_and_measure(cluster, "h5", dead_within=10.0)
    print(f"SIGKILL, test profile: suspected by all {suspected:.3f} s, dead by all {dead:.3f} s")
    assert suspected <= dead < 5.0
    h1 = cluster.nodes["h1"]
    cluster.wait("h1 lists h4 alone as calc provider",
                 lambda: h1.view["services"] == {"calc": ["h4"]}, 5.0)  # fmt: skip
    answers = [cluster.call(h1, "calc.where") for _ in range(10)]
    assert [a.get("value") for a in answers] == ["h4"] * 10, answers


@pytest.mark.timeout(90)
def test_sigstop_shorter_than_suspicion_is_never_dead(cluster: Cluster) -> None:
    form(cluster)
    observers = cluster.others("h3")
    since = time.time()
    pid = cluster.nodes["h3"].proc.pid
    for _ in range(3):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.1)  # the test profile's shortest suspicion is 0.15 s, after a probe
        os.kill(pid, signal.SIGCONT)
        cluster.settle(1.0)
    names = list(cluster.nodes)
    cluster.wait("all alive again",
                 lambda: all(full_view(names, {"calc": ["h4", "h5"]})(n.view)
                             for n in cluster.nodes.values()), 10.0)  # fmt: skip
    statuses = [v["members"].get("h3") for n in observers for v in n.views if v["t"] >= since]
    print(f"\nSIGSTOP 3 x 0.1 s: h3 listed suspect in {statuses.count('suspect')} view lines")
    assert "dead" not in statuses, statuses
    assert None not in statuses, statuses


@pytest.mark.timeout(90)
def test_link_down_partitions_and_link_up_heals(cluster: Cluster) -> None:
    form(cluster)
    cut = cluster.lan.hosts[-1]
    island, rest = cluster.nodes[cut.name], cluster.others(cut.name)
    cut_at = time.time()
    cut.cut()
    cluster.wait(
        "both sides see the partition",
        lambda: (
            all(island.status(n.name) != "alive" for n in rest)
            and all(n.status(cut.name) != "alive" for n in rest)
        ),
        5.0,
    )
    print(f"\nlink down: both sides see the partition within {time.time() - cut_at:.3f} s")
    cluster.settle(1.0)  # well into dead on both sides
    cut.restore()
    healed_at = time.time()
    names = list(cluster.nodes)
    check = full_view(names, {"calc": ["h4", "h5"]})
    cluster.wait("all alive after link up",
                 lambda: all(check(n.view) for n in cluster.nodes.values()), 30.0)  # fmt: skip
    print(f"link up: all alive for all within {time.time() - healed_at:.3f} s")


@pytest.mark.timeout(90)
def test_restart_under_the_same_name_replaces_the_old_entry(cluster: Cluster) -> None:
    form(cluster)
    old = cluster.nodes["h2"]
    assert old.ready is not None
    os.kill(old.proc.pid, signal.SIGKILL)
    new = cluster.start(cluster.lan.hosts[1])
    cluster.wait_ready([new])
    assert new.ready is not None
    assert new.ready["id"] != old.ready["id"]
    restarted = new.ready["t"]
    observers = cluster.others("h2")

    def replaced(node: LanNode) -> bool:
        h2 = [entry for entry in node.view["ids"] if entry[0] == "h2"]
        return h2 == [["h2", new.ready["id"], "alive"]] if new.ready else False

    cluster.wait("the new h2 replaces the old", lambda: all(map(replaced, observers)), 10.0)
    print(f"\nrestart: new h2 listed alone by all {time.time() - restarted:.3f} s after ready")
    assert time.time() - restarted < 1.0  # at once: no pull may be lost to the old one
    doubles = [(n.name, v["ids"]) for n in observers for v in n.views
               if v["t"] >= restarted and sum(e[0] == "h2" for e in v["ids"]) > 1]  # fmt: skip
    assert not doubles, doubles[:3]


@pytest.mark.timeout(90)
def test_seeds_alone_build_the_same_mesh(cluster: Cluster) -> None:
    first = cluster.lan.hosts[0]
    last_ready, listed = form(
        cluster, MESH_DISCOVERY="off", MESH_SEEDS=f"tcp://{first.ip}:{RPC_PORT}"
    )
    print(f"\nseeds, test profile: listed by all {listed - last_ready:.3f} s after the last ready")
    assert listed - last_ready < 5.0  # usually < 0.2 s; once 2.6 s (a seed not up yet?)
    answer = cluster.call(cluster.nodes["h2"], "calc.where")
    assert answer.get("value") in {"h4", "h5"}, answer


@pytest.mark.timeout(90)
def test_shared_secret_mesh_keeps_an_outsider_out(
    lan_factory: Callable[[int], Lan], tmp_path: Path
) -> None:
    lan = lan_factory(HOSTS + 1)
    cluster = Cluster(lan, tmp_path)
    secret = write_secret(tmp_path / "mesh.secret")
    other = write_secret(tmp_path / "other.secret")
    members, outsider_host = lan.hosts[:HOSTS], lan.hosts[HOSTS]
    outsider = cluster.start(outsider_host, MESH_SECRET_FILE=str(other))
    nodes = [cluster.start(h, service=h.name == "h4", MESH_SECRET_FILE=str(secret))
             for h in members]  # fmt: skip
    cluster.wait_ready([outsider, *nodes])
    check = full_view([n.name for n in nodes], {"calc": ["h4"]})
    cluster.wait("the secret mesh forms", lambda: all(check(n.view) for n in nodes), 20.0)
    answer = cluster.call(cluster.nodes["h1"], "calc.add", 2, 3)
    assert answer.get("value") == 5, answer
    cluster.settle(2.0)  # the outsider keeps announcing itself and trying to join
    assert all(check(n.view) for n in nodes)
    assert all(outsider_host.name not in v["members"] for n in nodes for v in n.views)
    assert all(list(v["members"]) == [outsider_host.name] for v in outsider.views), outsider.view


def dead_bound(profile: str) -> float:
    """The slowest a SIGKILLed member may take to be dead by all, by design: a full probe
    round before anyone probes it, then Lifeguard's longest suspicion (no confirmations),
    plus a second for a loaded 2-vCPU machine."""
    settings = PROFILES[profile].membership
    _, longest = suspicion_bounds(settings, HOSTS)
    return HOSTS * settings.probe_interval + longest + 1.0


def measure_profile(cluster: Cluster, profile: str) -> float:
    last_ready, listed = form(cluster, MESH_PROFILE=profile, timeout=30.0)
    quiet = time.time()
    cluster.settle(2.2)
    rate = gossip_rate(cluster.nodes.values(), quiet, time.time())
    suspected, dead = kill_and_measure(cluster, "h5", dead_bound(profile) + 5.0)
    print(f"{profile} profile: listed by all {listed - last_ready:.3f} s after the last ready; "
          f"gossip {rate:,.0f} bytes/node/s; SIGKILL: suspected by all {suspected:.3f} s, "
          f"dead by all {dead:.3f} s")  # fmt: skip
    assert suspected <= dead
    return dead


@pytest.mark.timeout(90)
def test_detection_times_with_the_local_profile(cluster: Cluster) -> None:
    # Goal: dead by all within 3 s. Met when the other members suspect it together (2.5 s
    # measured); with fewer confirmations Lifeguard waits longer (6.2 s seen), up to:
    assert measure_profile(cluster, "local") < dead_bound("local")


@pytest.mark.timeout(120)
def test_detection_times_with_the_lan_profile(cluster: Cluster) -> None:
    # Goal: dead by all within 6 s (5.0 s measured); the design bound is far above it.
    assert measure_profile(cluster, "lan") < dead_bound("lan")


@pytest.mark.timeout(90)
def test_events_cross_hosts_with_a_shared_secret(
    lan_factory: Callable[[int], Lan], tmp_path: Path
) -> None:
    """Every subscriber on the LAN gets a publisher's events, in order and once each, over
    CURVE; a SIGKILLed publisher is reported as ``$mesh.node.failed``."""
    cluster = Cluster(lan_factory(HOSTS), tmp_path)
    secret = str(write_secret(tmp_path / "mesh.secret"))
    nodes = [cluster.start(h, MESH_SECRET_FILE=secret) for h in cluster.lan.hosts]
    cluster.wait_ready(nodes)
    check = full_view([n.name for n in nodes], {})
    cluster.wait("the secret mesh forms", lambda: all(check(n.view) for n in nodes), 20.0)
    *subscribers, publisher = nodes
    for node in subscribers:
        node.send("subscribe lan.")
    watcher = subscribers[0]
    watcher.send("subscribe $mesh.node.")
    probes = 0

    def all_subscribed() -> bool:
        nonlocal probes
        if all(any(e["topic"] == "lan.probe" for e in n.events) for n in subscribers):
            return True
        probes += 1
        publisher.send(f"publish lan.probe {probes}")
        return False

    took = cluster.wait("every subscriber follows the publisher", all_subscribed, 10.0)
    print(f"\n  events reach 4 hosts {took - cluster.wait_ready(nodes):.2f} s after ready")
    for i in range(50):
        publisher.send(f"publish lan.tick {i}")

    def ticks(node: LanNode) -> list[Any]:
        return [e["data"] for e in node.events if e["topic"] == "lan.tick"]

    cluster.wait("50 ticks everywhere", lambda: all(len(ticks(n)) >= 50 for n in subscribers), 10.0)
    for node in subscribers:
        assert ticks(node) == list(range(50)), node.name
        published = [e for e in node.events if e["topic"] == "lan.tick"]
        assert [e["n"] for e in published] == list(range(1, 51))
    killed = time.time()
    os.kill(publisher.proc.pid, signal.SIGKILL)

    def failed() -> bool:
        return any(
            e["topic"] == "$mesh.node.failed" and e["data"]["node"] == publisher.name
            for e in watcher.events
        )

    at = cluster.wait("$mesh.node.failed for the publisher", failed, 10.0)
    print(f"  $mesh.node.failed {at - killed:.2f} s after the SIGKILL")
