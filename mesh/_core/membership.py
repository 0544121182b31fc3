"""Who is in the mesh: SWIM with Lifeguard, as a pure state machine.

No sockets, no asyncio, no clock: the node (or the simulator) calls
``receive(message, now)``, ``tick(now)``, ``disconnected(address, now)``,
``join(seeds, now)`` and ``leave(now)``; each returns the messages to send as
:class:`Send` records, and :meth:`Membership.next_deadline` says when ``tick`` is due.
Randomness comes from an injected ``random.Random``, so a seed replays a run.

States of a member and what moves it (an update wins over the current state when its
incarnation is higher, or equal and its state ranks higher: alive < suspect < dead/left;
the drawing is in docs/architecture.md, the details in docs/membership.md)::

    (unknown) --alive--> ALIVE --probe fails, every relay nacks / suspect heard--> SUSPECT
    SUSPECT --alive(i+1): the member refuted--> ALIVE
    SUSPECT --timer runs out or dead heard, then a last check unanswered--> DEAD
    ALIVE --dead heard, then a last check unanswered--> DEAD
    ALIVE, SUSPECT, DEAD --left(i+1), said by the member itself--> LEFT
    DEAD, LEFT --alive(i+1)--> ALIVE           DEAD, LEFT --dead_ttl later--> (forgotten)
    any --alive of another id with the same name and address--> (replaced at once)

A member refutes a suspicion (or a death) about itself by raising its incarnation and
gossiping ``alive``. Suspicion lasts from ``max`` down to ``min`` as independent
confirmations arrive (Lifeguard); see :func:`suspicion_timeout`. A node's own health
score (awareness, 0..awareness_max) rises when relays do not even nack its failed
probes, when it must refute a suspicion about itself and when its loop stalls, and
falls with each acknowledged probe; probe intervals and timeouts are multiplied by
``awareness + 1``. A failed probe accuses its target only if every relay nacked: when
most are silent, this node is the likelier one to be cut off (unless its score is at its
worst: then it has failed for long, and accuses again, slowly); when some are, messages
are being lost, and the target is probed again (see :meth:`Membership._judge`).

The transport is TCP (ZeroMQ), so messages arrive late and in bursts rather than being
lost: an ack is matched to its probe by sequence number and a late one is dropped; a
"disconnected" signal moves a probe forward and is never a verdict; a tick that comes
far later than :meth:`next_deadline` asked means this node's loop stalled, and every
running timer is extended by the stall instead of firing on stale evidence.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._config import MembershipSettings

__all__ = [
    "BURST_SECONDS",
    "MAX_INCARNATION_JUMP",
    "MEMBERSHIP_SHARE",
    "MIN_UPDATES_SIZE",
    "NACK_FRACTION",
    "Ack",
    "Advert",
    "Change",
    "Gossip",
    "Member",
    "MemberStatistics",
    "Membership",
    "Message",
    "Nack",
    "Ping",
    "PingReq",
    "Send",
    "Status",
    "Sync",
    "push_pull_interval",
    "retransmit_limit",
    "size_of",
    "suspicion_bounds",
    "suspicion_timeout",
]


class Status(enum.IntEnum):
    """A member's state; the order is the precedence at equal incarnation."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class Member(NamedTuple):
    """One member's state: what a node's table holds and what gossip carries.

    Immutable (a change makes a new one), so tables and messages share them; a named
    tuple, because the simulator makes millions (3x cheaper than a frozen dataclass). ``by``
    names the accuser of a suspicion or death; ``record`` and ``stats`` are the versions
    of the member's catalog record and stats (the catalog digest, mesh/_core/catalog.py).
    """

    id: str
    name: str
    address: str
    incarnation: int = 0
    status: Status = Status.ALIVE
    by: str = ""
    record: int = 0
    stats: int = 0

    @property
    def live(self) -> bool:
        """Alive or suspect: still a member."""
        return self.status <= Status.SUSPECT


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """A direct probe of ``target``; answered with an Ack to ``reply_to``."""

    seq: int
    source: str
    reply_to: str
    target: str
    updates: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Probe ``target`` at ``target_address`` for me; Ack (or Nack) to ``reply_to``."""

    seq: int
    source: str
    reply_to: str
    target: str
    target_address: str
    updates: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a Ping (or, relayed, to a PingReq) with the same ``seq``."""

    seq: int
    source: str
    updates: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """A relay's word that the target of a PingReq did not answer it either."""

    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Gossip:
    """Updates sent by the gossip timer."""

    source: str
    updates: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    """Push-pull: the sender's whole table; ``reply`` asks for the receiver's in return."""

    source: str
    reply_to: str
    members: tuple[Member, ...]
    reply: bool


