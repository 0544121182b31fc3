"""The chaos campaign: a mesh of node processes on a namespace LAN, a steady load, a
scripted series of faults, and after each fault the invariants and the time each took
to hold.

Method. Host 1's nodes are the load's sources (events, queue-group items, durable jobs)
and are never faulted; services are spread over the other hosts (:func:`assign`).
Every node subscribes to the broadcast topic, the last node of each other host joins the
queue group, and calls go round every live node. A window per fault runs from the fault
to its end: the fault is applied, held, reverted (a SIGKILL is reverted at once), then
the campaign waits until every node has listed exactly the live members for ``steady``
seconds in a row (at most the profile's detection bound and ``steady`` more). The
invariants are evaluated over the window's reports (:mod:`tests.chaos.invariants`);
"time to hold" is from the revert to the moment from which an invariant held to the
window's end.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mesh import PROFILES, write_secret
from mesh._core.membership import suspicion_bounds
from tests.chaos import faults, invariants
from tests.chaos.cpu import CpuMeter
from tests.chaos.invariants import Call, Sample, Usage
from tests.lan import Host, Lan
from tests.lan_cluster import RPC_PORT, Cluster, LanNode

#: Service copies spread over the hosts after the first (name, copies).
SPREAD = (("calc", 4), ("db", 2), ("api", 2), ("work", 3))
#: What the load calls, in turn: (target and arguments, idempotent).
TARGETS = (
    ("calc.add 1 2", True),
    ("api.read k", True),
    ("calc.slow 0.05", False),
    ("calc.where", True),
)
BROADCAST, GROUP_PREFIX, GROUP = "chaos.tick", "queue.", "workers"
#: Calls of each target from every node before the resources' baseline (see setup).
WARM_CALLS = 20
#: How often the membership is sampled (seconds).
SAMPLE_EVERY = 0.5


@dataclass
class Plan:
    """What to run: the LAN, the timings profile, the load and the faults."""

    hosts: int = 10
    per_host: int = 3
    profile: str = "lan"
    #: Faults by name, in order (see :func:`script`).
    faults: tuple[str, ...] = (
        "kill-node",
        "restart-node",
        "stop-short",
        "stop-long",
        "kill-host",
        "restart-host",
        "cut-host",
        "split",
        "loss",
        "one-way-loss",
        "join-host",
        "leave-host",
    )
    calls_per_second: float = 8.0
    events_per_second: float = 2.0
    items_per_second: float = 2.0
    jobs_per_second: float = 1.0
    call_timeout: float = 3.0
    #: How long partitions and loss last (seconds).
    hold: float = 20.0
    #: How long the invariants must keep holding at a window's end (seconds).
    steady: float = 5.0
    #: Events, items and jobs sent in a window's last ``grace`` seconds are not judged in
    #: it (they may still be on their way).
    grace: float = 2.0
    loss_percent: int = 10
    one_way_percent: int = 30
    #: Seconds of load before the first fault (the baseline of memory and fds is taken
    #: at its end).
    warmup: float = 10.0
    #: A call may take this long past its deadline before it counts as hung.
    deadline_slack: float = 1.0
    heartbeat: float = 1.0

    @property
    def timings(self) -> tuple[float, float, float]:
        """(short stop, long stop, detection bound) in seconds for this profile and size."""
        settings = PROFILES[self.profile].membership
        members = self.hosts * self.per_host + self.per_host
        low, high = suspicion_bounds(settings, members)
        bound = members * settings.probe_interval + high + 5.0
        return low / 3, 3 * low + 2 * settings.probe_interval, bound


SHORT = Plan(
    hosts=3,
    per_host=2,
    profile="test",
    faults=(
        "kill-node",
        "restart-node",
        "stop-short",
        "cut-host",
        "loss",
        "join-host",
        "leave-host",
    ),
    jobs_per_second=2.0,
    hold=3.0,
    steady=4.0,
    grace=1.5,
    warmup=2.0,
    heartbeat=0.5,
)


@dataclass
class Row:
    """One invariant after one fault."""

    fault: str
    invariant: str
    held_after: float | None
    ok: bool
    detail: str = ""


@dataclass
class Window:
    """One fault's window and what was measured in it."""

    fault: str
    start: float
    revert: float = 0.0
    end: float = 0.0
    cpu: tuple[float, float] | None = None
    cpu_peak: tuple[float, float] | None = None
    rss_before: float = 0.0
    rss_after: float = 0.0
    fds_before: int = 0
    fds_after: int = 0
    rows: list[Row] = field(default_factory=list)


