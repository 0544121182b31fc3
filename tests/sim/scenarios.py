"""Scenarios on the simulated network, and what they measure.

:func:`standard` is the run that CI makes at 1,000 nodes and ``just sim`` at 10,000:
a converged mesh, then one after another a join through one seed, a crash (a host
lost: no signal), a kill (a process dies: its peers see the connection reset), 10%
message loss, a stalled node, a partition that cuts off a tenth of the nodes (100 at
most) and heals, a graceful leave and a restart
under the same name, each measured by a :class:`Tracker`:

- join known by all: from the join until every running node lists the newcomer;
- crash (and kill) suspected by all / dead by all: until every running node has it
  suspect (or dead) / dead;
- false positives: a node that was running, not stalled past the suspicion time and
  not cut off, declared dead by anyone;
- bytes per node per second, mean and max over nodes (against the budget).

:func:`lossy` is a shorter run under steady message loss from the start (``just sim``
runs it at 0%, 5% and 20%): a join, then a crash, measured the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh._config import PROFILES, MembershipSettings
from mesh._core.membership import Change, suspicion_bounds

from .network import Network, SimNode

#: Nodes cut off by the partition: a tenth of the mesh, at most this many. What the
#: heal costs grows with the number of nodes cut off (each must refute, and every
#: other node must hear it), not with the mesh: 1,000 cut off from 9,000 floods any
#: budget (docs/membership.md, "Figures"). 0: a tenth, however large.
ISLAND = 100


@dataclass
class Episode:
    """One measured event: when it happened and when each node saw it."""

    name: str
    subject: str
    start: float
    kinds: tuple[str, ...]
    seen: dict[int, float] = field(default_factory=dict)

    def all_seen_after(self, observers: list[SimNode]) -> float | None:
        """Seconds until every one of ``observers`` saw it; None if one never did."""
        times = [self.seen.get(n.index) for n in observers]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None) - self.start

    def first_seen_after(self) -> float | None:
        """Seconds until the first node saw it."""
        return min(self.seen.values()) - self.start if self.seen else None

    def percentile(self, observers: list[SimNode], q: float) -> float | None:
        times = sorted(self.seen[n.index] - self.start for n in observers if n.index in self.seen)
        if len(times) < len(observers):
            return None
        return times[min(len(times) - 1, math.ceil(q * len(times)) - 1)]


class Tracker:
    """Watches every change every core reports."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.episodes: list[Episode] = []
        self.false_positives: list[tuple[float, int, str]] = []
        #: Node ids that may be declared dead without it being a false positive.
        self.expected_dead: set[str] = set()
        network.observers.append(self._observe)

    def watch(self, name: str, subject: str, kinds: tuple[str, ...]) -> Episode:
        episode = Episode(name, subject, self.network.now, kinds)
        self.episodes.append(episode)
        return episode

    def _observe(self, node: SimNode, change: Change) -> None:
        member = change.member
        for episode in self.episodes:
            if (
                member.id == episode.subject
                and change.kind in episode.kinds
                and node.index not in episode.seen
            ):
                episode.seen[node.index] = change.at
        if change.kind == "failed" and member.id not in self.expected_dead:
            self.false_positives.append((change.at, node.index, member.name))


@dataclass
class Report:
    scenario: str
    nodes: int
    profile: str
    seed: int
    simulated: float
    wall: float
    figures: dict[str, float | None]
    false_positives: int
    #: Each phase of the campaign (its name and start) with the false positives in it.
    false_positives_by_phase: dict[str, int]
    bytes_per_node_s_mean: float
    bytes_per_node_s_max: float
    budget: int
    delivered: int
    lost: int

    def lines(self) -> list[str]:
        out = [
            f"{self.scenario}: {self.nodes} nodes, profile {self.profile}, seed {self.seed}: "
            f"{self.simulated:.0f} s simulated in {self.wall:.1f} s of wall time, "
            f"{self.delivered:,} messages delivered, {self.lost:,} lost"
        ]
        for name, value in self.figures.items():
            shown = "never" if value is None else f"{value:.2f} s"
            out.append(f"  {name:<40} {shown}")
        out.append(f"  {'false positives (healthy declared dead)':<40} {self.false_positives}")
        for phase, count in self.false_positives_by_phase.items():
            if count:
                out.append(f"    {'during ' + phase:<38} {count}")
        out.append(
            f"  {'bytes per node per second':<40} mean {self.bytes_per_node_s_mean:,.0f}, "
            f"max {self.bytes_per_node_s_max:,.0f} (budget {self.budget:,})"
        )
        return out