Message = Ping | PingReq | Ack | Nack | Gossip | Sync


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the transport: ``message`` to the node at ``to`` (its address)."""

    to: str
    message: Message
    #: Estimated encoded size in bytes (what the budget and the simulator count).
    size: int


def _member_size(member: Member) -> int:
    # msgpack: array header, small ints, strings with one-byte headers
    return 20 + len(member.id) + len(member.name) + len(member.address) + len(member.by)


def size_of(message: Message) -> int:
    """Estimated encoded size of ``message`` in bytes."""
    size = 16 + len(message.source)
    if isinstance(message, Nack):
        return size
    if isinstance(message, Sync):
        return size + len(message.reply_to) + sum(map(_member_size, message.members))
    if isinstance(message, Ping | PingReq):
        size += len(message.reply_to) + len(message.target)
        if isinstance(message, PingReq):
            size += len(message.target_address)
    return size + sum(map(_member_size, message.updates))


# -- what the node learns ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A change in the table: ``kind`` is joined, suspect, alive (recovered), failed,
    left, replaced (by a new member with the same name and address), forgotten (purged
    after dead_ttl), or updated (a newer catalog record version)."""

    kind: str
    member: Member
    at: float


@dataclass(frozen=True, slots=True)
class Advert:
    """Member ``id``'s catalog record ``version`` is newer than the one held here; the
    node at ``via`` told us (and holds it, unless the news is a fresh join)."""

    id: str
    version: int
    via: str


@dataclass(slots=True)
class MemberStatistics:
    """Counters of one membership core."""

    probes: int = 0
    probes_failed: int = 0
    indirect_probes: int = 0
    late_acks: int = 0
    nacks: int = 0
    suspicions: int = 0
    refutations: int = 0
    #: Suspects (and members held dead) told so when they made contact (_tell_accused).
    suspects_told: int = 0
    #: Members pinged once more before this node held them dead (see _check).
    last_checks: int = 0
    #: Updates refused as implausible: an incarnation far past the one known (forged).
    implausible: int = 0
    stalls: int = 0
    syncs: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0


# -- the formulas (memberlist's, with Lifeguard) -------------------------------------------


def suspicion_bounds(settings: MembershipSettings, members: int) -> tuple[float, float]:
    """(min, max) suspicion timeout in a mesh of ``members`` live members."""
    low = settings.suspicion_mult * max(1.0, math.log10(max(1, members))) * settings.probe_interval
    return low, low * settings.suspicion_max_mult


def suspicion_timeout(confirmations: int, expected: int, low: float, high: float) -> float:
    """Lifeguard: ``high`` with no confirmation, shrinking logarithmically to ``low`` once
    ``expected`` independent confirmations have arrived."""
    if expected < 1:
        return low
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(low, high - fraction * (high - low))


#: The part of the gossip budget that membership may use; the catalog has the rest
#: (see docs/catalog.md), and takes what membership overspends from its own share.
MEMBERSHIP_SHARE = 0.5

#: How far past the incarnation known an update may be (a refutation adds one).
MAX_INCARNATION_JUMP = 1_000


#: For this many probe intervals after a probe saw messages lost, a member held alive
#: is accused only once two probes of it have failed with every relay's nack.
LOSS_MEMORY = 10.0

#: A relay nacks after this fraction of the probe timeout (memberlist: 80%).
NACK_FRACTION = 0.8
#: Membership may save up this many seconds of its share, to spend in a burst (the
#: refutations after a partition heals, say).
BURST_SECONDS = 5.0
#: Bytes of updates a message may carry even when the share is spent: dissemination
#: slows down under a small budget, it never stops.
MIN_UPDATES_SIZE = 128


def retransmit_limit(settings: MembershipSettings, members: int) -> int:
    """How many times each update is sent: grows with log N."""
    return settings.retransmit_mult * math.ceil(math.log10(members + 1))


def push_pull_interval(settings: MembershipSettings, members: int) -> float:
    """Sync interval, stretched above 32 members so the cost per node stays flat."""
    if members <= 32:
        return settings.push_pull_interval
    return settings.push_pull_interval * math.ceil(math.log2(members) - math.log2(32))


# -- timers and queues -------------------------------------------------------------------


@dataclass(slots=True)
class _Suspicion:
    started: float
    low: float
    high: float
    expected: int
    accusers: list[str]
    deadline: float

    def confirm(self, accuser: str) -> bool:
        """Count an independent accuser; True if it is new."""
        if accuser in self.accusers or len(self.accusers) > self.expected:
            return False
        self.accusers.append(accuser)
        timeout = suspicion_timeout(len(self.accusers) - 1, self.expected, self.low, self.high)
        self.deadline = self.started + timeout
        return True


@dataclass(slots=True)
class _Check:
    """A last check of a member before this node holds it dead: its own suspicion ran
    out, or another node says so. Unanswered by ``deadline``: asked again (``indirect``),
    then dead."""

    seq: int
    deadline: float
    incarnation: int
    by: str
    #: The second stage: asked again directly and through relays.
    indirect: bool = False


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    started: float
    timeout_at: float
    ends_at: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    """A PingReq this node is carrying out for ``reply_to``."""

    seq: int
    reply_to: str
    deadline: float


@dataclass(slots=True)
class _Queued:
    member: Member
    transmits: int = 0


