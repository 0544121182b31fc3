"""Events, the pure part: topics, sequence numbers, gaps, history rings, per-topic counts,
and the system events (``$mesh.*``) a node derives from its own view of the mesh.

No sockets, no loop, no clock: the runtime (``_eventbus``) passes times in. Semantics
(docs/events.md): plain publish/subscribe is at-most-once; each publisher numbers the
events of each topic 1, 2, 3, ...; a subscriber that sees a number skip counts the
missing events as dropped.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import heapq
import itertools
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from .._config import Limits
from .._errors import InvalidTopic
from .catalog import ServiceInfo
from .listing import MemberInfo

_LIMITS: Final = Limits()

__all__ = [
    "RESERVED_PREFIX",
    "SYSTEM_TOPICS",
    "Event",
    "Sequencer",
    "SystemEvents",
    "TopicStatistics",
    "check_prefix",
    "check_topic",
    "is_system",
]


class Event(NamedTuple):
    """A published event (sent on PUB sockets as ``[topic, payload]``): its topic, the
    publisher's node id, its number per (publisher, topic), the publisher's wall clock
    (seconds since the epoch) and the data. Immutable; a named tuple, so that building
    one per event received costs little."""

    topic: str
    publisher: str
    seq: int
    timestamp: float
    data: Any = None


#: Topics under this prefix come from the mesh itself; user code cannot publish them.
RESERVED_PREFIX: Final = "$mesh."
#: Longest topic, in UTF-8 bytes (the catalog lists topics up to this length).
MAX_TOPIC: Final = 255

NODE_JOINED: Final = "$mesh.node.joined"
NODE_LEFT: Final = "$mesh.node.left"
NODE_FAILED: Final = "$mesh.node.failed"
SERVICE_UP: Final = "$mesh.service.up"
SERVICE_DOWN: Final = "$mesh.service.down"
SERVICE_CRASHED: Final = "$mesh.service.crashed"
SERVICE_RESTARTED: Final = "$mesh.service.restarted"
SERVICE_FAILED: Final = "$mesh.service.failed"
TOPIC_NEW: Final = "$mesh.topic.new"
#: A job of a durable queue moved to the dead letters (emitted by mesh/_node/jobrunner.py).
JOB_DEAD: Final = "$mesh.job.dead"
#: Every system event topic a node derives (docs/events.md, "System events").
SYSTEM_TOPICS: Final = (
    NODE_JOINED,
    NODE_LEFT,
    NODE_FAILED,
    SERVICE_UP,
    SERVICE_DOWN,
    SERVICE_CRASHED,
    SERVICE_RESTARTED,
    SERVICE_FAILED,
    TOPIC_NEW,
    JOB_DEAD,
)


def check_prefix(prefix: object) -> str:
    """A subscription prefix: any text up to :data:`MAX_TOPIC` bytes ("" is every topic)."""
    if not isinstance(prefix, str):
        raise InvalidTopic(f"a topic prefix is a str, got {type(prefix).__name__}")
    if len(prefix.encode()) > MAX_TOPIC:
        raise InvalidTopic(f"a topic prefix is at most {MAX_TOPIC} bytes of UTF-8")
    return prefix


def check_topic(topic: object) -> str:
    """A topic user code may publish: 1 to :data:`MAX_TOPIC` bytes, not under ``$mesh.``."""
    check_prefix(topic)
    assert isinstance(topic, str)
    if not topic:
        raise InvalidTopic("a topic is not empty")
    if topic.startswith(RESERVED_PREFIX):
        raise InvalidTopic(
            f"topic {topic!r}: names starting with {RESERVED_PREFIX!r} are reserved for the "
            "mesh's own events"
        )
    return topic


def is_system(topic: str) -> bool:
    return topic.startswith(RESERVED_PREFIX)


def reaches_peers(prefix: str) -> bool:
    """Whether a subscription to ``prefix`` can match events of other nodes (system
    events are derived locally, never sent)."""
    return not prefix.startswith(RESERVED_PREFIX)


@dataclass(frozen=True, slots=True)
class TopicStatistics:
    """Counts for one topic on one node: events this node published, events it delivered
    to its subscriptions (one per subscription), and events lost on the way to it (gaps
    in a publisher's sequence, or a full subscription queue)."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0


#: What one kept event costs beyond its encoded data (its Event tuple, timestamp and
#: number, and its places in the rings), and what a topic keeping events costs (its two
#: rings): both counted in the history's bytes, so that tiny events are bounded too.
EVENT_COST: Final = 200
TOPIC_COST: Final = 2_000
#: Forgotten topics leave the last number they had in one of this many buckets (by a
#: hash of the topic); a topic that starts again is numbered above its bucket's.
FLOOR_BUCKETS: Final = 65_536


class _Topic:
    """One topic of a :class:`Sequencer`: its numbering, and the events it keeps (the
    ring, each event's counted size beside it; both ``None`` while it keeps none)."""

    __slots__ = ("gen", "gone", "owner", "ring", "seq", "sizes", "start", "topic")

    def __init__(self, owner: Sequencer, topic: str, start: int) -> None:
        self.owner = owner
        self.topic = topic
        self.seq = self.start = start  # start: the number before its first event
        self.ring: collections.deque[Event] | None = None
        self.sizes: collections.deque[int] | None = None
        self.gen = 0  # which entry of the owner's heap stands for this ring
        self.gone = False  # its counter was forgotten: the owner no longer lists it


_new_tuple: Final = tuple.__new__


def next_event(
    state: _Topic, topic: str, publisher: str, data: Any, now: float, size: int
) -> Event:
    """Number the next event of a topic whose state is ``state`` and keep it in its ring
    (``size``: its encoded data's, in bytes), within the owner's bounds."""
    state.seq = seq = state.seq + 1
    # tuple.__new__: a third of the cost of Event(...) (its keyword-capable __new__)
    event: Event = _new_tuple(Event, (topic, publisher, seq, now, data))
    owner = state.owner
    ring = state.ring
    sizes = state.sizes
    size += EVENT_COST
    if ring is None or sizes is None:
        ring, sizes = owner._open(state, now)
        owner.held += 1
        grown = size
    elif len(ring) >= owner.per_topic:  # the topic's oldest makes room
        ring.popleft()
        grown = size - sizes.popleft()
    else:
        owner.held += 1
        grown = size
    ring.append(event)
    sizes.append(size)
    held = owner.held_bytes = owner.held_bytes + grown
    if held > owner.max_bytes:
        owner._trim()
    return event


class Sequencer:
    """A publisher's side: numbers each topic's events and keeps the last ``history`` of
    each for late subscribers (``subscribe(..., history=N)``), at most ``max_bytes``
    over all topics together (the oldest go first: by publish time, over all topics),
    and the numbering of at most ``max_topics`` topics.

    A topic's number never goes back: when its events are all gone it keeps its
    counter; past ``max_topics`` the counter of a topic keeping no event is forgotten,
    leaving its last number as a floor in a bucket (by a hash of the topic), and the
    topic, published again, is numbered above that floor. A subscriber that knew it sees
    a jump (counted as dropped when the bucket held a larger number of another topic),
    never a repeat.

    Which topic holds the oldest event: a heap of (its oldest event's timestamp, entry
    number, topic), one entry per topic keeping events, put right lazily (an entry
    whose topic's oldest went already is fixed when it comes to the top).
    """

    def __init__(
        self,
        node_id: str,
        history: int,
        max_bytes: int = _LIMITS.event_history_bytes,
        max_topics: int = _LIMITS.event_topics,
    ) -> None:
        self.node_id = node_id
        self.per_topic = history
        self.max_bytes = max_bytes
        self._max_topics = max_topics
        self._topics: dict[str, _Topic] = {}
        self._heap: list[tuple[float, int, _Topic]] = []
        self._gens = itertools.count(1)
        self.held = 0  # events kept
        self.held_bytes = 0
        self.evicted = 0  # events pushed out by max_bytes (or with a forgotten topic)
        self.forgotten = 0  # topic counters forgotten
        self._forgotten_published = 0  # what those topics had published
        # Topics whose ring was emptied by max_bytes, earliest first (checked at use).
        self._idle: dict[str, None] = {}
        self._floors: array.array[int] | None = None

    def state(self, topic: str) -> _Topic:
        """The numbering and ring of ``topic`` (new, at its floor, for a topic not
        numbered now): the runtime keeps it at hand while it batches the topic, and
        calls :func:`next_event` on it."""
        state = self._topics.get(topic)
        if state is None:
            if len(self._topics) >= self._max_topics:
                self._forget_one()
            state = self._topics[topic] = _Topic(self, topic, self.floor(topic))
        return state

    def next(self, topic: str, data: Any, now: float, size: int = 0) -> Event:
        """The next event of ``topic``, numbered and kept in its ring."""
        return next_event(self.state(topic), topic, self.node_id, data, now, size)

    def topics(self) -> Iterator[str]:
        """Topics numbered now, oldest first."""
        return iter(self._topics)

    def history(
        self,
        prefix: str,
        limit: int,
        after: Mapping[str, int],
        before: Mapping[str, int] | None = None,
    ) -> list[Event]:
        """Up to ``limit`` of the latest kept events of each topic under ``prefix``, only
        those numbered above ``after[topic]`` and below ``before[topic]`` where given;
        each topic in order."""
        found: list[Event] = []
        if limit <= 0:
            return found
        for topic, state in self._topics.items():
            ring = state.ring
            if ring is None or not topic.startswith(prefix):
                continue
            since = after.get(topic, 0)
            until = before.get(topic) if before else None
            kept = [e for e in ring if e.seq > since and (until is None or e.seq < until)]
            found.extend(kept[-limit:])
        return found

    def count_published(self) -> Mapping[str, int]:
        """Events published per topic; those of forgotten topics under ``*``."""
        counts = {topic: state.seq - state.start for topic, state in self._topics.items()}
        if self._forgotten_published:
            other = TopicCounts.OTHER
            counts[other] = counts.get(other, 0) + self._forgotten_published
        return counts

    def floor(self, topic: str) -> int:
        """The number a topic starts after (0 unless a forgotten topic left one)."""
        floors = self._floors
        return 0 if floors is None else floors[_bucket(topic)]

    def forgotten_state(self, state: _Topic) -> None:
        """``state``, forgotten while the runtime still numbered events with it, is done:
        its last number joins its bucket's floor."""
        self._raise_floor(state)

    # -- bounds ------------------------------------------------------------------------------

    def _open(
        self, state: _Topic, now: float
    ) -> tuple[collections.deque[Event], collections.deque[int]]:
        ring = state.ring = collections.deque()
        sizes = state.sizes = collections.deque()
        state.gen = gen = next(self._gens)
        heapq.heappush(self._heap, (now, gen, state))
        self.held_bytes += TOPIC_COST
        return ring, sizes

    def _release(self, state: _Topic) -> None:
        """``state`` keeps no event now: its rings go (its heap entry is spent)."""
        state.ring = state.sizes = None
        state.gen = 0
        self.held_bytes -= TOPIC_COST
        if not state.gone:
            self._idle[state.topic] = None

    def _evict_oldest(self) -> bool:
        """The oldest kept event goes; False if none is kept."""
        heap = self._heap
        while heap:
            when, gen, state = heap[0]
            ring, sizes = state.ring, state.sizes
            if ring is None or sizes is None or state.gen != gen:
                heapq.heappop(heap)  # a spent entry
                continue
            oldest = ring[0].timestamp
            if oldest != when:  # the topic's oldest went by its own ring's bound
                heapq.heapreplace(heap, (oldest, gen, state))
                continue
            ring.popleft()
            self.held_bytes -= sizes.popleft()
            self.held -= 1
            self.evicted += 1
            if ring:
                heapq.heapreplace(heap, (ring[0].timestamp, gen, state))
            else:
                heapq.heappop(heap)
                self._release(state)
            return True
        return False

    def _trim(self) -> None:
        """Evict the oldest events until the bytes held are within ``max_bytes``."""
        while self.held_bytes > self.max_bytes and self._evict_oldest():
            pass

    def _forget_one(self) -> None:
        """Forget one topic's counter: one keeping no event, the earliest emptied; if
        none, the oldest events go until a topic keeps none."""
        while True:
            while self._idle:
                topic = next(iter(self._idle))
                del self._idle[topic]
                state = self._topics.get(topic)
                if state is not None and state.ring is None:
                    self._forget(state)
                    return
            if not self._evict_oldest():
                break
        # Not reached while every topic keeps events or is listed idle; just in case.
        state = next(iter(self._topics.values()))
        ring, sizes = state.ring, state.sizes
        if ring is not None and sizes is not None:
            self.held -= len(ring)
            self.evicted += len(ring)
            self.held_bytes -= sum(sizes)
            self._release(state)
        self._forget(state)

    def _forget(self, state: _Topic) -> None:
        del self._topics[state.topic]
        self._idle.pop(state.topic, None)
        state.gone = True
        self.forgotten += 1
        self._forgotten_published += state.seq - state.start
        self._raise_floor(state)

    def _raise_floor(self, state: _Topic) -> None:
        if self._floors is None:
            self._floors = array.array("q", bytes(8 * FLOOR_BUCKETS))
        bucket = _bucket(state.topic)
        if state.seq > self._floors[bucket]:
            self._floors[bucket] = state.seq


def _bucket(topic: str) -> int:
    return zlib.crc32(topic.encode()) % FLOOR_BUCKETS


class Arrivals:
    """A subscriber's side: the last number seen per (publisher, topic), to count gaps
    and refuse repeats; at most ``most`` pairs, the least recently seen forgotten first.

    A forgotten pair costs at most what a pair never seen does: its next event counts
    no gap (one that happened meanwhile goes uncounted, and a replaying subscription
    does not fill it), and an event seen already before is taken again (a repeat, for a
    replaying subscription that gets it from a ring and live).
    """

    def __init__(self, most: int = _LIMITS.event_arrivals) -> None:
        self._last: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
        self._most = most
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last)

    def _first(self, key: tuple[str, str], seq: int) -> None:
        last = self._last
        if len(last) >= self._most:
            last.popitem(last=False)
            self.evicted += 1
        last[key] = seq

    def check(self, publisher: str, topic: str, seq: int) -> int:
        """How many events of this publisher and topic were missed before ``seq`` (0 if
        none or it is the first seen), or -1 if ``seq`` was seen already (a repeat)."""
        key = (publisher, topic)
        last = self._last.get(key)
        if last is None:
            self._first(key, seq)
            return 0
        self._last.move_to_end(key)
        if seq <= last:
            return -1
        self._last[key] = seq
        return seq - last - 1

    def check_run(self, publisher: str, topic: str, first: int, count: int) -> tuple[int, int]:
        """For events ``first .. first + count - 1`` of this publisher and topic: how many
        at the start were seen already (repeats), and how many were missed before them."""
        key = (publisher, topic)
        last = self._last.get(key)
        end = first + count - 1
        if last is None:
            self._first(key, end)
            return 0, 0
        self._last.move_to_end(key)
        if end <= last:
            return count, 0
        self._last[key] = end
        if first > last:
            return 0, first - last - 1
        return last - first + 1, 0

    def last(self, publisher: str, topic: str) -> int | None:
        return self._last.get((publisher, topic))

    def forget_publisher(self, publisher: str) -> None:
        for key in [k for k in self._last if k[0] == publisher]:
            del self._last[key]

    def forget_prefix(self, prefix: str) -> None:
        """No subscription covers ``prefix`` any more: the next event of such a topic
        starts afresh (what was not received while unsubscribed is not a loss)."""
        for key in [k for k in self._last if k[1].startswith(prefix)]:
            del self._last[key]


