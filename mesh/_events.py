"""Events, the pure part: topics, sequence numbers, gaps, history rings, per-topic counts,
and the system events (``$mesh.*``) a node derives from its own view of the mesh.

No sockets, no loop, no clock: the runtime (``_eventbus``) passes times in. Semantics
(docs/events.md): plain publish/subscribe is at-most-once; each publisher numbers the
events of each topic 1, 2, 3, ...; a subscriber that sees a number skip counts the
missing events as dropped.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._catalog import ServiceInfo
from ._errors import InvalidTopic
from ._listing import MemberInfo
from ._wire import Event

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
#: A job of a durable queue moved to the dead letters (emitted by mesh/_jobrunner.py).
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


class _Topic:
    __slots__ = ("ring", "seq")

    def __init__(self, history: int) -> None:
        self.seq = 0  # also the count published
        self.ring: collections.deque[Event] = collections.deque(maxlen=history)


_new_tuple: Final = tuple.__new__


def next_event(state: _Topic, topic: str, publisher: str, data: Any, now: float) -> Event:
    """Number the next event of a topic whose state is ``state``, and keep it in its ring."""
    state.seq = seq = state.seq + 1
    # tuple.__new__: a third of the cost of Event(...) (its keyword-capable __new__)
    event: Event = _new_tuple(Event, (topic, publisher, seq, now, data))
    state.ring.append(event)
    return event


class Sequencer:
    """A publisher's side: numbers each topic's events and keeps the last ``history`` of
    each for late subscribers (``subscribe(..., history=N)``)."""

    def __init__(self, node_id: str, history: int) -> None:
        self.node_id = node_id
        self._history = history
        self._topics: dict[str, _Topic] = {}

    def state(self, topic: str) -> _Topic:
        """The numbering and ring of ``topic`` (new at 0 for a topic not yet published):
        the runtime keeps it at hand while it batches the topic, and calls
        :func:`next_event` on it."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(self._history)
        return state

    def next(self, topic: str, data: Any, now: float) -> Event:
        """The next event of ``topic``, numbered and kept in its ring."""
        return next_event(self.state(topic), topic, self.node_id, data, now)

    def topics(self) -> Iterator[str]:
        """Topics published so far, oldest first."""
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
        for topic, state in self._topics.items():
            if not topic.startswith(prefix) or limit <= 0:
                continue
            since = after.get(topic, 0)
            until = before.get(topic) if before else None
            kept = [e for e in state.ring if e.seq > since and (until is None or e.seq < until)]
            found.extend(kept[-limit:])
        return found

    def count_published(self) -> Mapping[str, int]:
        return {topic: state.seq for topic, state in self._topics.items()}


class Arrivals:
    """A subscriber's side: the last number seen per (publisher, topic), to count gaps
    and refuse repeats."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}

    def check(self, publisher: str, topic: str, seq: int) -> int:
        """How many events of this publisher and topic were missed before ``seq`` (0 if
        none or it is the first seen), or -1 if ``seq`` was seen already (a repeat)."""
        key = (publisher, topic)
        last = self._last.get(key)
        if last is not None and seq <= last:
            return -1
        self._last[key] = seq
        return 0 if last is None else seq - last - 1

    def check_run(self, publisher: str, topic: str, first: int, count: int) -> tuple[int, int]:
        """For events ``first .. first + count - 1`` of this publisher and topic: how many
        at the start were seen already (repeats), and how many were missed before them."""
        key = (publisher, topic)
        last = self._last.get(key)
        end = first + count - 1
        if last is None:
            self._last[key] = end
            return 0, 0
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