class _Broadcasts:
    """Updates waiting to be gossiped, each sent a bounded number of times: this node's
    own news first, then the least sent, the newest first among those (memberlist's
    transmit-limited queue). A newer update about a member replaces the older one.

    Kept in one bucket per transmit count (each in insertion order), so taking a few
    updates costs what is taken, not the length of the queue."""

    def __init__(self, own_id: str) -> None:
        self._own_id = own_id
        self._queued: dict[str, _Queued] = {}
        self._buckets: list[dict[str, _Queued]] = [{}]

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, member: Member) -> None:
        """News: sent ``limit`` times from now on."""
        self._drop(member.id)
        queued = self._queued[member.id] = _Queued(member)
        self._buckets[0][member.id] = queued

    def refresh(self, member: Member) -> None:
        """A detail changed (another accuser): send the newer one, as often as left."""
        queued = self._queued.get(member.id)
        if queued is None:
            self.add(member)
        else:
            queued.member = member

    def take(self, budget: int, limit: int) -> tuple[Member, ...]:
        """Up to ``budget`` bytes of updates; each counts one transmission."""
        if not self._queued or budget <= 0:
            return ()
        chosen: list[_Queued] = []
        spent = 0
        own = self._queued.get(self._own_id)
        if own is not None:
            spent = _member_size(own.member)
            if spent > budget:
                return ()
            chosen.append(own)
        full = False
        for bucket in self._buckets:
            for queued in reversed(bucket.values()):
                if queued is own:
                    continue  # already first
                size = _member_size(queued.member)
                if spent + size > budget:
                    full = True
                    break
                spent += size
                chosen.append(queued)
            if full:
                break
        for queued in chosen:
            self._move(queued, limit)
        return tuple(q.member for q in chosen)

    def _move(self, queued: _Queued, limit: int) -> None:
        id = queued.member.id
        del self._buckets[queued.transmits][id]
        queued.transmits += 1
        if queued.transmits >= limit:
            del self._queued[id]
            return
        while len(self._buckets) <= queued.transmits:
            self._buckets.append({})
        self._buckets[queued.transmits][id] = queued

    def _drop(self, id: str) -> None:
        queued = self._queued.pop(id, None)
        if queued is not None:
            del self._buckets[queued.transmits][id]


# -- the core ------------------------------------------------------------------------------