@dataclass
class Fault:
    """A named fault: ``apply``, hold ``hold`` seconds, ``revert``. ``excused``: nodes a
    healthy node may list dead meanwhile; ``sides``: node -> side of a partition."""

    name: str
    apply: Callable[[], None]
    revert: Callable[[], None] = lambda: None
    hold: float = 0.0
    excused: set[str] = field(default_factory=set)
    sides: dict[str, int] = field(default_factory=dict)


def assign(hosts: int, per_host: int) -> dict[str, list[str]]:
    """Node name -> services it offers: :data:`SPREAD` round the hosts after the first,
    slot by slot (copies of one service on different hosts where there are enough)."""
    positions = [f"h{h}n{s}" for s in range(per_host) for h in range(2, hosts + 1)]
    offered: dict[str, list[str]] = {p: [] for p in positions}
    k = 0
    for service, copies in SPREAD:
        for _ in range(copies):
            offered[positions[k % len(positions)]].append(service)
            k += 1
    return offered


class Campaign:
    """Runs a :class:`Plan` on a fresh LAN under ``workdir``; :meth:`run` returns windows."""

    def __init__(self, plan: Plan, workdir: Path, log: Callable[[str], None] = print) -> None:
        if plan.per_host < 2 or plan.hosts < 3:
            raise ValueError("the campaign needs at least 3 hosts of 2 nodes")
        self.plan = plan
        self.workdir = workdir
        self.log = log
        self.secret = write_secret(workdir / "mesh.secret")
        self.job_log = workdir / "jobs.log"
        self.job_log.touch()
        self.lan: Lan | None = None
        self.cluster: Cluster | None = None
        self.offered = assign(plan.hosts, plan.per_host)
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.killed_pids: set[int] = set()
        #: PIDs of nodes cut off from the job sender (h1n1) by a partition or link down
        self.cut_off_pids: set[int] = set()
        self.subscribed: dict[str, float] = {}
        self.calls: list[tuple[LanNode, int, str, bool, float]] = []
        self.events: list[tuple[float, int]] = []
        self.items: list[tuple[float, int]] = []
        self.jobs: list[tuple[LanNode, int, int, float]] = []
        self.samples: list[tuple[float, bool, list[str]]] = []
        self.cpu = CpuMeter()
        self.windows: list[Window] = []
        self.baseline: dict[str, Usage] = {}
        self.final: dict[str, Usage] = {}
        self.final_rows: list[Row] = []
        self.completed = False
        self._budget = {"calls": 0.0, "events": 0.0, "items": 0.0, "jobs": 0.0}
        self._last_load = 0.0
        self._next_sample = 0.0
        self._turn = 0

    # -- nodes ------------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, LanNode]:
        assert self.cluster is not None
        return self.cluster.nodes

    def live(self) -> set[str]:
        return set(self.nodes) - self.down

    def start_node(self, host: Host, slot: int) -> LanNode:
        assert self.cluster is not None
        assert self.lan is not None
        name = f"{host.name}n{slot}"
        services = self.offered.get(name, [])
        settings = {
            "MESH_PROFILE": self.plan.profile,
            "MESH_SECRET_FILE": str(self.secret),
            "LAN_NODE_SERVICE": ",".join(services),
            "LAN_NODE_JOB_LOG": str(self.job_log),
            "LAN_NODE_HEARTBEAT": str(self.plan.heartbeat),
        }
        if name != "h1n0":
            settings["MESH_SEEDS"] = f"tcp://{self.lan.hosts[0].ip}:{RPC_PORT}"
        if "work" in services or name == "h1n1":
            settings["MESH_JOBS_DB"] = str(self.workdir / f"{name}.db")
        self.down.discard(name)
        return self.cluster.start(host, name=name, slot=slot, module="tests.chaos.node", **settings)

    def subscribe(self, node: LanNode) -> None:
        """The broadcast subscription of every node; the queue group on the last slot of
        hosts other than the first."""
        node.send(f"subscribe {BROADCAST}")
        self.subscribed[node.name] = time.time()
        if node.name.endswith(f"n{self.plan.per_host - 1}") and node.host.index != 1:
            node.send(f"subscribe {GROUP_PREFIX} {GROUP}")

    def start_nodes(self, names: list[str]) -> None:
        """Start (or restart) the nodes ``names`` (``hXnY``), wait until they are ready,
        and subscribe them."""
        assert self.lan is not None
        assert self.cluster is not None
        started = []
        for name in names:
            host_index, slot = (int(x) for x in name[1:].split("n"))
            started.append(self.start_node(self.lan.hosts[host_index - 1], slot))
        self.cluster.wait_ready(started, 60.0)
        for node in started:
            self.subscribe(node)

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        faults.send_signal(node.proc.pid, signal.SIGKILL)
        self.killed_pids.add(node.proc.pid)
        node.proc.wait(10)
        self._gone(name)

    def _gone(self, name: str) -> None:
        self.down.add(name)
        self.subscribed.pop(name, None)

    def host_nodes(self, index: int) -> list[str]:
        return [f"h{index}n{s}" for s in range(self.plan.per_host)]

    # -- the loop ---------------------------------------------------------------------------

    def step(self) -> None:
        """Read the nodes for a moment; send the load that is due; sample."""
        assert self.cluster is not None
        self.cluster.pump(0.05)
        now = time.time()
        self.load(now)
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_EVERY
            self.sample(now)

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.step()
            if predicate():
                return time.time()
        return None

    def load(self, now: float) -> None:
        elapsed = min(1.0, now - self._last_load) if self._last_load else 0.0
        self._last_load = now
        plan = self.plan
        rates = {
            "calls": plan.calls_per_second,
            "events": plan.events_per_second,
            "items": plan.items_per_second,
            "jobs": plan.jobs_per_second,
        }
        for kind, rate in rates.items():
            self._budget[kind] += rate * elapsed
        callers = sorted(self.live() - self.paused)
        while self._budget["calls"] >= 1 and callers:
            self._budget["calls"] -= 1
            self._turn += 1
            caller = self.nodes[callers[self._turn % len(callers)]]
            target, idempotent = TARGETS[self._turn % len(TARGETS)]
            seq = caller.send(f"call --timeout={plan.call_timeout} {target}")
            self.calls.append((caller, seq, target.split()[0], idempotent, now))
        publisher, sender = self.nodes["h1n0"], self.nodes["h1n1"]
        while self._budget["events"] >= 1:
            self._budget["events"] -= 1
            publisher.send(f"publish {BROADCAST} {len(self.events)}")
            self.events.append((now, len(self.events)))
        while self._budget["items"] >= 1:
            self._budget["items"] -= 1
            publisher.send(f"publish {GROUP_PREFIX}item {len(self.items)}")
            self.items.append((now, len(self.items)))
        while self._budget["jobs"] >= 1:
            self._budget["jobs"] -= 1
            n = len(self.jobs)
            seq = sender.send(f"enqueue work.do job-{n} {n}")
            self.jobs.append((sender, seq, n, now))

    def sample(self, now: float) -> None:
        live = self.live()
        observers = live - self.paused
        views = {
            n: (self.nodes[n].view["members"] if self.nodes[n].views else None) for n in observers
        }
        problems = invariants.membership_violations(views, live, self.down)
        self.samples.append((now, not problems, problems[:3]))
        self.cpu.tick(now, [self.nodes[n].proc.pid for n in live])

    def right_for(self, since: float) -> float:
        """Seconds the membership has been listed right without a break (samples after
        ``since`` only; 0 when the latest is wrong)."""
        held = invariants.held_since([(at, ok) for at, ok, _ in self.samples if at > since])
        return 0.0 if held is None else self.samples[-1][0] - held

    def usage(self) -> dict[str, Usage]:
        return {
            n: Usage(
                self.nodes[n].proc.pid,
                int(self.nodes[n].view.get("rss", 0)),
                int(self.nodes[n].view.get("fds", 0)),
            )
            for n in self.live()
            if self.nodes[n].views
        }

    # -- faults -----------------------------------------------------------------------------

    def script(self) -> Iterator[Fault]:
        """The plan's faults, built as they come (each sees the state the last one left)."""
        assert self.lan is not None
        lan, plan, hosts = self.lan, self.plan, self.lan.hosts
        short, long, _ = plan.timings
        last = plan.hosts  # the last host of the first set; the extra one joins after it
        victim = "h2n0"  # a calc provider
        db = next(n for n, offered in self.offered.items() if "db" in offered)
        doomed = hosts[(4 if plan.hosts >= 4 else 2) - 1]
        clear = partial(faults.clear_rules, lan)
        for name in plan.faults:
            if name == "kill-node":
                yield Fault(name, partial(self._kill_all, [victim]))
            elif name == "restart-node":
                yield Fault(name, partial(self.start_nodes, [victim]))
            elif name == "stop-short":
                yield Fault(
                    f"{name} ({short:.2f} s)",
                    partial(self._stop, "h3n0"),
                    partial(self._cont, "h3n0"),
                    hold=short,
                )
            elif name == "stop-long":
                yield Fault(
                    f"{name} ({long:.1f} s)",
                    partial(self._stop, db),
                    partial(self._cont, db),
                    hold=long,
                    excused={db},
                )
            elif name == "kill-host":
                yield Fault(name, partial(self._kill_all, self.host_nodes(doomed.index)))
            elif name == "restart-host":
                yield Fault(name, partial(self.start_nodes, self.host_nodes(doomed.index)))
            elif name == "cut-host":
                host = hosts[last - 1]
                cut = set(self.host_nodes(host.index))
                yield Fault(
                    name,
                    host.cut,
                    host.restore,
                    hold=plan.hold,
                    excused=cut,
                    sides=dict.fromkeys(cut, 1),
                )
            elif name == "split":
                half = plan.hosts // 2
                rules = faults.split_rules(hosts[:half], hosts[half:last])
                sides = {n: int(h.index > half) for h in hosts for n in self.host_nodes(h.index)}
                yield Fault(
                    name, partial(faults.set_rules, lan, rules), clear, hold=plan.hold, sides=sides
                )
            elif name == "loss":
                rule = faults.loss_rule(plan.loss_percent)
                yield Fault(
                    f"loss {plan.loss_percent}%",
                    partial(faults.set_rules, lan, [rule]),
                    clear,
                    hold=plan.hold,
                )
            elif name == "one-way-loss":
                host = hosts[2]
                rule = faults.loss_rule(plan.one_way_percent, host)
                yield Fault(
                    f"one-way loss {plan.one_way_percent}% from {host.name}",
                    partial(faults.set_rules, lan, [rule]),
                    clear,
                    hold=plan.hold,
                    excused=set(self.host_nodes(host.index)),
                )
            elif name == "join-host":
                yield Fault(name, partial(self.start_nodes, self.host_nodes(hosts[last].index)))
            elif name == "leave-host":
                yield Fault(name, partial(self._leave, self.host_nodes(last + 1)))
            else:
                raise ValueError(f"unknown fault {name!r}")

    def faulted_pids(self) -> set[int]:
        return self.killed_pids | self.cut_off_pids

    def _kill_all(self, names: list[str]) -> None:
        for name in names:
            self.kill(name)

    def _stop(self, name: str) -> None:
        faults.send_signal(self.nodes[name].proc.pid, signal.SIGSTOP)
        self.paused.add(name)

    def _cont(self, name: str) -> None:
        faults.send_signal(self.nodes[name].proc.pid, signal.SIGCONT)
        self.paused.discard(name)

    def _exited(self, name: str) -> bool:
        return self.nodes[name].proc.poll() is not None

    def _leave(self, names: list[str]) -> None:
        """SIGTERM: a clean leave (goodbye to the peers)."""
        for name in names:
            faults.send_signal(self.nodes[name].proc.pid, signal.SIGTERM)
        for name in names:
            self.run_until(partial(self._exited, name), 15.0)
            self._gone(name)

    # -- running ----------------------------------------------------------------------------

    def setup(self) -> None:
        plan = self.plan
        extra = 1 if "join-host" in plan.faults else 0
        self.lan = Lan(plan.hosts + extra)
        self.cluster = Cluster(self.lan, self.workdir)
        started = [
            self.start_node(h, s)
            for h in self.lan.hosts[: plan.hosts]
            for s in range(plan.per_host)
        ]
        self.cluster.wait_ready(started, 120.0)
        _, _, bound = plan.timings
        t0 = time.time()
        formed = self.run_until(lambda: bool(self.samples) and self.samples[-1][1], 2 * bound)
        if formed is None:
            raise RuntimeError(f"the mesh did not form within {2 * bound:.0f} s")
        self.log(f"mesh of {len(started)} nodes formed in {formed - t0:.1f} s after ready")
        for node in started:
            self.subscribe(node)
            # Connections to providers open on first use: open them all before the
            # baseline (each target called WARM_CALLS times at once from every node,
            # so that "fewest outstanding" reaches every provider), or the resources
            # grow by them over the run.
            for _ in range(WARM_CALLS):
                for target, _idempotent in TARGETS:
                    node.send(f"call {target}")
        self.run_for(plan.warmup)
        self.baseline = self.usage()

    def run(self) -> list[Window]:
        """Set up, run every fault, check what is checked over the whole run; the LAN is
        torn down whatever happens."""
        try:
            self.setup()
            for fault in self.script():
                self.window(fault)
            self.finish()
            self.completed = True
        finally:
            self.close()
        return self.windows

    def window(self, fault: Fault) -> None:
        plan = self.plan
        _, _, bound = plan.timings
        usage = self.usage()
        w = Window(fault.name, time.time())
        fault.excused |= self.down  # killed before: still listed dead until restarted
        w.rss_before = sum(u.rss for u in usage.values()) / 1e6
        w.fds_before = sum(u.fds for u in usage.values())
        self.log(f"fault: {fault.name}")
        sender_side = fault.sides.get("h1n1", 0)
        self.cut_off_pids |= {
            self.nodes[n].proc.pid
            for n, side in fault.sides.items()
            if side != sender_side and n in self.nodes
        }
        fault.apply()
        self.run_for(fault.hold)
        fault.revert()
        w.revert = time.time()
        # Until the membership has been listed right for `steady` seconds in a row (a
        # heal brings transient suspicions: the invariant is to converge and stay right).
        self.run_until(lambda: self.right_for(w.revert) >= plan.steady, bound + plan.steady)
        w.end = time.time()
        usage = self.usage()
        w.rss_after = sum(u.rss for u in usage.values()) / 1e6
        w.fds_after = sum(u.fds for u in usage.values())
        w.cpu, w.cpu_peak = self.cpu.mean(w.start, w.end), self.cpu.peak(w.start, w.end)
        w.rows = self.evaluate(w, fault, bound)
        self.windows.append(w)
        for row in w.rows:
            self.log(f"  {format_row(row)}")

    def _held(
        self,
        fault: str,
        name: str,
        w: Window,
        samples: list[Sample],
        limit: float,
        detail: str = "",
    ) -> Row:
        if not samples:
            return Row(fault, name, None, True, f"{detail} (none in this window)")
        since = invariants.held_since(samples)
        after = None if since is None else max(0.0, since - w.revert)
        ok = after is not None and after <= limit
        return Row(fault, name, after, ok, detail)

    def evaluate(self, w: Window, fault: Fault, bound: float) -> list[Row]:
        rows = []
        members = [(t, ok) for t, ok, _ in self.samples if w.start <= t <= w.end]
        last = next((p for t, ok, p in reversed(self.samples) if not ok and t <= w.end), [])
        rows.append(
            self._held(
                w.fault,
                "members listed right",
                w,
                members,
                bound,
                "; ".join(last) if members and not members[-1][1] else "",
            )
        )
        healthy = self.live() - self.paused - fault.excused
        lines = [
            (n.name, float(v["t"]), v["members"])
            for n in self.nodes.values()
            for v in n.views
            if w.start <= v["t"] <= w.end
        ]
        deaths = [
            d
            for d in invariants.false_deaths(lines, healthy)
            if fault.sides.get(d.observer, 0) == fault.sides.get(d.name, 0)
        ]
        # Since a death heard is believed only after a last direct ping (docs/membership.md,
        # "The last check"), the other side's claims at a heal are no excuse either.
        detail = "; ".join(map(str, deaths[:3]))
        rows.append(Row(w.fault, "no healthy node dead", None, not deaths, detail))
        sent = [c for c in self.calls if w.start <= c[4] <= w.end]
        calls = [self._call(c) for c in sent]
        excused = fault.excused | self.down
        late = invariants.late_calls(calls, time.time(), self.plan.deadline_slack, excused)
        rows.append(
            Row(
                w.fault,
                "no call past its deadline",
                None,
                not late,
                f"{len(late)} of {len(calls)}: " + "; ".join(late[:3])
                if late
                else f"{len(calls)} calls",
            )
        )
        codes = invariants.failure_codes(calls)
        examples: dict[str | None, str] = {}
        for node, seq, target, _, _ in sent:
            answer = node.answers.get(seq, {})
            if answer.get("event") == "error":
                examples.setdefault(
                    answer.get("code"), f"{node.name} {target}: {answer.get('error')}"[:160]
                )
        rows.append(
            self._held(
                w.fault,
                "calls succeed",
                w,
                invariants.call_samples(calls, idempotent_only=True),
                bound,
                ", ".join(f"{k} x{v} ({examples.get(k, '')})" for k, v in sorted(codes.items())),
            )
        )
        grace = self.plan.grace
        published = [(t, n) for t, n in self.events if w.start <= t <= w.end - grace]
        received = {
            name: {e["data"] for e in node.events if e["topic"] == BROADCAST}
            for name, node in self.nodes.items()
            if name in self.subscribed
        }
        missed = [
            n
            for n, since in self.subscribed.items()
            if published
            and since < published[-1][0]
            and published[-1][1] not in received.get(n, ())
        ]
        rows.append(
            self._held(
                w.fault,
                "events reach subscribers",
                w,
                invariants.event_samples(published, received, self.subscribed),
                bound,
                f"{len(published)} events"
                + (f"; the last missed by {', '.join(sorted(missed))}" if missed else ""),
            )
        )
        items = [(t, n) for t, n in self.items if w.start <= t <= w.end - grace]
        got = {
            name: [e["data"] for e in node.events if e["topic"].startswith(GROUP_PREFIX)]
            for name, node in self.nodes.items()
        }
        for old in self.cluster.retired if self.cluster else []:
            got.setdefault(f"{old.name}#{old.proc.pid}", []).extend(
                e["data"] for e in old.events if e["topic"].startswith(GROUP_PREFIX)
            )
        samples, doubles = invariants.group_samples(items, got)
        doubles = [n for n in doubles if any(m == n for _, m in items)]
        rows.append(
            self._held(
                w.fault,
                "queue group items delivered",
                w,
                samples,
                bound,
                f"{len(items)} items, {len(doubles)} received twice",
            )
        )
        job_samples = self._job_samples(w.start, w.end - grace)
        rows.append(
            self._held(w.fault, "jobs finish", w, job_samples, bound, f"{len(job_samples)} jobs")
        )
        return rows

    def _call(self, record: tuple[LanNode, int, str, bool, float]) -> Call:
        node, seq, target, idempotent, sent = record
        answer = node.answers.get(seq)
        if answer is None:
            return Call(node.name, target, idempotent, sent, self.plan.call_timeout)
        return Call(
            node.name,
            target,
            idempotent,
            sent,
            self.plan.call_timeout,
            float(answer["t"]),
            answer["event"] == "result",
            answer.get("code"),
        )

    def job_lines(self) -> list[tuple[str, int, int]]:
        lines = []
        for raw in self.job_log.read_text().splitlines():
            what, n, pid = raw.split()
            lines.append((what, int(n), int(pid)))
        return lines

    def _job_samples(self, start: float, end: float) -> list[Sample]:
        finished = {n for what, n, _ in self.job_lines() if what in ("done", "reject")}
        return [
            (t, n in finished)
            for node, seq, n, t in self.jobs
            if start <= t <= end and node.answers.get(seq, {}).get("event") == "enqueued"
        ]

    def finish(self) -> None:
        """After the last fault: the jobs drain, then the whole run's job and resource
        checks."""

        def enqueued() -> list[int]:
            return [
                n
                for node, seq, n, _ in self.jobs
                if node.answers.get(seq, {}).get("event") == "enqueued"
            ]

        self.plan.jobs_per_second = 0.0
        start = time.time()
        _, _, bound = self.plan.timings
        self.run_until(
            lambda: (
                not invariants.job_report(enqueued(), self.job_lines(), self.faulted_pids()).pending
            ),
            bound,
        )
        report = invariants.job_report(enqueued(), self.job_lines(), self.faulted_pids())
        ok = not report.pending and not report.twice
        detail = (
            f"enqueued {report.enqueued} = done {report.done} + dead {report.dead}"
            f"{' + pending ' + str(len(report.pending)) if report.pending else ''}; "
            f"run twice: {len(report.twice)} {report.twice[:3]}; again after a "
            f"SIGKILL or a partition: {len(report.again_after_fault)}"
        )
        self.final_rows.append(
            Row(
                "whole run",
                "jobs: enqueued = done + dead, none twice",
                time.time() - start,
                ok,
                detail,
            )
        )
        # A node keeps the members that left or died (and their connections) for
        # dead_ttl: compare the resources once every node has forgotten them.
        live = self.live()
        self.run_until(
            lambda: all(set(self.nodes[n].view["members"]) <= live for n in live),
            PROFILES[self.plan.profile].membership.dead_ttl + 10.0,
        )
        self.final = self.usage()
        growth = invariants.resource_growth(self.baseline, self.final, 0.25, 10)
        kept = [
            n
            for n in self.baseline
            if n in self.final and self.final[n].pid == self.baseline[n].pid
        ]
        self.final_rows.append(
            Row(
                "whole run",
                "RSS and fds flat",
                None,
                not growth,
                "; ".join(growth[:4]) or f"{len(kept)} processes compared",
            )
        )

    def close(self) -> None:
        if self.lan is not None:
            self.lan.close()  # kills every process by PID, deletes the namespaces

    # -- the report -------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        return [r for w in self.windows for r in w.rows] + self.final_rows

    def passed(self) -> bool:
        """Every fault ran and every invariant held."""
        return self.completed and all(r.ok for r in self.rows())

    def figures(self) -> dict[str, Any]:
        """Everything measured, for ``--json``."""
        return {
            "plan": dataclasses.asdict(self.plan),
            "timings": dict(
                zip(("stop_short", "stop_long", "bound"), self.plan.timings, strict=True)
            ),
            "cpus": self.cpu.cpus,
            "windows": [dataclasses.asdict(w) for w in self.windows],
            "whole_run": [dataclasses.asdict(r) for r in self.final_rows],
            "baseline": {n: dataclasses.asdict(u) for n, u in self.baseline.items()},
            "final": {n: dataclasses.asdict(u) for n, u in self.final.items()},
            "cpu_samples": self.cpu.samples,
            "passed": self.passed(),
        }