class TopicCounts:
    """Per-topic delivered and dropped counts of one node (published ones live in the
    :class:`Sequencer`). At most ``most`` topics are counted apart; the rest under ``*``."""

    OTHER: Final = "*"

    def __init__(self, most: int = 1_000) -> None:
        self._most = most
        self._counts: dict[str, list[int]] = {}

    def _entry(self, topic: str) -> list[int]:
        entry = self._counts.get(topic)
        if entry is None:
            if len(self._counts) >= self._most:
                topic = self.OTHER
                entry = self._counts.get(topic)
            if entry is None:
                entry = self._counts[topic] = [0, 0]
        return entry

    def delivered(self, topic: str, n: int = 1) -> None:
        self._entry(topic)[0] += n

    def dropped(self, topic: str, n: int = 1) -> None:
        self._entry(topic)[1] += n

    def snapshot(self, published: Mapping[str, int]) -> dict[str, TopicStatistics]:
        topics = dict.fromkeys([*published, *self._counts])
        return {
            t: TopicStatistics(published.get(t, 0), *self._counts.get(t, (0, 0))) for t in topics
        }


# -- system events -----------------------------------------------------------------------


class SystemEvents:
    """Derives ``$mesh.*`` events from successive states of members, as this node sees
    them (pure: each node derives its own, nothing extra travels).

    :meth:`update` takes a member's new state (``None``: it is gone from the view) and
    returns ``(topic, data)`` pairs: ``$mesh.node.joined`` when a member is first listed
    alive, ``.left`` / ``.failed`` when it leaves or is declared dead (or vanishes),
    ``$mesh.service.up`` / ``.down`` per provider as a live member starts or stops
    offering a service (taking calls: ``up`` or ``degraded``; ``providers``: how many
    live providers remain), ``$mesh.topic.new`` when a topic is listed by any
    publisher for the first time, and from a supervised service's listing
    ``$mesh.service.crashed`` (its last crash changed), ``.restarted`` (its restarts
    went up) and ``.failed`` (it became ``failed``). Those three are not derived for
    the node ``local`` (this one): its supervisor announces them itself, with the
    traceback that the listing does not carry.
    """

    def __init__(self, local: str | None = None) -> None:
        self._local = local
        self._members: dict[str, MemberInfo] = {}  # live (alive or suspect) and listed
        self._offered: dict[str, dict[str, str]] = {}  # member id -> service -> version
        self._providers: collections.Counter[str] = collections.Counter()
        self._topics: set[str] = set()

    def prime(self, members: Iterable[MemberInfo]) -> None:
        """Take ``members`` as the starting state without deriving events from it."""
        for info in members:
            self.update(info.id, info)

    def update(self, member_id: str, info: MemberInfo | None) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        live = info is not None and info.status in ("alive", "suspect") and info.record is not None
        known = self._members.get(member_id)
        if live:
            assert info is not None
            assert info.record is not None
            if known is None:
                out.append((NODE_JOINED, _node_data(info)))
            elif member_id != self._local and known.record is not None:
                out.extend(_supervision_events(known.record.services, info))
            self._members[member_id] = info
            offered = {s.name: s.version for s in info.record.services if s.offered}
            for topic in info.record.topics:
                if topic not in self._topics:
                    self._topics.add(topic)
                    out.append((TOPIC_NEW, {"topic": topic, **_node_data(info)}))
        else:
            offered = {}
        before = self._offered.get(member_id, {})
        subject = info if info is not None else known
        if subject is not None and known is not None and not subject.address:
            # a member listed without its record (left, or pulled by a mesh.Client):
            # say where it was, as last known
            subject = dataclasses.replace(subject, address=known.address)
        for name in sorted(set(before) - set(offered)):
            self._providers[name] -= 1
            if subject is not None:
                out.append((SERVICE_DOWN, self._service_data(name, before[name], subject)))
        for name in sorted(set(offered) - set(before)):
            self._providers[name] += 1
            assert info is not None
            out.append((SERVICE_UP, self._service_data(name, offered[name], info)))
        if offered:
            self._offered[member_id] = offered
        else:
            self._offered.pop(member_id, None)
        if not live and known is not None:
            del self._members[member_id]
            status = "left" if info is not None and info.status == "left" else "failed"
            assert subject is not None
            data = _node_data(subject)
            out.append((NODE_LEFT if status == "left" else NODE_FAILED, data))
        return out

    def _service_data(self, name: str, version: str, info: MemberInfo) -> dict[str, Any]:
        return {
            "service": name,
            "version": version,
            "providers": max(0, self._providers[name]),
            **_node_data(info),
        }


def _supervision_events(before: Iterable[ServiceInfo], info: MemberInfo) -> list[tuple[str, Any]]:
    """Crashes, restarts and give-ups of ``info``'s supervised services since its
    services were ``before`` (several crashes between two records seen make one event)."""
    assert info.record is not None
    was = {s.name: s for s in before}
    out: list[tuple[str, Any]] = []
    for now in info.record.services:
        old = was.get(now.name)
        if old is None:
            continue
        crash = now.last_crash
        fields = {"service": now.name, "version": now.version, "restarts": now.restarts}
        if crash is not None and crash != old.last_crash:
            data = {**fields, "error": crash.error, "traceback": None, "time": crash.time}
            out.append((SERVICE_CRASHED, {**data, **_node_data(info)}))
        if now.restarts > old.restarts:
            out.append((SERVICE_RESTARTED, {**fields, **_node_data(info)}))
        if now.state == "failed" and old.state != "failed":
            error = None if crash is None else crash.error
            out.append((SERVICE_FAILED, {**fields, "error": error, **_node_data(info)}))
    return out


def _node_data(info: MemberInfo) -> dict[str, Any]:
    return {"node": info.name, "node_id": info.id, "status": info.status, "address": info.address}