class Membership:
    """One node's view of the mesh; see the module docstring.

    ``known`` seeds the table with members already known (the simulator starts a
    converged mesh with it; a node normally starts alone and calls :meth:`join`).
    """

    def __init__(
        self,
        me: Member,
        settings: MembershipSettings,
        rng: random.Random,
        now: float,
        known: Sequence[Member] = (),
    ) -> None:
        self.id = me.id
        self.settings = settings
        self.statistics = MemberStatistics()
        #: Lifeguard's local health score, 0..settings.awareness_max.
        self.awareness = 0
        self.leaving = False
        self._rng = rng
        self._share = settings.budget * MEMBERSHIP_SHARE
        self._tokens = self._share * BURST_SECONDS
        self._refilled = now
        self._me = me
        self._members: dict[str, Member] = {m.id: m for m in known if m.id != me.id}
        self._members[me.id] = me
        self._by_address = {m.address: m.id for m in self._members.values()}
        # Live peers for random choice; entries that stopped being live are skipped and
        # swept now and then (no index per entry: 10,000 nodes of 10,000 fit in memory).
        self._live: list[str] = [m.id for m in self._members.values() if m.live and m.id != me.id]
        self._live_count = len(self._live)
        self._since: dict[str, float] = {}  # status changes seen here, by member id
        self._suspicions: dict[str, _Suspicion] = {}
        self._suspicion_timers: list[tuple[float, str]] = []  # a heap; stale entries skipped
        self._checks: dict[str, _Check] = {}  # last pings before a death, by member id
        self._check_pings: list[Send] = []  # to go out with what receive/tick return
        self._gone: dict[str, float] = {}  # dead and left: id -> since, until dead_ttl
        self._held: dict[str, int] = {}  # catalog record versions held, by member id
        self._broadcasts = _Broadcasts(me.id)
        self._changes: list[Change] = []
        self._adverts: list[Advert] = []
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._urgent: list[str] = []
        #: When a probe last saw messages lost (acked only after its timeout, or
        #: relays unheard), and the member a failed probe is to be repeated for.
        self._loss_seen = -math.inf
        self._again: str | None = None
        self._told: dict[str, float] = {}  # suspects told of it, and when
        self._relays: dict[int, _Relay] = {}
        self._next_probe = now + rng.uniform(0, settings.probe_interval)
        self._next_gossip = now + rng.uniform(0, settings.gossip_interval)
        self._next_sync = now + rng.uniform(0.5, 1.0) * push_pull_interval(
            settings, self.live_count()
        )
        self._expected_tick = self._deadline()

    # -- what the node asks -----------------------------------------------------------------

    @property
    def me(self) -> Member:
        return self._me

    def members(self) -> list[Member]:
        """Every member this node knows, itself included, dead and left ones until purged."""
        return list(self._members.values())

    def get(self, id: str) -> Member | None:
        return self._members.get(id)

    def at(self, address: str) -> Member | None:
        """The member known at gossip ``address``, if any (live or not)."""
        id = self._by_address.get(address)
        return None if id is None else self._members.get(id)

    def since(self, id: str) -> float | None:
        """When this node saw member ``id``'s status last change (None: not since start)."""
        return self._since.get(id)

    def live_count(self) -> int:
        """Alive and suspect members, this node included."""
        return self._live_count + 1

    def changes(self) -> list[Change]:
        """The changes since the last call (for events and listings)."""
        changes, self._changes = self._changes, []
        return changes

    def adverts(self) -> list[Advert]:
        """Catalog records to pull, heard of since the last call (the catalog's input)."""
        adverts, self._adverts = self._adverts, []
        return adverts

    def next_deadline(self) -> float:
        """When :meth:`tick` must run next. A tick much later than this (more than the
        probe timeout) tells the core that this node's own loop stalled."""
        return self._expected_tick

    def _deadline(self) -> float:
        deadline = min(self._next_gossip, self._next_sync)
        probe = self._probe
        if probe is None:  # the next probe waits for the one in flight
            deadline = min(deadline, self._next_probe)
        else:
            deadline = min(deadline, probe.ends_at if probe.indirect else probe.timeout_at)
        for relay in self._relays.values():
            deadline = min(deadline, relay.deadline)
        for check in self._checks.values():
            deadline = min(deadline, check.deadline)
        timers = self._suspicion_timers
        while timers and not self._current(timers[0]):
            heapq.heappop(timers)
        if timers:
            deadline = min(deadline, timers[0][0])
        if self._gone:  # in the order they went, so the first is the oldest
            deadline = min(deadline, next(iter(self._gone.values())) + self.settings.dead_ttl)
        return deadline

    def _current(self, timer: tuple[float, str]) -> bool:
        suspicion = self._suspicions.get(timer[1])
        return suspicion is not None and suspicion.deadline == timer[0]

    def _done(self, out: list[Send]) -> list[Send]:
        if self._check_pings:
            out.extend(self._check_pings)
            self._check_pings = []
        self._expected_tick = self._deadline()
        return out

    # -- what this node does ---------------------------------------------------------------

    def set_versions(self, record: int | None = None, stats: int | None = None) -> None:
        """This node's catalog changed. A new record version is gossiped at once; a new
        stats version only rides along with later updates and syncs (stats are pulled
        from the node itself at a rate that fits the budget, not gossiped)."""
        if stats is not None:
            self._me = self._replace(self._me, stats=stats)
        if record is not None and record != self._me.record:
            self._me = self._replace(self._me, record=record)
            self._broadcasts.add(self._me)

    def hold_record(self, id: str, version: int) -> None:
        """The catalog holds ``version`` of member ``id``'s record: from now on this node
        spreads the news (so peers pull the record from holders, not all from its owner)."""
        member = self._members.get(id)
        if member is None or version <= self._held.get(id, 0):
            return
        self._held[id] = version
        if member.status is Status.ALIVE and version >= member.record:
            if version > member.record:
                member = self._replace(member, record=version)
            self._broadcasts.add(member)

    def drop_record(self, id: str) -> None:
        """The catalog dropped member ``id``'s record (it failed or left): should it come
        back, its record is news again, pulled anew."""
        self._held.pop(id, None)

    def join(self, seeds: Iterable[str], now: float) -> list[Send]:
        """Introduce this node to the nodes at ``seeds`` (addresses): a sync with each."""
        self._observe(now)
        out: list[Send] = []
        for address in seeds:
            if address != self._me.address:
                self._sync_with(address, out)
        return self._done(out)

    def leave(self, now: float) -> list[Send]:
        """Leave gracefully: tell the mesh this node left (it did not fail)."""
        self._observe(now)
        self.leaving = True
        self._next_probe = math.inf  # a leaving node accuses nobody
        me = self._me = self._replace(
            self._me, incarnation=self._me.incarnation + 1, status=Status.LEFT
        )
        self._broadcasts.add(me)
        out: list[Send] = []
        for peer in self._pick(2 * self.settings.gossip_nodes, exclude=""):
            self._send(out, peer.address, Gossip(self.id, (me,)))
        return self._done(out)

    def disconnected(self, address: str, now: float) -> list[Send]:
        """The transport lost its connection to ``address``: probe it soon, judge nothing."""
        self._observe(now)
        id = self._by_address.get(address)
        member = None if id is None else self._members.get(id)
        if member is None or not member.live or id == self.id:
            return self._done([])
        if (self._probe is None or self._probe.target != id) and id not in self._urgent:
            self._urgent.append(member.id)
            if self._probe is None:
                self._next_probe = now
        return self.tick(now)

    def receive(self, message: Message, now: float) -> list[Send]:
        """Handle one message; returns what to send in answer."""
        self._observe(now)
        out: list[Send] = []
        if isinstance(message, Ping):
            self._merge(message.updates, now, message.reply_to)
            if message.target == self.id:  # not to an earlier node at this address
                self._send(out, message.reply_to, Ack(message.seq, self.id, self._piggyback()))
        elif isinstance(message, Ack):
            self._merge(message.updates, now, self._address_of(message.source))
            self._on_ack(message, now, out)
        elif isinstance(message, PingReq):
            self._merge(message.updates, now, message.reply_to)
            self._relay(message, now, out)
        elif isinstance(message, Nack):
            if self._probe is not None and self._probe.seq == message.seq:
                self._probe.nacks += 1
                self.statistics.nacks += 1
        elif isinstance(message, Gossip):
            self._merge(message.updates, now, self._address_of(message.source))
        elif isinstance(message, Sync):
            for member in message.members:
                # The sender's own entry is news to spread (a node joining through us);
                # the rest of its table is news to us only: the mesh has it already.
                self._apply(member, now, member.id != message.source, message.reply_to)
            if message.reply:
                self._sync_with(message.reply_to, out, reply=False)
        self._tell_accused(message.source, now, out)
        return self._done(out)

    def _tell_accused(self, source: str, now: float, out: list[Send]) -> None:
        """A member this node holds as suspect or dead just sent it something: tell it
        (at most once a probe interval), so it refutes now. Lifeguard's buddy system
        tells a suspect only when a suspecting node probes it; after a partition heals,
        nodes whose awareness is high probe every few seconds, and a cut-off node could
        learn of its suspicion only after the shortest suspicion had run out. Nobody
        probes or gossips to a dead member: one that was only stopped (SIGSTOP) would
        hear of its death at the next push-pull, tens of seconds later."""
        member = self._members.get(source)
        if member is None or member.status not in (Status.SUSPECT, Status.DEAD):
            self._told.pop(source, None)
            return
        if now - self._told.get(source, -math.inf) < self.settings.probe_interval:
            return
        self._told[source] = now
        self.statistics.suspects_told += 1
        self._send(out, member.address, Gossip(self.id, (member,)))

    def tick(self, now: float) -> list[Send]:
        """Run the timers that are due; returns what to send."""
        self._observe(now)
        out: list[Send] = []
        if self._relays:
            self._run_relays(now, out)
        self._run_probe(now, out)
        if self._suspicions:
            self._run_suspicions(now)
        if self._checks:
            self._run_checks(now)
        if self._gone:
            self._purge(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.settings.gossip_interval
            self._gossip(out)
        if now >= self._next_sync:
            interval = push_pull_interval(self.settings, self.live_count())
            self._next_sync = now + interval * self._rng.uniform(0.9, 1.1)
            peer = self._sync_peer()
            if peer is not None:
                self._sync_with(peer.address, out)
        return self._done(out)

    def _sync_peer(self) -> Member | None:
        """A random peer to sync with: live ones, and now and then one declared dead
        (in proportion), so that the two sides of a healed partition find each other
        again (Serf's reconnect)."""
        dead = [i for i in self._gone if self._members[i].status is Status.DEAD]
        if dead and self._rng.randrange(self._live_count + len(dead)) < len(dead):
            return self._members[dead[self._rng.randrange(len(dead))]]
        peers = self._pick(1, exclude="")
        return peers[0] if peers else None

    # -- timers -------------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        """Refill membership's share of the budget; detect a stall of this node's own
        loop and forgive it."""
        elapsed = now - self._refilled
        if elapsed > 0:
            self._tokens = min(self._share * BURST_SECONDS, self._tokens + elapsed * self._share)
            self._refilled = now
        stall = now - self._expected_tick
        if stall > self.settings.probe_timeout:
            # Nothing ran for a while: the evidence of every timer is stale. Answers that
            # waited in the socket get their chance before any verdict.
            self.statistics.stalls += 1
            self._raise_awareness(1)
            probe = self._probe
            if probe is not None:
                probe.timeout_at += stall
                probe.ends_at += stall
            for relay in self._relays.values():
                relay.deadline += stall
            for check in self._checks.values():
                check.deadline += stall
            for suspicion in self._suspicions.values():
                suspicion.deadline += stall
            self._suspicion_timers = [(x.deadline, i) for i, x in self._suspicions.items()]
            heapq.heapify(self._suspicion_timers)

    def _raise_awareness(self, delta: int) -> None:
        self.awareness = max(0, min(self.settings.awareness_max, self.awareness + delta))

    def _run_probe(self, now: float, out: list[Send]) -> None:
        probe = self._probe
        if probe is not None and not probe.indirect and now >= probe.timeout_at:
            probe.indirect = True
            target = self._members.get(probe.target)
            if target is not None:
                probe.expected_nacks = self._ask_again(probe.seq, target, out)
                self.statistics.indirect_probes += probe.expected_nacks
        if probe is not None and probe.indirect and now >= probe.ends_at:
            self._probe = None
            self._judge(probe, now)
        if self._probe is None and now >= self._next_probe:
            scale = self.awareness + 1
            self._next_probe = now + self.settings.probe_interval * scale
            target = self._next_target()
            if target is None:
                return
            self._seq += 1
            self.statistics.probes += 1
            self._probe = _Probe(
                self._seq,
                target.id,
                now,
                now + self.settings.probe_timeout * scale,
                now + self.settings.probe_interval * scale,
            )
            updates = self._piggyback()
            if target.status is Status.SUSPECT and target not in updates:
                # Lifeguard's buddy system: tell a suspect straight away, so it refutes
                # now instead of when gossip happens to reach it.
                updates = (target, *updates)
            ping = Ping(self._seq, self.id, self._me.address, target.id, updates)
            self._send(out, target.address, ping)

    def _ask_again(self, seq: int, target: Member, out: list[Send]) -> int:
        """An unanswered ping ``seq`` of ``target``, asked again: once more directly
        (memberlist's fallback ping: a message lost where a connection dropped is not a
        target gone) and through up to ``indirect_checks`` relays held alive (as
        memberlist picks them: a suspect relay is likely silent). Returns how many
        relays were asked."""
        self._send(out, target.address, Ping(seq, self.id, self._me.address, target.id, ()))
        relays = self._pick(self.settings.indirect_checks, target.id, alive=True)
        for relay in relays:
            request = PingReq(seq, self.id, self._me.address, target.id, target.address)
            self._send(out, relay.address, request)
        return len(relays)

    def _judge(self, probe: _Probe, now: float) -> None:
        """A probe failed: accuse its target, confirm its suspicion, probe it again, or
        accuse nobody (docs/membership.md, "One protocol period")."""
        self.statistics.probes_failed += 1
        # Lifeguard: relays that did not even nack point at this node's own trouble.
        missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
        self._raise_awareness(missed)
        target = self._members.get(probe.target)
        if target is None or not target.live:
            return
        # At the worst health score this node has failed for long, probing ever more
        # slowly, and a node cut off from the LAN must still come to see its partition:
        # it accuses on any failed probe. Below it, it doubts:
        if self.awareness < self.settings.awareness_max:
            if 2 * probe.nacks < probe.expected_nacks:
                # Most relays are silent too: more likely this node is cut off than
                # the target dead. Accuse nobody; the next probes will tell.
                return
            if target.status is Status.ALIVE:
                if probe.nacks < probe.expected_nacks:
                    self._loss_seen = now  # some relays reached it, some went unheard
                    again = True
                else:
                    # Every relay saw it silent: dead, unless messages are being lost
                    # here lately; then it must fail a second probe first.
                    window = LOSS_MEMORY * self.settings.probe_interval
                    again = now - self._loss_seen < window and self._again != target.id
                if again:
                    self._again = target.id
                    if target.id not in self._urgent:
                        self._urgent.append(target.id)  # the next one probed
                    return
        self._again = None
        if target.status is Status.ALIVE:
            self._suspect(target, target.incarnation, self.id, now)
        else:
            self._confirm(target, self.id)  # an independent confirmation

    def _next_target(self) -> Member | None:
        while self._urgent:
            member = self._members.get(self._urgent.pop(0))
            if member is not None and member.live:
                return member
        for _ in range(2):
            while self._probe_order:
                member = self._members.get(self._probe_order.pop())
                if member is not None and member.live and member.id != self.id:
                    return member
            # A new round: every live peer once, in a fresh random order.
            self._sweep()
            self._probe_order = list(self._live)
            self._rng.shuffle(self._probe_order)
        return None

    def _on_ack(self, ack: Ack, now: float, out: list[Send]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == ack.seq:
            self._probe = None
            self._raise_awareness(-1)
            if probe.indirect:
                self._loss_seen = now  # answered, but not to the first ping
            if self._again == probe.target:
                self._again = None
            return
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            self._send(out, relay.reply_to, Ack(relay.seq, self.id))
            return
        for id, check in self._checks.items():
            if check.seq == ack.seq:
                # Reachable: no death. Its refutation came with the answer (it had room)
                # or will come; a suspicion of it that is still held starts over.
                del self._checks[id]
                suspicion = self._suspicions.get(id)
                if suspicion is not None:
                    suspicion.started = now
                    suspicion.deadline = now + suspicion.low
                    heapq.heappush(self._suspicion_timers, (suspicion.deadline, id))
                return
        self.statistics.late_acks += 1  # its probe is over: the verdict stands

    def _relay(self, request: PingReq, now: float, out: list[Send]) -> None:
        self._seq += 1
        # Nack before the requester's probe ends (it sent this at its probe timeout and
        # waits until its probe interval is over), so that its count of nacks is right.
        timeout = NACK_FRACTION * min(
            self.settings.probe_timeout, self.settings.probe_interval - self.settings.probe_timeout
        )
        self._relays[self._seq] = _Relay(request.seq, request.reply_to, now + timeout)
        ping = Ping(self._seq, self.id, self._me.address, request.target, self._piggyback())
        self._send(out, request.target_address, ping)

    def _run_relays(self, now: float, out: list[Send]) -> None:
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            self._send(out, relay.reply_to, Nack(relay.seq, self.id))

    def _run_suspicions(self, now: float) -> None:
        timers = self._suspicion_timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)
            if self._current(timer) and timer[1] not in self._checks:
                member = self._members[timer[1]]
                self._check(member, member.incarnation, self.id, now)

    def _check(self, member: Member, incarnation: int, by: str, now: float) -> None:
        """Ping ``member`` one last time before holding it dead: when its suspicion here
        runs out, and when another node declares it dead. The ping carries the verdict,
        so a member that is reachable refutes it in its answer; no answer within a probe
        timeout, and it is dead. Why: after a partition heals, the refutations of the
        nodes that were cut off take a while to reach every node of a large mesh, and
        the deaths that each side declared reach nodes that talked to the "dead" all
        along; either way a healthy node would be declared dead. Unanswered, the member
        is asked once more, directly and through relays (:meth:`_ask_again`): a lost
        message is not a death. A real death costs two probe timeouts more."""
        if member.id in self._checks:
            return
        self._seq += 1
        self.statistics.last_checks += 1
        timeout = self.settings.probe_timeout * (self.awareness + 1)
        self._checks[member.id] = _Check(self._seq, now + timeout, incarnation, by)
        verdict = member._replace(incarnation=incarnation, status=Status.DEAD, by=by)
        ping = Ping(self._seq, self.id, self._me.address, member.id, (verdict,))
        self._send(self._check_pings, member.address, ping)

    def _run_checks(self, now: float) -> None:
        for id in [i for i, c in self._checks.items() if now >= c.deadline]:
            check = self._checks[id]
            member = self._members[id]
            if not check.indirect:
                # Unanswered: ask once more, directly and through relays, as a probe does.
                check.indirect = True
                check.deadline = now + self.settings.probe_timeout * (self.awareness + 1)
                self._ask_again(check.seq, member, self._check_pings)
                continue
            del self._checks[id]
            if member.live and member.incarnation <= check.incarnation:
                dead = self._set(member, check.incarnation, Status.DEAD, check.by, now)
                self._broadcasts.add(dead)

    def _purge(self, now: float) -> None:
        ttl = self.settings.dead_ttl
        while self._gone:
            id, since = next(iter(self._gone.items()))
            if now < since + ttl:
                return
            member = self._members[id]
            self._forget(member)
            self._changes.append(Change("forgotten", member, now))

    def _gossip(self, out: list[Send]) -> None:
        if not self._broadcasts:
            return
        for peer in self._pick(self.settings.gossip_nodes, exclude=""):
            updates = self._piggyback()
            if not updates:
                return
            self._send(out, peer.address, Gossip(self.id, updates))

    def _sync_with(self, address: str, out: list[Send], reply: bool = True) -> None:
        self.statistics.syncs += 1
        table = tuple(self._members.values())
        self._send(out, address, Sync(self.id, self._me.address, table, reply))

    # -- sending ------------------------------------------------------------------------

    def _piggyback(self) -> tuple[Member, ...]:
        if not self._broadcasts:
            return ()
        limit = retransmit_limit(self.settings, self.live_count())
        room = min(self.settings.max_updates_size, max(MIN_UPDATES_SIZE, int(self._tokens)))
        updates = self._broadcasts.take(room, limit)
        self._tokens -= sum(map(_member_size, updates))
        return updates

    def _send(self, out: list[Send], to: str, message: Message) -> None:
        size = size_of(message)
        self.statistics.messages_sent += 1
        self.statistics.bytes_sent += size
        out.append(Send(to, message, size))

    def _pick(self, count: int, exclude: str, alive: bool = False) -> list[Member]:
        """Up to ``count`` distinct random live peers other than ``exclude`` (with
        ``alive``, none that is suspect: relays, as memberlist picks them)."""
        live, members, picked = self._live, self._members, []
        if not live or count <= 0:
            return []
        for _ in range(4 * count + 4):
            member = members.get(live[self._rng.randrange(len(live))])
            if (
                member is not None
                and (member.status is Status.ALIVE if alive else member.live)
                and member.id != exclude
                and member.id != self.id
                and member not in picked
            ):
                picked.append(member)
                if len(picked) == count:
                    break
        return picked

    def _address_of(self, id: str) -> str:
        member = self._members.get(id)
        return "" if member is None else member.address

    # -- merging what others say ----------------------------------------------------------

    def _merge(self, updates: Iterable[Member], now: float, via: str) -> None:
        for update in updates:
            self._apply(update, now, False, via)

    def _apply(self, update: Member, now: float, from_sync: bool, via: str) -> None:
        status = update.status
        if from_sync and status is Status.DEAD:
            status = Status.SUSPECT  # a whole table may be old: its deaths are suspicions
        known = self._me if update.id == self.id else self._members.get(update.id)
        if known is not None and update.incarnation > known.incarnation + MAX_INCARNATION_JUMP:
            # A member raises its incarnation by one per refutation: a jump this large is
            # forged (near 2**64 it would leave the member no number to refute with).
            self.statistics.implausible += 1
            return
        if update.id == self.id:
            self._about_me(update, status)
            return
        member = self._members.get(update.id)
        if member is None:
            if status is Status.ALIVE:  # a suspect or gone stranger is not worth learning
                self._add(update, now, spread=not from_sync, via=via)
            return
        if update.incarnation < member.incarnation:
            return  # old news
        newer = update.incarnation > member.incarnation
        if status is Status.ALIVE:
            if newer:
                changed = self._set(member, update.incarnation, Status.ALIVE, "", now, update)
                self._broadcasts.add(changed)
                self._learn_versions(changed, update, via, now)
            elif member.live:
                self._learn_versions(member, update, via, now)
        elif status is Status.SUSPECT:
            if member.status is Status.SUSPECT and not newer:
                self._confirm(member, update.by)
            elif member.live:
                self._suspect(member, update.incarnation, update.by, now)
        elif status is Status.DEAD and member.live:
            self._check(member, update.incarnation, update.by, now)
        elif member.live or (newer and status is Status.LEFT):
            self._broadcasts.add(self._set(member, update.incarnation, status, update.by, now))

    def _learn_versions(self, member: Member, update: Member, via: str, now: float) -> None:
        """Take newer catalog versions; a record not held here becomes an advert (and is
        gossiped on only once held, see :meth:`hold_record`)."""
        if update.record <= member.record and update.stats <= member.stats:
            if via and update.record > self._held.get(member.id, 0):
                self._adverts.append(Advert(member.id, update.record, via))
            return
        newer_record = update.record > member.record
        member = self._replace(
            member, record=max(member.record, update.record), stats=max(member.stats, update.stats)
        )
        if newer_record:
            if via:
                self._adverts.append(Advert(member.id, update.record, via))
            self._changes.append(Change("updated", member, now))

    def _about_me(self, update: Member, status: Status) -> None:
        if status is Status.ALIVE or self.leaving or update.incarnation < self._me.incarnation:
            return
        # Someone thinks this node is suspect or dead: it is not. Refute.
        self.statistics.refutations += 1
        self._raise_awareness(1)
        self._me = self._replace(self._me, incarnation=update.incarnation + 1)
        self._broadcasts.add(self._me)

    def _add(self, update: Member, now: float, spread: bool, via: str) -> None:
        previous = self._by_address.get(update.address)
        if previous is not None and previous != self.id:
            old = self._members[previous]
            if old.name == update.name:
                # The same node restarted (same name and address, new id): replace it now.
                self._forget(old)
                self._changes.append(Change("replaced", old, now))
        member = update._replace(by="")  # an alive update: only an accuser to drop
        self._members[member.id] = member
        self._by_address.setdefault(member.address, member.id)
        self._since[member.id] = now
        self._enter_live(member.id)
        self._changes.append(Change("joined", member, now))
        if spread:
            self._broadcasts.add(member)
        if via and member.record > 0:
            self._adverts.append(Advert(member.id, member.record, via))

    def _confirm(self, member: Member, accuser: str) -> None:
        """Another accuser of a suspect: the suspicion shrinks, and the news spreads."""
        suspicion = self._suspicions.get(member.id)
        if accuser and suspicion is not None and suspicion.confirm(accuser):
            heapq.heappush(self._suspicion_timers, (suspicion.deadline, member.id))
            self._broadcasts.refresh(self._replace(member, by=accuser))

    def _suspect(self, member: Member, incarnation: int, by: str, now: float) -> None:
        self.statistics.suspicions += 1
        accuser = by or self.id
        low, high = suspicion_bounds(self.settings, self.live_count())
        # Lifeguard: expect k = suspicion_mult - 2 confirmations, none in tiny meshes.
        expected = max(0, self.settings.suspicion_mult - 2)
        if self.live_count() - 2 < expected:
            expected = 0
        deadline = now + (low if expected == 0 else high)
        suspect = self._set(member, incarnation, Status.SUSPECT, accuser, now)
        self._suspicions[member.id] = _Suspicion(now, low, high, expected, [accuser], deadline)
        heapq.heappush(self._suspicion_timers, (deadline, member.id))
        self._broadcasts.add(suspect)

    # -- the table ----------------------------------------------------------------------

    def _replace(self, member: Member, **changes: Any) -> Member:
        new = member._replace(**changes)
        if new.id == self.id:
            self._me = new
        self._members[new.id] = new
        return new

    def _set(
        self,
        member: Member,
        incarnation: int,
        status: Status,
        by: str,
        now: float,
        source: Member | None = None,
    ) -> Member:
        """Move ``member`` to ``status``: keep the indexes and timers right, note the change."""
        before = member.status
        fields: dict[str, object] = {"incarnation": incarnation, "status": status, "by": by}
        if source is not None and (source.address, source.name) != (member.address, member.name):
            if self._by_address.get(member.address) == member.id:
                del self._by_address[member.address]
            fields.update(address=source.address, name=source.name)
            self._by_address[source.address] = member.id
        new = self._replace(member, **fields)
        if status is not Status.SUSPECT:
            self._suspicions.pop(member.id, None)
            if status is not Status.ALIVE or incarnation > member.incarnation:
                self._checks.pop(member.id, None)  # decided, or refuted
        if status is before:
            return new
        self._since[member.id] = now
        if status in (Status.DEAD, Status.LEFT):
            self._live_count -= before <= Status.SUSPECT
            self._gone.pop(member.id, None)  # keep them in the order they went
            self._gone[member.id] = now
            self._changes.append(Change("failed" if status is Status.DEAD else "left", new, now))
        elif status is Status.SUSPECT:
            self._changes.append(Change("suspect", new, now))
        elif before in (Status.DEAD, Status.LEFT):  # back, with a new incarnation
            del self._gone[member.id]
            self._enter_live(member.id)
            self._changes.append(Change("joined", new, now))
        else:
            self._changes.append(Change("alive", new, now))  # refuted
        return new

    def _enter_live(self, id: str) -> None:
        self._live_count += 1
        self._live.append(id)
        # A newcomer gets a random place in the rest of this round's probe order.
        self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), id)
        if len(self._live) > 2 * self._live_count + 16:
            self._sweep()

    def _sweep(self) -> None:
        """Drop entries of ``_live`` that are no longer live (or repeated)."""
        members = self._members
        self._live = [
            id for id in dict.fromkeys(self._live) if (m := members.get(id)) is not None and m.live
        ]

    def _forget(self, member: Member) -> None:
        self._live_count -= member.live
        self._suspicions.pop(member.id, None)
        self._checks.pop(member.id, None)
        self._told.pop(member.id, None)
        self._gone.pop(member.id, None)
        self._held.pop(member.id, None)
        self._since.pop(member.id, None)
        del self._members[member.id]
        if self._by_address.get(member.address) == member.id:
            del self._by_address[member.address]
