"""Events, the runtime part: subscriptions, the SUB socket, batching, queue groups, replay.

The :class:`EventBus` of a node publishes on its PUB socket, follows every live member's
PUB with one SUB socket while a subscription can match other nodes' events, delivers
to this node's subscriptions, and derives system events. What it needs from the node
(sockets, the member list, calls to members) comes through the :class:`Host` protocol.
Decisions (numbering, gaps, system events) are the pure code of ``_events``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, Self

from .._config import Limits
from .._core.events import (
    Arrivals,
    Event,
    Sequencer,
    SystemEvents,
    TopicCounts,
    TopicStatistics,
    _Topic,
    check_prefix,
    check_topic,
    is_system,
    next_event,
    reaches_peers,
)
from .._core.listing import MemberInfo
from .._errors import MeshError, ProtocolError
from .._util.resource import AsyncResource
from .._wire.codec import Codec

__all__ = ["EventBus", "EventStatistics", "Host", "Subscription"]

log = logging.getLogger("mesh.events")
_LIMITS: Final = Limits()

#: Most events of one topic sent in one PUB message (a batch: one loop turn's worth).
BATCH_MOST: Final = 256
#: How long a queue-group delivery waits for an acknowledgement before trying another
#: member, and how long it keeps trying when no member takes the event.
GROUP_ACK_TIMEOUT: Final = 2.0
GROUP_GIVE_UP: Final = 30.0
#: A replaying subscription asks each publisher again for what followed the replayed
#: events once its SUB socket follows that publisher (waiting at most CATCH_UP_WAIT),
#: CATCH_UP_SETTLE later: the time for the subscription to reach the publisher.
CATCH_UP_WAIT: Final = 2.0
CATCH_UP_SETTLE: Final = 0.1


class SubSocket(Protocol):
    """The SUB socket, as the transport gives it to the bus."""

    def connect(self, address: str, public_key: str | None) -> None: ...
    def disconnect(self, address: str) -> None: ...
    def subscribe(self, prefix: str) -> None: ...
    def unsubscribe(self, prefix: str) -> None: ...
    async def aclose(self) -> None: ...


class Host(Protocol):
    """What the bus needs from its node."""

    def send_events(self, frames: list[bytes]) -> None: ...
    def open_sub(self, on_frames: Callable[[list[bytes]], None]) -> SubSocket: ...
    def live_members(self) -> Iterable[MemberInfo]: ...
    def events_listing_changed(self) -> None: ...
    def spawn(self, coroutine: Any, name: str) -> None: ...
    def call_member(
        self, member: MemberInfo, method: str, args: list[Any], timeout: float
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class EventStatistics:
    """The events of one node: per topic, and totals."""

    topics: Mapping[str, TopicStatistics]
    published: int
    delivered: int
    dropped: int
    #: Publishers whose PUB socket this node's SUB follows now.
    following: int
    subscriptions: int
    #: Queue-group events handed to a member that acknowledged them, redelivered after a
    #: member failed or refused, and given up (no member took them in time).
    group_delivered: int
    group_redelivered: int
    group_lost: int
    #: PUB messages from followed publishers that were not valid events (or claimed a
    #: reserved ``$mesh.`` topic): dropped and counted.
    protocol_errors: int = 0
    #: The history kept for replay: bytes held (each event's encoded data + 200, each
    #: topic keeping events + 2,000; at most ``limits.event_history_bytes``), events
    #: held, events evicted to stay within that, and topics whose sequence counter was
    #: forgotten (past ``limits.event_topics``).
    history_bytes: int = 0
    history_events: int = 0
    history_evicted: int = 0
    topics_forgotten: int = 0
    #: (publisher, topic) pairs whose last number this node keeps to count gaps (at
    #: most ``limits.event_arrivals``), and pairs forgotten to stay within that (by the
    #: node and by its replaying subscriptions).
    arrivals: int = 0
    arrivals_evicted: int = 0


@dataclass(slots=True)
class _Batch:
    """What a topic published in this loop turn: its numbering, its first number, its
    timestamp (every event of the batch carries it), the packed data, their
    size and the room there is."""

    state: _Topic
    first_seq: int
    timestamp: float
    room: int
    packed: list[bytes] = field(default_factory=list)
    size: int = 0


class Subscription(AsyncResource):
    """Events whose topic starts with ``prefix``: ``async for event in sub``.

    Made by :meth:`mesh.Node.subscribe`; live from the moment it is made. Use it as an
    async context manager, or call :meth:`aclose`, to stop it. At most ``maxsize``
    events wait in it; more are dropped (counted in :attr:`dropped`), so a slow
    subscriber never slows a publisher.
    """

    def __init__(
        self, bus: EventBus, prefix: str, group: str | None, history: int, maxsize: int
    ) -> None:
        self.prefix = prefix
        self.group = group
        self.history = history
        self.dropped = 0
        self._bus = bus
        self._maxsize = maxsize
        self._queue: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        # Replay: the events fetched from publishers' rings come first; live ones already
        # delivered by then are skipped, and a gap after them is filled from the ring.
        self._replay: asyncio.Task[list[Event]] | None = None
        self._seen: Arrivals | None = Arrivals(bus.arrivals_most) if history else None
        self._finalizer: weakref.finalize[[int, str], Subscription] | None = None

    def _put(self, event: Event) -> bool:
        if self._closed:
            return False
        if len(self._queue) >= self._maxsize:
            self.dropped += 1
            return False
        self._queue.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def _put_run(self, events: list[Event]) -> int:
        """Take what fits of ``events`` (in order); returns how many."""
        if self._closed:
            return 0
        room = self._maxsize - len(self._queue)
        if room < len(events):
            self.dropped += len(events) - max(room, 0)
            events = events[: max(room, 0)]
        if events:
            self._queue.extend(events)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        return len(events)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._queue and self._seen is None:  # the common case: an event is waiting
            return self._queue.popleft()
        return await self._next()

    async def _next(self) -> Event:
        if self._replay is not None:
            replay, self._replay = self._replay, None
            fetched = await replay
            self._queue.extendleft(reversed(fetched))
        while True:
            while not self._queue:
                if self._closed:
                    raise StopAsyncIteration
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            event = self._queue.popleft()
            seen = self._seen
            if seen is None:
                return event
            last = seen.last(event.publisher, event.topic)
            if last is not None and event.seq <= last:
                continue  # replayed already
            if last is not None and event.seq > last + 1 and not is_system(event.topic):
                missing = await self._bus.fill_gap(event.publisher, event.topic, last, event.seq)
                if missing:
                    self._queue.appendleft(event)
                    self._queue.extendleft(reversed(missing))
                    continue
            seen.check(event.publisher, event.topic, event.seq)
            return event

    def pending(self) -> int:
        """Events waiting to be read."""
        return len(self._queue)

    async def aclose(self) -> None:
        """Stop: no more events arrive; those waiting can still be read."""
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._replay is not None:
            self._replay.cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._bus._remove(self)

    def __repr__(self) -> str:
        group = f", group={self.group!r}" if self.group else ""
        return f"<Subscription {self.prefix!r}{group}>"


class EventBus:
    """The events of one node (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        node_id: str,
        codec: Codec,
        *,
        history: int,
        maxsize: int,
        history_bytes: int = _LIMITS.event_history_bytes,
        topics: int = _LIMITS.event_topics,
        arrivals: int = _LIMITS.event_arrivals,
        rng: random.Random | None = None,
    ) -> None:
        self._host = host
        self.node_id = node_id
        self._codec = codec
        self._pack = codec.pack_event_data
        self._maxsize = maxsize
        self._sequencer = Sequencer(node_id, history, history_bytes, topics)
        self._system_sequencer = Sequencer(node_id, 1)
        self.arrivals_most = arrivals
        self._arrivals = Arrivals(arrivals)
        self._seen_evicted = 0  # by replaying subscriptions closed since
        self._counts = TopicCounts()
        self._rng = rng or random.Random()
        # Subscriptions by kind; weak, so one dropped without aclose() ends by itself.
        self._plain: dict[int, weakref.ref[Subscription]] = {}
        self._plain_refs: tuple[weakref.ref[Subscription], ...] = ()  # what _deliver walks
        self._keys = itertools.count()
        self._groups: dict[tuple[str, str], list[weakref.ref[Subscription]]] = {}
        self._peer_prefixes: collections.Counter[str] = collections.Counter()
        self._sub: SubSocket | None = None
        self._following: dict[str, tuple[str, str | None]] = {}  # member id -> (pub, key)
        self._system: SystemEvents | None = None
        self._pending: dict[str, _Batch] = {}
        self._flush_scheduled = False
        self._outstanding: collections.Counter[str] = collections.Counter()
        self._group_index: dict[tuple[str, str], list[MemberInfo]] | None = None
        self._group_delivered = self._group_redelivered = self._group_lost = 0
        self.protocol_errors = 0
        self._closed = False

    # -- publishing ------------------------------------------------------------------------

    def publish(self, topic: str, data: Any) -> Event:
        """Number the event, queue it for the PUB socket (one EVENT_BATCH per topic per
        loop turn), and hand it to this node's subscriptions and to one member of each
        matching queue group. Data that cannot travel raises here, before anything.
        (The hot path of events: keep it lean, docs/performance.md "Events".)"""
        try:
            batch = self._pending.get(topic)
        except TypeError:  # unhashable: not a topic at all
            check_topic(topic)
            raise
        if batch is None:  # the first event of this topic in this loop turn
            if self._closed:
                raise MeshError("node closed: cannot publish")
            check_topic(topic)  # (a topic with an open batch passed already)
            packed = self._pack(data)
            size = len(packed)
            batch = self._open_batch(topic)
        else:
            packed = self._pack(data)
            size = len(packed)
            if len(batch.packed) >= BATCH_MOST or batch.size + size > batch.room:
                self._send(topic, batch)
                batch = self._open_batch(topic)
        event = next_event(batch.state, topic, self.node_id, data, batch.timestamp, size)
        batch.packed.append(packed)
        batch.size += size
        if self._plain_refs:
            self._deliver(event)
        index = self._group_index  # None: to be rebuilt after a change of the mesh
        if self._groups or index or (index is None and self._mesh_groups()):
            self._to_groups(event)
        return event

    def _open_batch(self, topic: str) -> _Batch:
        state = self._sequencer.state(topic)
        batch = self._pending[topic] = _Batch(
            state, state.seq + 1, time.time(), self._codec.batch_room(topic, self.node_id)
        )
        if state.seq == state.start:  # a topic not numbered before: the record lists it now
            self._host.events_listing_changed()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return batch

    def _send(self, topic: str, batch: _Batch) -> None:
        del self._pending[topic]
        if batch.state.gone:  # forgotten while this batch numbered with it
            self._sequencer.forgotten_state(batch.state)
        payload = self._codec.encode_event_batch(
            topic, self.node_id, batch.first_seq, batch.timestamp, batch.packed
        )
        self._host.send_events([topic.encode(), payload])

    def _flush(self) -> None:
        self._flush_scheduled = False
        for topic, batch in list(self._pending.items()):
            self._send(topic, batch)

    def topics(self) -> list[str]:
        """Topics this node has published (what its catalog record lists)."""
        return list(self._sequencer.topics())

    def history(
        self,
        prefix: str,
        limit: int,
        after: Mapping[str, int],
        before: Mapping[str, int] | None = None,
    ) -> list[Event]:
        return self._sequencer.history(prefix, limit, after, before)

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(
        self, prefix: str, *, group: str | None = None, history: int = 0, maxsize: int | None = None
    ) -> Subscription:
        check_prefix(prefix)
        if group is not None and (not isinstance(group, str) or not group):
            raise MeshError(f"a queue group is a non-empty str, got {group!r}")
        if group is not None and history:
            raise MeshError("a queue-group subscription cannot replay history")
        if type(history) is not int or history < 0:
            raise MeshError(f"history is a count of events, got {history!r}")
        size = self._maxsize if maxsize is None else maxsize
        if type(size) is not int or size < 1:
            raise MeshError(f"maxsize is a positive count of events, got {size!r}")
        if self._closed:
            raise MeshError("node closed: cannot subscribe")
        sub = Subscription(self, prefix, group, history, size)
        if group is not None:
            key = (group, prefix)
            first = key not in self._groups
            self._groups.setdefault(key, []).append(weakref.ref(sub, self._group_gone(key)))
            if first:
                self._host.events_listing_changed()
            return sub
        number = next(self._keys)
        self._plain[number] = weakref.ref(sub)
        self._plain_refs = tuple(self._plain.values())
        # One dropped without aclose() stops following when it is collected.
        sub._finalizer = weakref.finalize(sub, self._forget, number, prefix)
        self._system_needed(prefix)
        if reaches_peers(prefix):
            self._peer_prefixes[prefix] += 1
            sub_socket = self._sub_socket()
            if self._peer_prefixes[prefix] == 1:
                sub_socket.subscribe(prefix)
        if history:
            sub._replay = asyncio.get_running_loop().create_task(
                self._replay(sub, prefix, history), name=f"replay {prefix!r}"
            )
        return sub

    def _group_gone(self, key: tuple[str, str]) -> Callable[[weakref.ref[Subscription]], None]:
        def gone(ref: weakref.ref[Subscription]) -> None:
            refs = self._groups.get(key)
            if refs is not None and ref in refs:
                refs.remove(ref)
                if not refs:
                    del self._groups[key]
                    if not self._closed:
                        self._host.events_listing_changed()

        return gone

    def _remove(self, sub: Subscription) -> None:
        if sub.group is not None:
            key = (sub.group, sub.prefix)
            for ref in list(self._groups.get(key, ())):
                if ref() is sub:
                    self._group_gone(key)(ref)
            return
        if sub._seen is not None:
            self._seen_evicted += sub._seen.evicted
        if sub._finalizer is not None and (found := sub._finalizer.detach()) is not None:
            self._forget(*found[2])

    def _forget(self, key: int, prefix: str) -> None:
        """A plain subscription to ``prefix`` ended (closed or collected)."""
        self._plain.pop(key, None)
        self._plain_refs = tuple(self._plain.values())
        if not reaches_peers(prefix) or self._peer_prefixes[prefix] <= 0:
            return
        self._peer_prefixes[prefix] -= 1
        if self._peer_prefixes[prefix] == 0:
            del self._peer_prefixes[prefix]
            if self._sub is not None and not self._closed:
                self._sub.unsubscribe(prefix)
            self._arrivals.forget_prefix(prefix)

    def groups(self) -> list[tuple[str, str]]:
        """(group, prefix) pairs this node is a member of (what its record lists)."""
        return sorted(k for k, refs in self._groups.items() if any(r() for r in refs))

    # -- delivery ---------------------------------------------------------------------------

    def _deliver(self, event: Event) -> None:
        topic = event.topic
        counts = self._counts
        for ref in self._plain_refs:
            sub = ref()
            if sub is not None and topic.startswith(sub.prefix):
                if sub._put(event):
                    counts.delivered(topic)
                else:
                    counts.dropped(topic)

    def _deliver_run(self, topic: str, events: list[Event]) -> None:
        """A run of events of one topic, in order, to every matching subscription."""
        counts = self._counts
        for ref in self._plain_refs:
            sub = ref()
            if sub is not None and topic.startswith(sub.prefix):
                taken = sub._put_run(events)
                if taken:
                    counts.delivered(topic, taken)
                if taken < len(events):
                    counts.dropped(topic, len(events) - taken)

    def on_frames(self, frames: list[bytes]) -> None:
        """A message (one event, or a batch of one topic's) from a followed PUB socket."""
        try:
            events = self._codec.decode_events(frames)
        except ProtocolError as exc:
            self.protocol_errors += 1
            log.debug("events: %s", exc)
            return
        first = events[0]
        topic = first.topic
        if is_system(topic):  # derived by each node itself, never sent
            self.protocol_errors += 1
            return
        repeats, missed = self._arrivals.check_run(first.publisher, topic, first.seq, len(events))
        if missed:
            self._counts.dropped(topic, missed)
        if repeats:
            events = events[repeats:]
        if events:
            self._deliver_run(topic, events)

    # -- following publishers ---------------------------------------------------------------

    def _sub_socket(self) -> SubSocket:
        if self._sub is None:
            self._sub = self._host.open_sub(self.on_frames)
            for info in self._host.live_members():
                self.member_changed(info)
        return self._sub

    def system_event(self, topic: str, data: Any) -> None:
        """A ``$mesh.*`` event this node derived itself (a service it supervises crashed,
        restarted or failed), for its subscriptions whose prefix matches."""
        if self._system is not None:  # else no subscription can match it
            self._deliver(self._system_sequencer.next(topic, data, time.time()))

    def member_changed(self, info: MemberInfo, gone: bool = False) -> None:
        """A member's status or record changed (``gone``: it is no longer in the view):
        follow or stop following its PUB socket, and derive system events."""
        self._group_index = None
        if self._system is not None:
            for topic, data in self._system.update(info.id, None if gone else info):
                self._deliver(self._system_sequencer.next(topic, data, time.time()))
        if info.id == self.node_id or self._sub is None:
            return
        record = info.record
        pub = record.addresses.get("pub") if record is not None else None
        wanted = not gone and info.status in ("alive", "suspect") and pub is not None
        followed = self._following.get(info.id)
        if wanted:
            assert record is not None
            assert pub is not None
            target = (pub, record.public_key)
            if followed == target:
                return
            if followed is not None:
                self._sub.disconnect(followed[0])
            self._following[info.id] = target
            self._sub.connect(*target)
        elif followed is not None:
            del self._following[info.id]
            self._sub.disconnect(followed[0])
            self._arrivals.forget_publisher(info.id)

    def _system_needed(self, prefix: str) -> None:
        """Start deriving system events once a subscription can match them."""
        if self._system is None and ("$mesh.".startswith(prefix) or prefix.startswith("$mesh.")):
            self._system = SystemEvents(local=self.node_id)
            self._system.prime(self._host.live_members())

    # -- queue groups -----------------------------------------------------------------------

    def _mesh_groups(self) -> dict[tuple[str, str], list[MemberInfo]]:
        """Alive members of each queue group in the mesh (rebuilt after a change)."""
        if self._group_index is None:
            index: dict[tuple[str, str], list[MemberInfo]] = {}
            for info in self._host.live_members():
                if info.status == "alive" and info.id != self.node_id:
                    for key in _groups_of(info):
                        index.setdefault(key, []).append(info)
            self._group_index = index
        return self._group_index

    def _to_groups(self, event: Event) -> None:
        topic = event.topic
        keys = {k for k in self._mesh_groups() if topic.startswith(k[1])}
        keys.update(k for k in self._groups if topic.startswith(k[1]))
        for key in keys:
            self._host.spawn(self._deliver_to_group(key, event), f"group {key[0]}")

    async def _deliver_to_group(self, key: tuple[str, str], event: Event) -> None:
        """Hand ``event`` to one member of ``key``'s group, the one with the fewest
        deliveries outstanding from here; another if it fails or refuses (each is tried
        once per round, with a growing pause between rounds); lost after GROUP_GIVE_UP s."""
        deadline = time.monotonic() + GROUP_GIVE_UP
        tried: set[str] = set()
        rounds = 0
        while not self._closed and time.monotonic() < deadline:
            members = {m.id: m for m in self._mesh_groups().get(key, ())}
            if self._local_group(key) is not None:
                members[self.node_id] = None  # type: ignore[assignment]
            choices = [c for c in members if c not in tried]
            if not choices:
                tried.clear()
                await asyncio.sleep(min(0.05 * 2**rounds, 1.0))
                rounds += 1
                continue
            least = min(self._outstanding[c] for c in choices)
            chosen = self._rng.choice([c for c in choices if self._outstanding[c] == least])
            if await self._hand_over(key, event, members[chosen]):
                self._group_delivered += 1
                return
            tried.add(chosen)
            self._group_redelivered += 1
        self._group_lost += 1
        self._counts.dropped(event.topic)

    async def _hand_over(
        self, key: tuple[str, str], event: Event, member: MemberInfo | None
    ) -> bool:
        """Whether ``member`` (None: this node) took ``event`` for ``key``'s group."""
        if member is None:
            return self.accept_group_event(key[0], key[1], event)
        self._outstanding[member.id] += 1
        try:
            answer = await self._host.call_member(
                member, "$mesh.deliver", [key[0], key[1], event_to_wire(event)], GROUP_ACK_TIMEOUT
            )
        except MeshError as exc:
            log.debug("group %s: %s did not take an event: %s", key[0], member.name, exc)
            return False
        finally:
            self._outstanding[member.id] -= 1
            if not self._outstanding[member.id]:
                del self._outstanding[member.id]
        return answer is True

    def _local_group(self, key: tuple[str, str]) -> Subscription | None:
        subs = [s for r in self._groups.get(key, ()) if (s := r()) is not None and not s._closed]
        if not subs:
            return None
        return min(subs, key=Subscription.pending)

    def accept_group_event(self, group: str, prefix: str, event: Event) -> bool:
        """A queue-group event for this node: True once a subscription holds it."""
        sub = self._local_group((group, prefix))
        if sub is None or not sub._put(event):
            return False
        self._counts.delivered(event.topic)
        return True

    # -- replay -----------------------------------------------------------------------------

    async def _replay(self, sub: Subscription, prefix: str, limit: int) -> list[Event]:
        """The last ``limit`` events per topic under ``prefix`` from every publisher
        that lists such a topic (this node's ring included), each topic in order.

        Events a publisher sends before this node's subscription reaches its PUB socket
        are lost on the way; a later live event shows the gap and it is filled from the
        ring (:meth:`fill_gap`). So that the last ones are not left out when nothing
        follows them, each publisher is asked once more, for what came after the
        replayed events, once the SUB socket follows it (:meth:`_catch_up`)."""
        found = self.history(prefix, limit, {})
        sources = [
            info
            for info in self._host.live_members()
            if info.id != self.node_id
            and info.record is not None
            and any(t.startswith(prefix) for t in info.record.topics)
        ]
        results = await asyncio.gather(
            *(self._fetch(info, prefix, limit, {}) for info in sources), return_exceptions=True
        )
        for info, result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                log.debug("replay from %s failed: %s", info.name, result)
                continue
            found.extend(result)
            after = {e.topic: e.seq for e in result}
            self._host.spawn(self._catch_up(sub, info, prefix, limit, after), "replay catch-up")
        return found

    async def _catch_up(
        self, sub: Subscription, info: MemberInfo, prefix: str, limit: int, after: dict[str, int]
    ) -> None:
        deadline = time.monotonic() + CATCH_UP_WAIT
        while info.id not in self._following and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # rare and bounded: cheaper than an Event per member
        await asyncio.sleep(CATCH_UP_SETTLE)  # the subscription travels to the publisher
        try:
            events = await self._fetch(info, prefix, limit, after)
        except MeshError as exc:
            log.debug("replay catch-up from %s failed: %s", info.name, exc)
            return
        seen = sub._seen
        for event in events:  # the subscription also skips those it has had live since
            last = None if seen is None else seen.last(event.publisher, event.topic)
            if last is None or event.seq > last:
                sub._put(event)

    async def fill_gap(self, publisher: str, topic: str, last: int, seq: int) -> list[Event]:
        """Events ``last+1 .. seq-1`` of ``topic`` from ``publisher``'s ring (what it still
        keeps of them), for a replaying subscription."""
        # ``before``: the latest events after ``last`` would be the newest of the ring, not
        # the gap's first ones (a publisher that went on answered none of the gap)
        if publisher == self.node_id:
            kept = self.history(topic, seq - last - 1, {topic: last}, {topic: seq})
        else:
            info = next((m for m in self._host.live_members() if m.id == publisher), None)
            if info is None:
                return []
            try:
                kept = await self._fetch(info, topic, seq - last - 1, {topic: last}, {topic: seq})
            except MeshError:
                return []
        return [e for e in kept if e.topic == topic and last < e.seq < seq]

    async def _fetch(
        self,
        info: MemberInfo,
        prefix: str,
        limit: int,
        after: dict[str, int],
        before: dict[str, int] | None = None,
    ) -> list[Event]:
        args: list[Any] = (
            [prefix, limit, after] if before is None else [prefix, limit, after, before]
        )
        wire = await self._host.call_member(info, "$mesh.history", args, 5.0)
        return [event_from_wire(item) for item in wire]

    # -- statistics and shutdown ------------------------------------------------------------

    def statistics(self) -> EventStatistics:
        sequencer = self._sequencer
        topics = self._counts.snapshot(sequencer.count_published())
        seen = [
            a for r in self._plain_refs if (s := r()) is not None and (a := s._seen) is not None
        ]
        return EventStatistics(
            topics=topics,
            published=sum(t.published for t in topics.values()),
            delivered=sum(t.delivered for t in topics.values()),
            dropped=sum(t.dropped for t in topics.values()),
            following=len(self._following),
            subscriptions=len(self._plain) + sum(len(r) for r in self._groups.values()),
            group_delivered=self._group_delivered,
            group_redelivered=self._group_redelivered,
            group_lost=self._group_lost,
            protocol_errors=self.protocol_errors,
            history_bytes=sequencer.held_bytes,
            history_events=sequencer.held,
            history_evicted=sequencer.evicted,
            topics_forgotten=sequencer.forgotten,
            arrivals=len(self._arrivals),
            arrivals_evicted=self._arrivals.evicted
            + self._seen_evicted
            + sum(a.evicted for a in seen),
        )

    async def aclose(self) -> None:
        """Send what waits, end every subscription, close the SUB socket."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        grouped = [s for refs in self._groups.values() for r in refs if (s := r()) is not None]
        plain = [s for r in self._plain_refs if (s := r()) is not None]
        for sub in [*plain, *grouped]:
            sub.close()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.aclose()
            self._sub = None


def _groups_of(info: MemberInfo) -> tuple[tuple[str, str], ...]:
    record = info.record
    return () if record is None else record.groups


def event_to_wire(event: Event) -> list[Any]:
    return [event.topic, event.publisher, event.seq, event.timestamp, event.data]


def event_from_wire(item: object) -> Event:
    if not isinstance(item, list) or len(item) < 5:
        raise ProtocolError(
            f"an event is [topic, publisher, seq, timestamp, data], got {item!r:.80}"
        )
    topic, publisher, seq, timestamp, data = item[:5]
    if not (
        isinstance(topic, str)
        and isinstance(publisher, str)
        and type(seq) is int
        and seq >= 1
        and isinstance(timestamp, int | float)
    ):
        raise ProtocolError(
            f"an event is [topic, publisher, seq, timestamp, data], got {item!r:.80}"
        )
    return Event(topic, publisher, seq, float(timestamp), data)