def standard(
    nodes: int = 1_000,
    seed: int = 1,
    profile: str = "lan",
    settings: MembershipSettings | None = None,
    progress: Callable[[str], None] | None = None,
    island_size: int = ISLAND,
) -> Report:
    """The standard campaign (see the module docstring)."""
    settings = settings or PROFILES[profile].membership
    started = time.perf_counter()
    net = Network(nodes, settings, seed)
    tracker = Tracker(net)
    low, _ = suspicion_bounds(settings, nodes)
    step = max(10.0, 2.5 * low)  # each fault gets time to be suspected and declared dead
    t = 5.0 * settings.probe_interval

    phases: list[tuple[float, str]] = []
    say = _narrator(net, phases, progress, started)

    # 1. a join through one seed
    net.run_until(t)
    newcomer = net.join(seed=0)
    join = tracker.watch("join known by all", newcomer.member.id, ("joined",))
    say("joined one node through a seed")
    # 2. a crash
    t += 5.0 * settings.probe_interval
    net.run_until(t)

    def fail(node: SimNode, how: Callable[[int], None], name: str) -> tuple[Episode, Episode]:
        """Stop ``node`` by ``how`` and watch the mesh notice; then give it the time."""
        tracker.expected_dead.add(node.member.id)
        how(node.index)
        say(f"{name} one node")
        suspected = tracker.watch(f"{name} suspected by all", node.member.id, ("suspect", "failed"))
        dead = tracker.watch(f"{name} dead by all", node.member.id, ("failed",))
        net.run_until(net.now + step)
        return suspected, dead

    victim = net.nodes[1]
    suspected, dead = fail(victim, net.crash, "crash")
    # 2b. a process killed: its peers see the TCP reset
    killed = net.nodes[nodes - 1]
    kill_suspected, kill_dead = fail(killed, net.kill, "kill")
    t = net.now
    # 3. 10% message loss, everywhere, for a while
    say("10% message loss")
    net.loss = 0.10
    t += 10.0 * settings.probe_interval
    net.run_until(t)
    net.loss = 0.0
    # 4. a node whose loop stalls for twice the probe interval (1 s on lan)
    say("one node stalls")
    net.stall(2, 2.0 * settings.probe_interval)
    t += 5.0 * settings.probe_interval
    net.run_until(t)
    # 5. a partition (``island`` nodes cut off), healed before the suspicion ends
    say("partition")
    tenth = max(2, min(nodes // 10, island_size)) if island_size else max(2, nodes // 10)
    island = list(range(3, 3 + tenth))
    rest = [n.index for n in net.nodes if n.index not in island]
    net.cut(island, rest)
    net.run_until(t + 0.4 * low)
    net.heal()
    say("healed")
    t += step
    net.run_until(t)
    # 6. a graceful leave, and a restart under the same name and address
    leaver = net.nodes[3 + tenth]
    tracker.expected_dead.add(leaver.member.id)
    net.leave(leaver.index)
    left = tracker.watch("leave known by all", leaver.member.id, ("left",))
    restarted_old = net.nodes[4 + tenth]
    tracker.expected_dead.add(restarted_old.member.id)
    net.crash(restarted_old.index)
    restarted = net.join(seed=0, name=restarted_old.member.name)
    replaced = tracker.watch("restart replaces the old id", restarted_old.member.id, ("replaced",))
    say("a leave and a restart")
    t += 5.0 * settings.probe_interval
    net.run_until(t)

    observers = net.running()
    crash_observers = [n for n in observers if n.index != victim.index]
    kill_observers = [n for n in crash_observers if n.index != killed.index]
    join_observers = [n for n in observers if n.started <= join.start and n is not newcomer]
    # Those that were there before the leave and the restart (and are still running).
    settled = [n for n in observers if n is not restarted and n is not leaver]
    figures: dict[str, float | None] = {
        "join known by all (p50)": join.percentile(join_observers, 0.5),
        "join known by all (p99)": join.percentile(join_observers, 0.99),
        "join known by all (max)": join.all_seen_after(join_observers),
        "crash first suspected": suspected.first_seen_after(),
        "crash suspected by all (max)": suspected.all_seen_after(crash_observers),
        "crash dead by all (p50)": dead.percentile(crash_observers, 0.5),
        "crash dead by all (max)": dead.all_seen_after(crash_observers),
        "kill suspected by all (max)": kill_suspected.all_seen_after(kill_observers),
        "kill dead by all (max)": kill_dead.all_seen_after(kill_observers),
        "leave known by all (max)": left.all_seen_after(settled),
        "restart replaced everywhere (max)": replaced.all_seen_after(settled),
    }
    return _report("standard", nodes, net, tracker, figures, phases, profile, seed, started)


def lossy(
    nodes: int = 1_000,
    loss: float = 0.05,
    seed: int = 1,
    profile: str = "lan",
    settings: MembershipSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """A converged mesh losing ``loss`` of all messages from the start: a join through
    one seed, then a crash, each given the time to be known by all."""
    settings = settings or PROFILES[profile].membership
    started = time.perf_counter()
    net = Network(nodes, settings, seed)
    net.loss = loss
    tracker = Tracker(net)
    _, high = suspicion_bounds(settings, nodes)
    phases: list[tuple[float, str]] = []
    say = _narrator(net, phases, progress, started)

    say(f"{loss:.0%} message loss")
    net.run_until(5.0 * settings.probe_interval)
    newcomer = net.join(seed=0)
    join = tracker.watch("join known by all", newcomer.member.id, ("joined",))
    say("joined one node through a seed")
    net.run_until(net.now + 5.0 * settings.probe_interval)
    victim = net.nodes[1]
    tracker.expected_dead.add(victim.member.id)
    net.crash(victim.index)
    suspected = tracker.watch("crash suspected by all", victim.member.id, ("suspect", "failed"))
    dead = tracker.watch("crash dead by all", victim.member.id, ("failed",))
    say("crashed one node")
    # Until both are known by all, or the longest suspicion and then some have passed.
    observers = net.running()
    join_observers = [n for n in observers if n is not newcomer]
    limit = net.now + high + 10.0 * settings.probe_interval
    while net.now < limit and (
        dead.all_seen_after(observers) is None or join.all_seen_after(join_observers) is None
    ):
        net.run_until(net.now + settings.probe_interval)
    figures: dict[str, float | None] = {
        "join known by all (p50)": join.percentile(join_observers, 0.5),
        "join known by all (max)": join.all_seen_after(join_observers),
        "crash suspected by all (max)": suspected.all_seen_after(observers),
        "crash dead by all (p50)": dead.percentile(observers, 0.5),
        "crash dead by all (max)": dead.all_seen_after(observers),
    }
    name = f"{loss:.0%} loss"
    return _report(name, nodes, net, tracker, figures, phases, profile, seed, started)


def _narrator(
    net: Network,
    phases: list[tuple[float, str]],
    progress: Callable[[str], None] | None,
    started: float,
) -> Callable[[str], None]:
    """``say(text)``: note a phase of the run (its start, for the false positives by
    phase) and report progress, in simulated and wall time."""

    def say(text: str) -> None:
        phases.append((net.now, text))
        if progress is not None:
            progress(f"[{net.now:7.1f} s sim, {time.perf_counter() - started:6.1f} s wall] {text}")

    return say


def _report(
    scenario: str,
    nodes: int,
    net: Network,
    tracker: Tracker,
    figures: dict[str, float | None],
    phases: list[tuple[float, str]],
    profile: str,
    seed: int,
    started: float,
) -> Report:
    rates = [n.bytes_sent / max(1e-9, net.now - n.started) for n in net.nodes]
    return Report(
        scenario=scenario,
        nodes=nodes,
        profile=profile,
        seed=seed,
        simulated=net.now,
        wall=time.perf_counter() - started,
        figures=figures,
        false_positives=len(tracker.false_positives),
        false_positives_by_phase=_by_phase(tracker.false_positives, phases),
        bytes_per_node_s_mean=sum(rates) / len(rates),
        bytes_per_node_s_max=max(rates),
        budget=net.settings.budget,
        delivered=net.delivered,
        lost=net.lost,
    )


def _by_phase(
    found: list[tuple[float, int, str]], phases: list[tuple[float, str]]
) -> dict[str, int]:
    counts = {f"{text} ({start:.0f} s)": 0 for start, text in phases}
    keys = list(counts)
    for at, _, _ in found:
        index = max((i for i, (start, _) in enumerate(phases) if start <= at), default=0)
        counts[keys[index]] += 1
    return counts
