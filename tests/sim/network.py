"""A deterministic network of membership cores on a virtual clock.

Every node runs the real :class:`mesh._core.membership.Membership`; this module only moves
its messages and calls its timers, modelling the transport mesh uses (TCP through
ZeroMQ), not UDP:

- per-link FIFO queues with a base delay and jitter (a later message never overtakes
  an earlier one on the same link);
- message loss where a connection drops (``loss``: a dropped message is gone);
- connection resets (``reset``: in-flight messages are lost and both ends get the
  transport's "disconnected" signal);
- link stalls (``hold``): messages wait and then arrive in one burst, in order;
- one-way and two-way partitions (``cut``/``heal``): messages are lost while cut;
- nodes whose own loop stalls (``stall``): nothing runs on them for a while, then the
  messages that waited are handled first, then the timers (as asyncio does);
- crashes (``crash``: no more answers, no signal, like a host that lost power; ``kill``:
  a process that dies on a live host, whose peers see their connections reset), joins
  through a seed, graceful leaves.

Everything that happens is ordered by (time, sequence number) in one heap and every
random choice comes from one seeded ``random.Random`` (each core gets its own, derived
from it), and nothing iterates a set: the same seed gives the same run under any
``PYTHONHASHSEED``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mesh._config import MembershipSettings
from mesh._core.membership import Change, Member, Membership, Message, Send, Status

#: One-way delay on the simulated LAN and its jitter (seconds).
DELAY = 0.0003
JITTER = 0.0004

_TICK = 0
_DELIVER = 1
_CALL = 2


@dataclass(slots=True)
class SimNode:
    """One simulated node: its core and what the network knows of it."""

    index: int
    member: Member
    core: Membership
    running: bool = True
    stalled_until: float = 0.0
    #: The time of the tick in the heap that is current (older ones are stale).
    tick_at: float = -1.0
    bytes_sent: int = 0
    started: float = 0.0
    #: Messages that arrived while the loop was stalled, in arrival order.
    waiting: list[Message] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.member.address


class Network:
    """N nodes, their links and a virtual clock; see the module docstring."""

    def __init__(
        self,
        size: int,
        settings: MembershipSettings,
        seed: int,
        *,
        delay: float = DELAY,
        jitter: float = JITTER,
    ) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.now = 0.0
        self.delay = delay
        self.jitter = jitter
        #: Probability that a message is lost (where a connection drops).
        self.loss = 0.0
        self.nodes: list[SimNode] = []
        self._by_address: dict[str, SimNode] = {}
        self._heap: list[tuple[float, int, int, int, object]] = []
        self._seq = 0
        #: FIFO: the last delivery time of each link with a message in flight (a link
        #: whose last message has arrived is free; such entries are pruned).
        self._link_free: dict[tuple[int, int], float] = {}
        self._prune_at = 1024
        #: For each node, the nodes that have a connection to it (have sent it anything).
        self._connected: dict[int, set[int]] = {}
        self._cut: dict[tuple[int, int], bool] = {}  # (src, dst) -> True while cut
        self._held: dict[tuple[int, int], float] = {}  # (src, dst) -> held until
        #: Every change every core reported: (observer index, change).
        self.observers: list[Callable[[SimNode, Change], None]] = []
        self.delivered = 0
        self.lost = 0
        members = [self._new_member(i) for i in range(size)]
        for i, member in enumerate(members):
            self._add_node(i, member, known=members)

    # -- building -----------------------------------------------------------------------

    def _new_member(self, index: int) -> Member:
        node_id = f"{self.rng.getrandbits(128):032x}"  # like secrets.token_hex(16)
        address = f"tcp://10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}:7946"
        return Member(node_id, f"node-{index}", address)

    def _add_node(self, index: int, member: Member, known: list[Member]) -> SimNode:
        core = Membership(
            member, self.settings, random.Random(self.rng.getrandbits(64)), self.now, known
        )
        node = SimNode(index, member, core, started=self.now)
        if index == len(self.nodes):
            self.nodes.append(node)
        else:
            self.nodes[index] = node
        self._by_address[member.address] = node
        self._schedule_tick(node)
        return node

    # -- faults and operations ----------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``when``."""
        self._push(when, _CALL, -1, action)

    def join(self, seed: int = 0, name: str | None = None) -> SimNode:
        """A new node (or a restarted one, when ``name`` reuses a name and its address)
        joins through the node ``seed``."""
        index = len(self.nodes)
        member = self._new_member(index)
        if name is not None:
            old = next(n for n in self.nodes if n.member.name == name)
            member = Member(member.id, name, old.address)
            index = old.index
        node = self._add_node(index, member, known=[])
        self._join_through(node, self.nodes[seed].address, self.settings.probe_interval)
        return node

    def _join_through(self, node: SimNode, seed: str, delay: float) -> None:
        """Sync with the seed, and again after ``delay`` (doubling) while the node knows
        nobody, as ``Node`` does: the first sync or its answer may be lost."""
        if not node.running or self.nodes[node.index] is not node:
            return
        if node.core.live_count() <= 1:
            self._sent(node, node.core.join([seed], self.now))
            later = min(2 * delay, self.settings.push_pull_interval)
            self.at(self.now + delay, lambda: self._join_through(node, seed, later))

    def crash(self, index: int) -> None:
        """The node stops answering, with no signal to anyone (a host that lost power)."""
        node = self.nodes[index]
        node.running = False

    def kill(self, index: int) -> None:
        """The node's process dies on a live host: the kernel resets its connections,
        so every node that has one (that has sent it anything) gets "disconnected"."""
        self.crash(index)
        address = self.nodes[index].address
        peers = sorted(self._connected.get(index, ()))
        for src in peers:
            peer = self.nodes[src]
            if peer.running:
                when = self.now + self.delay + self.rng.random() * self.jitter
                self.at(when, lambda p=peer: self._sent(p, p.core.disconnected(address, self.now)))

    def leave(self, index: int, linger: float = 0.5) -> None:
        """A graceful leave: the node says so, then stops ``linger`` seconds later."""
        node = self.nodes[index]
        self._sent(node, node.core.leave(self.now))
        self.at(self.now + linger, lambda: self.crash(index))

    def stall(self, index: int, duration: float) -> None:
        """The node's own loop runs nothing for ``duration`` seconds."""
        self.nodes[index].stalled_until = self.now + duration

    def cut(self, group_a: Iterable[int], group_b: Iterable[int], both_ways: bool = True) -> None:
        """Lose every message from ``group_a`` to ``group_b`` (and back, if ``both_ways``)."""
        b = list(group_b)
        for src in group_a:
            for dst in b:
                self._cut[(src, dst)] = True
                if both_ways:
                    self._cut[(dst, src)] = True

    def heal(self) -> None:
        self._cut.clear()

    def hold(self, src: int, dst: int, duration: float) -> None:
        """Messages from ``src`` to ``dst`` wait ``duration`` seconds, then arrive in a burst."""
        self._held[(src, dst)] = self.now + duration

    def reset(self, a: int, b: int) -> None:
        """The connection between ``a`` and ``b`` resets: both ends are told."""
        for src, dst in ((a, b), (b, a)):
            self._link_free[(src, dst)] = self.now
            node = self.nodes[src]
            if node.running:
                self._sent(node, node.core.disconnected(self.nodes[dst].address, self.now))

    # -- running ------------------------------------------------------------------------

    def run_until(self, end: float) -> None:
        """Process everything that happens up to simulated time ``end``."""
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _, kind, index, payload = heapq.heappop(heap)
            self.now = when
            if kind == _CALL:
                assert callable(payload)
                payload()
                continue
            node = self.nodes[index]
            if not node.running:
                continue
            if when < node.stalled_until:
                if kind == _DELIVER:
                    node.waiting.append(payload)  # type: ignore[arg-type]
                elif node.tick_at == when:
                    node.tick_at = -1.0
                    self._push(node.stalled_until, _TICK, index, None)
                    node.tick_at = node.stalled_until
                continue
            if node.waiting:
                waiting, node.waiting = node.waiting, []
                for message in waiting:
                    self._handle(node, message)
            if kind == _DELIVER:
                self._handle(node, payload)  # type: ignore[arg-type]
            elif node.tick_at == when:
                node.tick_at = -1.0
                self._sent(node, node.core.tick(when))
            self._schedule_tick(node)
        self.now = max(self.now, end)

    def _handle(self, node: SimNode, message: Message) -> None:
        self.delivered += 1
        self._sent(node, node.core.receive(message, self.now))

    def _sent(self, node: SimNode, sends: list[Send]) -> None:
        for change in node.core.changes():
            for observer in self.observers:
                observer(node, change)
        node.core.adverts()  # no catalog here: drop them
        rng = self.rng
        for send in sends:
            node.bytes_sent += send.size
            target = self._by_address.get(send.to)
            if target is None:
                continue
            link = (node.index, target.index)
            if self._cut.get(link) or (self.loss and rng.random() < self.loss):
                self.lost += 1
                continue
            arrival = self.now + self.delay + rng.random() * self.jitter
            held = self._held.get(link)
            if held is not None and held > arrival:
                arrival = held
            arrival = max(arrival, self._link_free.get(link, 0.0))
            self._link_free[link] = arrival
            self._connected.setdefault(target.index, set()).add(node.index)
            self._push(arrival, _DELIVER, target.index, send.message)
        self._schedule_tick(node)
        if len(self._link_free) > self._prune_at:
            now = self.now
            self._link_free = {link: t for link, t in self._link_free.items() if t > now}
            self._prune_at = 2 * len(self._link_free) + 1024

    def _schedule_tick(self, node: SimNode) -> None:
        if not node.running:
            return
        when = max(node.core.next_deadline(), self.now)
        if node.tick_at < 0 or when < node.tick_at:
            node.tick_at = when
            self._push(when, _TICK, node.index, None)

    def _push(self, when: float, kind: int, index: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, index, payload))

    # -- looking --------------------------------------------------------------------------

    def running(self) -> list[SimNode]:
        return [n for n in self.nodes if n.running]

    def view(self, observer: SimNode, member_id: str) -> Status | None:
        member = observer.core.get(member_id)
        return None if member is None else member.status