def format_row(row: Row) -> str:
    held = "-" if row.held_after is None else f"{row.held_after:.1f} s"
    return f"{row.invariant:<30} {held:>8}  {'pass' if row.ok else 'FAIL'}  {row.detail}"


def report(campaign: Campaign) -> str:
    """The table: fault, invariant, time to hold, pass/fail, CPU (campaign/machine)."""
    lines = [f"{'fault':<28} {'invariant':<30} {'held':>8}  result  detail"]
    for w in campaign.windows:
        cpu = "?" if w.cpu is None else f"{w.cpu[1]:.0f}% ours, {w.cpu[0]:.0f}% machine"
        peak = "" if w.cpu_peak is None else f" (peak {w.cpu_peak[1]:.0f}%/{w.cpu_peak[0]:.0f}%)"
        lines.append(
            f"{w.fault} [{w.end - w.start:.0f} s; CPU {cpu}{peak}; RSS "
            f"{w.rss_before:.0f}->{w.rss_after:.0f} MB, fds {w.fds_before}->"
            f"{w.fds_after}]"
        )
        for row in w.rows:
            lines.append(f"{'':<28} {format_row(row)}")
    for row in campaign.final_rows:
        lines.append(f"{row.fault:<28} {format_row(row)}")
    total = campaign.cpu.mean(0.0, float("inf"))
    if total is not None:
        lines.append(
            f"CPU over the run: {total[1]:.0f}% ours, {total[0]:.0f}% machine "
            f"(of {campaign.cpu.cpus} CPUs)"
        )
    if not campaign.completed:
        lines.append("INCOMPLETE: the campaign stopped early")
    lines.append("PASSED" if campaign.passed() else "FAILED")
    return "\n".join(lines)


def write_json(campaign: Campaign, path: Path) -> None:
    path.write_text(json.dumps(campaign.figures(), indent=1, default=str))


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so ``finally`` tears the LAN down."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


__all__ = ["SHORT", "Campaign", "Plan", "assign", "interrupt_on_sigterm", "report", "write_json"]
