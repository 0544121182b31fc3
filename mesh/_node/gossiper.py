"""Membership and catalog over sockets: the runtime around the two pure cores.

A node's gossip has its own bound ROUTER (its own port, small high-water marks) so
probes never queue behind large RPC payloads, and one DEALER per peer it talks to.
Membership messages are one-way (a Ping's Ack goes to the Ping's ``reply_to`` through
this node's DEALER to that address, and arrives on our ROUTER); catalog pulls are
request and reply on one DEALER (the ROUTER answers on the same pipe).

DEALERs are a bounded set (``max_dealers``, least recently used closed first, and any
idle for ``idle`` seconds): each costs three ZeroMQ sockets, and a mesh larger than the
set simply reopens one when it is needed again. Joins through addresses that are not
members yet (zeroconf sightings, which anyone on the LAN can fake; seeds) are bounded
and backed off by :class:`JoinAttempts`: a refused or failed attempt's DEALER is closed.
A socket that cannot be opened (the context's limit) is a peer not reached this time:
counted, never an exception out of a timer.

The cores decide everything (mesh/_core/membership.py, mesh/_core/catalog.py); this module only
moves bytes, keeps the clock (the loop's monotonic time) and wakes the cores when they
asked to be woken. A TCP disconnect seen by a DEALER's socket monitor moves a probe
forward (``Membership.disconnected``), never decides anything by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from .._core.catalog import Catalog, RecordPull, RecordReply, Stats, StatsPull, StatsReply
from .._core.joins import JoinAttempts, JoinStatistics
from .._core.membership import Change, Membership, Send
from .._errors import ProtocolError, TransportError
from .._io.transport import MonitorEvent, Pump, Transport
from .._wire.gossip import GossipCodec, GossipMessage
from .._wire.handshake import parse_address

__all__ = ["GOSSIP_HWM", "GossipStatistics", "Gossiper"]

log = logging.getLogger("mesh.gossip")

#: High-water mark of gossip sockets: a peer that does not read loses gossip, it never
#: makes this node queue megabytes (membership is built to survive lost messages).
GOSSIP_HWM = 1_000

#: How often this node takes its own stats for the catalog (seconds).
STATS_REFRESH = 1.0


@dataclass(frozen=True, slots=True)
class GossipStatistics:
    """Counters of the gossip runtime (the cores count the protocol itself)."""

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    dropped_out: int
    #: Frames that were not valid gossip messages (malformed, too large, overflowing).
    protocol_errors: int
    #: Disconnects seen by the socket monitor (each moved a probe forward).
    disconnects: int
    #: Socket (CURVE) handshakes that failed on this node's gossip DEALERs: a node with
    #: another secret or key; the DEALER is dropped unless the address is a member's.
    handshake_failures: int = 0
    #: Gossip DEALERs open now (three sockets each), and those closed to stay within
    #: ``max_dealers`` (least recently used) or after ``idle`` seconds unused.
    dealers: int = 0
    dealers_evicted: int = 0
    dealers_idle: int = 0
    #: Messages not sent because no socket could be opened for them.
    unreachable: int = 0
    #: Join attempts to addresses that were not members (sightings, seeds).
    joins: JoinStatistics | None = None


@dataclass(slots=True, eq=False)
class _Dealer:
    """A gossip DEALER and when it was last used (loop time)."""

    pump: Pump
    used: float


class Gossiper:
    """Runs ``membership`` and ``catalog`` on ``transport`` sockets.

    ``on_changes`` gets the membership changes after each step; ``take_stats`` returns this
    node's stats now (called every :data:`STATS_REFRESH` seconds and on fresh pulls).
    """

    def __init__(
        self,
        transport: Transport,
        codec: GossipCodec,
        *,
        on_changes: Callable[[list[Change]], None],
        on_records: Callable[[list[str]], None],
        take_stats: Callable[[], Stats],
        send_timeout: float,
        max_dealers: int = 1_024,
        idle: float = 60.0,
        max_pending_joins: int = 256,
    ) -> None:
        self.membership: Membership
        self.catalog: Catalog
        self._on_records = on_records
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport = transport
        self._codec = codec
        self._on_changes = on_changes
        self._take_stats = take_stats
        self._send_timeout = send_timeout
        self._router: Pump | None = None
        # Least recently used first: a DEALER used again moves to the end.
        self._dealers: dict[str, _Dealer] = {}
        self._max_dealers = max_dealers
        self._idle = idle
        self._next_sweep = 0.0
        self._evicted = self._idled = self._unreachable = 0
        self._joins = JoinAttempts(max_pending_joins)
        self._closed_totals = [0, 0, 0, 0, 0]
        self._routing_ids = itertools.count(1)
        self._routing_prefix = secrets.token_bytes(8)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_stats = 0.0
        self._closing = False
        self._protocol_errors = 0
        self._disconnects = 0
        self._handshake_failures = 0

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self, host: str, port: int) -> int:
        """Bind the gossip ROUTER (messages wait until :meth:`start`); returns the port."""
        self._router, bound = self._transport.router(
            host, port, self._on_router_frames, hwm=GOSSIP_HWM
        )
        return bound

    def start(self, membership: Membership, catalog: Catalog) -> None:
        """Run the two cores, made for the address :meth:`bind` got."""
        self.membership = membership
        self.catalog = catalog
        self._loop = asyncio.get_running_loop()
        self._refresh_stats(self._loop.time())
        self._schedule()

    def join(self, addresses: Iterable[str]) -> None:
        """Sync with the nodes whose gossip ``addresses`` are given (seeds, mDNS finds).
        An address that is not a live member's is tried only as :class:`JoinAttempts`
        allows (bounded in flight, backed off after a failure)."""
        if self._closing or self._loop is None:
            return
        now = self._loop.time()
        allowed = [a for a in addresses if self._is_live(a) or self._joins.begin(a, now)]
        if allowed:
            self._run(lambda now: self.membership.join(allowed, now))

    def publish(self) -> None:
        """This node's record changed in the catalog: gossip its new version."""
        self.membership.set_versions(record=self.catalog.version)
        self._schedule()

    async def aclose(self, leave: bool = True, linger: float = 0.2) -> None:
        """Stop; with ``leave``, first tell a few peers that this node leaves (not fails)."""
        if self._closing:
            return
        if leave and self._loop is not None:
            self._run(self.membership.leave)
            pumps = [dealer.pump for dealer in self._dealers.values()]
            await asyncio.gather(*(p.flush(timeout=linger) for p in pumps))
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        for address in list(self._dealers):
            await self._close_dealer(address, linger if leave else 0.0)
        if self._router is not None:
            await self._transport.close_pump(self._router)

    # -- what the node asks ------------------------------------------------------------------

    def statistics(self) -> GossipStatistics:
        totals = list(self._closed_totals)
        pumps = [d.pump for d in self._dealers.values()]
        if self._router is not None:
            pumps.append(self._router)
        for pump in pumps:
            s = pump.statistics()
            for i, value in enumerate(
                (s.messages_in, s.messages_out, s.bytes_in, s.bytes_out, s.dropped_out)
            ):
                totals[i] += value
        messages_in, messages_out, bytes_in, bytes_out, dropped_out = totals
        return GossipStatistics(
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            dropped_out,
            self._protocol_errors,
            self._disconnects,
            self._handshake_failures,
            len(self._dealers),
            self._evicted,
            self._idled,
            self._unreachable,
            replace(self._joins.statistics),
        )

    def pull_stats_now(self, ids: Iterable[str]) -> None:
        """Ask members ``ids`` for fresh stats at once (outside the budget)."""
        assert self._loop is not None
        now = self._loop.time()
        for id in ids:
            if id == self.membership.id:
                self._refresh_stats(now)
                continue
            member = self.membership.get(id)
            if member is None or not member.live:
                continue
            address, pull = self.catalog.pull_stats_now(id, member.address, now)
            self._send(address, pull)
        self._schedule()

    # -- the loop ----------------------------------------------------------------------------

    def _run(self, step: Callable[[float], list[Send]]) -> None:
        """Run one step of membership, then whatever follows from it, then rearm."""
        if self._closing or self._loop is None:
            return
        now = self._loop.time()
        self._send_all(step(now), now)
        self._follow_up(now)
        self._schedule()

    def _tick(self) -> None:
        self._timer = None
        if self._closing or self._loop is None:
            return
        now = self._loop.time()
        if now >= self.membership.next_deadline():
            self._send_all(self.membership.tick(now), now)
        if now >= self._next_stats:
            self._refresh_stats(now)
        self._follow_up(now)
        if now >= self._joins.next_deadline():
            self._expire_joins(now)
        if now >= self._next_sweep:
            self._sweep_idle(now)
        self._schedule()

    def _follow_up(self, now: float) -> None:
        membership, catalog = self.membership, self.catalog
        for advert in membership.adverts():
            owner = membership.get(advert.id)
            catalog.advert(advert, owner.address if owner is not None else "", now)
        changes = membership.changes()
        if changes:
            if self._joins:
                for change in changes:
                    if change.member.live:
                        self._joins.confirmed(change.member.address)
            self._on_changes(changes)  # before the catalog forgets what it held of them
            for change in changes:
                if change.kind in {"failed", "left", "replaced", "forgotten"}:
                    catalog.forget(change.member.id)
                    membership.drop_record(change.member.id)
                    self._drop_dealer_later(change.member.address)
        if now >= catalog.next_deadline():
            live = [(m.id, m.address) for m in membership.members() if m.live]
            for address, pull in catalog.tick(now, live):
                self._send(address, pull)

    def _schedule(self) -> None:
        if self._closing or self._loop is None:
            return
        deadline = min(
            self.membership.next_deadline(),
            self.catalog.next_deadline(),
            self._next_stats,
            self._joins.next_deadline(),
            self._next_sweep,
        )
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._tick)

    def _refresh_stats(self, now: float) -> None:
        self._next_stats = now + STATS_REFRESH
        try:
            version = self.catalog.set_stats(self._take_stats())
        except ProtocolError as exc:  # a bug in what the node reports: keep the old ones
            log.warning("this node's stats cannot be listed: %s", exc)
            return
        self.membership.set_versions(stats=version)

    # -- sending -------------------------------------------------------------------------------

    def _send_all(self, sends: list[Send], now: float) -> None:
        if not sends:
            return
        size = 0
        for send in sends:
            size += send.size
            self._send(send.to, send.message)
        self.catalog.membership_sent(size, now)

    def _send(self, address: str, message: GossipMessage) -> None:
        try:
            frame = self._codec.encode(message)
        except ProtocolError as exc:
            log.warning("gossip to %s not sent: %s", address, exc)
            return
        assert self._loop is not None
        now = self._loop.time()
        dealer = self._dealers.pop(address, None)
        if dealer is None:
            try:
                dealer = self._dealer(address, now)
            except (TransportError, ProtocolError, ValueError) as exc:
                # The context's socket limit, or a bad address: this peer is not reached
                # this time (probes are built to survive that), nothing more.
                self._unreachable += 1
                log.debug("cannot reach %s: %s", address, exc)
                self._join_failed(address, now)
                return
        self._dealers[address] = dealer  # the most recently used now
        dealer.used = now
        dealer.pump.send([frame])

    def _dealer(self, address: str, now: float) -> _Dealer:
        endpoint, peer_key = parse_address(address)
        while len(self._dealers) >= self._max_dealers:
            self._evicted += 1
            self._drop_dealer_later(next(iter(self._dealers)))
        routing_id = self._routing_prefix + next(self._routing_ids).to_bytes(8, "big")
        pump = self._transport.dealer(
            endpoint,
            routing_id,
            lambda frames: self._on_dealer_frames(address, frames),
            send_timeout=self._send_timeout,
            peer_key=peer_key,
            on_event=lambda event: self._on_monitor_event(address, event),
            hwm=GOSSIP_HWM,
        )
        return _Dealer(pump, now)

    def _is_live(self, address: str) -> bool:
        member = self.membership.at(address)
        return member is not None and member.live

    def _join_failed(self, address: str, now: float) -> None:
        """The join attempt to ``address`` (if one is in flight) failed: back off, and
        close its DEALER unless a live member is at that address after all."""
        if self._joins.failed(address, now) and not self._is_live(address):
            self._drop_dealer_later(address)

    def _expire_joins(self, now: float) -> None:
        for address in self._joins.expired(now):
            if self._is_live(address):
                self._joins.confirmed(address)
            else:
                self._join_failed(address, now)

    def _sweep_idle(self, now: float) -> None:
        """Close the DEALERs unused for ``idle`` seconds (the oldest come first)."""
        self._next_sweep = now + min(5.0, self._idle / 4)
        while self._dealers:
            address, dealer = next(iter(self._dealers.items()))
            if now - dealer.used < self._idle:
                break
            self._idled += 1
            self._drop_dealer_later(address)

    def _drop_dealer_later(self, address: str) -> None:
        """A member at ``address`` is gone: the next message to that address goes on a
        fresh DEALER (a new process may bind that port, and must never get what was
        queued for the old one); the old one closes in the background."""
        dealer = self._dealers.pop(address, None)
        if dealer is not None and self._loop is not None:
            task = self._loop.create_task(self._close_pump(dealer.pump, 0.0))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close_dealer(self, address: str, linger: float) -> None:
        dealer = self._dealers.pop(address, None)
        if dealer is not None:
            await self._close_pump(dealer.pump, linger)

    async def _close_pump(self, pump: Pump, linger: float) -> None:
        s = pump.statistics()
        for i, value in enumerate(
            (s.messages_in, s.messages_out, s.bytes_in, s.bytes_out, s.dropped_out)
        ):
            self._closed_totals[i] += value
        await self._transport.close_pump(pump, linger)

    # -- receiving -----------------------------------------------------------------------------

    def _decode(self, frame: bytes, source: str) -> GossipMessage | None:
        try:
            return self._codec.decode(frame)
        except ProtocolError as exc:
            self._protocol_errors += 1
            log.debug("bad gossip from %s: %s", source, exc)
            return None

    def _on_router_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._protocol_errors += 1
            return
        routing_id, frame = frames
        message = self._decode(frame, routing_id.hex())
        if message is None or self._closing:
            return
        if isinstance(message, RecordPull | StatsPull):
            if (
                isinstance(message, StatsPull)
                and message.fresh
                and message.id == self.membership.id
                and self._loop is not None
            ):
                self._refresh_stats(self._loop.time())
            reply = self.catalog.answer(message)
            try:
                out = self._codec.encode(reply)
            except ProtocolError as exc:
                log.warning("catalog reply not sent: %s", exc)
                return
            assert self._router is not None
            self._router.send([routing_id, out])
        elif isinstance(message, RecordReply | StatsReply):
            self._protocol_errors += 1  # replies come back on our DEALERs, never here
        else:
            self._run(lambda now: self.membership.receive(message, now))

    def _on_dealer_frames(self, address: str, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self._protocol_errors += 1
            return
        message = self._decode(frames[0], address)
        if message is None or self._closing or self._loop is None:
            return
        if not isinstance(message, RecordReply | StatsReply):
            self._protocol_errors += 1
            return
        now = self._loop.time()
        newly = self.catalog.apply(message, now)
        for id, version in newly:
            self.membership.hold_record(id, version)
        if newly:
            self._on_records([id for id, _ in newly])
        self._follow_up(now)
        self._schedule()

    def _on_monitor_event(self, address: str, event: MonitorEvent) -> None:
        if self._closing or self._loop is None:
            return
        if event.kind.startswith("handshake_failed"):
            self._handshake_failures += 1
            if self._is_live(address):
                log.info("gossip with %s: socket handshake failed (%s)", address, event.kind)
            elif address in self._joins:  # anyone may announce any address: no log line
                self._join_failed(address, self._loop.time())
            else:
                self._drop_dealer_later(address)  # libzmq would retry it forever
            return
        if address in self._joins and event.kind in ("connect_retried", "disconnected"):
            # Refused, or accepted and then closed, before it ever answered: give up on
            # it (libzmq would reconnect forever) and back off.
            self._join_failed(address, self._loop.time())
            return
        if event.kind == "disconnected":
            self._disconnects += 1
            self._run(lambda now: self.membership.disconnected(address, now))
