"""The node runtime: binds the sockets, speaks the handshake, ties the layers together.

The runtime modules (this one, the transport, the client and the dispatcher) read
the clock and own tasks; what decides (codec, version choice, the registry,
statistics) is pure code in other modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import math
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._config import Config
from .._core.catalog import (
    Catalog,
    CatalogStatistics,
    NodeLoad,
    Record,
    Stats,
    check_record,
    method_loads,
    services_from,
)
from .._core.events import Event
from .._core.jobs import DEFAULT_RETRIES
from .._core.listing import (
    MemberInfo,
    MeshChange,
    ServiceListing,
    choose_provider,
    member_infos,
    member_to_wire,
    parse_target,
    service_listings,
    version_matches,
)
from .._core.membership import Change, Member, Membership, MemberStatistics
from .._core.stats import ServiceStatistics
from .._errors import (
    AuthenticationFailed,
    CallError,
    CallTimeout,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    MeshError,
    NoProvider,
    Overloaded,
    ProtocolError,
    ProviderLost,
    RecordTooLarge,
    RemoteError,
    SessionLost,
    TransportError,
    Unavailable,
    error_to_wire,
)
from .._io.discovery import Discovery, DiscoveryStatistics, Sighting
from .._io.process import ProcessStatistics, process_statistics
from .._io.security import Security
from .._io.transport import MonitorEvent, Pump, Subscriber, Transport
from .._rpc.context import CallContext
from .._rpc.outbound import Connection, Outgoing, RoutedStream, Stream
from .._rpc.server import Credit, Dispatcher, WorkerStatus
from .._rpc.services import EventHandlerSpec, MethodSpec, ServiceRegistry, ServiceSpec
from .._util.aio import wait_set, within
from .._util.keys import encode_key, z85_encode
from .._util.resource import AsyncResource
from .._wire.codec import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Call,
    Cancel,
    Codec,
    Error,
    Goodbye,
    Hello,
    Message,
    Reply,
    StreamEnd,
    StreamItem,
    Welcome,
    negotiate,
)
from .._wire.codec import Credit as WireCredit
from .._wire.gossip import GossipCodec
from .._wire.handshake import PeerInfo, accept_welcome, hello, parse_address, refuse_hello
from .eventbus import EventBus, EventStatistics, Subscription, event_from_wire, event_to_wire
from .gossiper import Gossiper, GossipStatistics
from .jobrunner import JobRunner, serve_job_call
from .lifecycle import Lifecycle

__all__ = ["MeshChange", "Node", "NodeStatistics", "PeerInfo"]

log = logging.getLogger("mesh.node")

#: Topics and queue groups a node's record lists at most (the first ones).
MAX_LISTED_TOPICS = 256
MAX_LISTED_GROUPS = 64
#: How long ``$mesh.members(fresh=True)`` waits at most for the stats it asked for.
FRESH_STATS_WAIT = 0.5


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of one node (frozen snapshot)."""

    id: str
    name: str
    uptime: float
    peers: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    #: Messages that could not be sent (unroutable, peer full, connection gone).
    dropped_out: int
    #: Frames from peers that were not valid mesh messages.
    protocol_errors: int
    #: Handshakes this node refused (wrong mesh, no common version, shutting down).
    handshakes_refused: int
    #: Socket-level handshake failures seen by the monitor (e.g. wrong keys).
    transport_handshake_failures: int
    #: Calls this node is handling now, and sync handlers abandoned but still running.
    calls_in_flight: int
    abandoned_workers: int
    #: Calls this node made that wait for an answer.
    calls_outstanding: int
    #: Answers that matched no call of their connection (late, forged or misrouted).
    dropped_answers: int
    #: Peers that went over a limit (calls per peer, stream credit): refused or capped.
    limit_violations: int
    #: CURVE handshakes that ZAP refused (a key not admitted).
    security_refused: int
    #: Per service (offered by this node) and method.
    services: Mapping[str, ServiceStatistics]
    process: ProcessStatistics
    #: The gossip socket, the membership and catalog cores (forged and implausible
    #: gossip is counted there), and zeroconf; None where the node does not run it.
    gossip: GossipStatistics | None = None
    membership: MemberStatistics | None = None
    catalog: CatalogStatistics | None = None
    discovery: DiscoveryStatistics | None = None
    #: Events published, delivered and dropped, per topic and in total.
    events: EventStatistics | None = None
    #: ZeroMQ sockets open now (a monitored one counts three), how many the node's
    #: context may hold (``limits.max_sockets`` within the fd limit), and how many
    #: could not be opened at that limit (each a peer not reached at that moment).
    sockets: int = 0
    max_sockets: int = 0
    socket_failures: int = 0
    #: Callers' sessions (a HELLO each) held now; those ended after ``session_idle``
    #: with nothing from the caller, and those ended because the caller's connection
    #: was gone while calls of its were in flight (cancelled then).
    sessions: int = 0
    sessions_expired: int = 0
    callers_lost: int = 0


@dataclass(slots=True, eq=False)
class _Session:
    """A caller that said HELLO on the ROUTER: who it is, and when it was last heard."""

    peer: PeerInfo
    #: The caller check (``Node._checks``) during which its last message came.
    seen: int
    #: Checks in a row that found its connection gone (while calls of its ran).
    gone: int = 0


@dataclass(slots=True, eq=False)
class _Serving:
    """A call this node is handling for a peer."""

    task: asyncio.Task[None]
    context: CallContext
    credit: Credit | None
    #: The caller sent CANCEL (or left): it wants no answer.
    abandoned: bool = False


class Node(AsyncResource):
    """A member of a mesh: ``async with Node(name="a") as node: ...``.

    Built from a :class:`Config` (by default ``Config.from_env()``) with keyword
    overrides, e.g. ``Node(name="a", host="127.0.0.1", port=0)``. Starting binds a
    ROUTER (calls) and a PUB (events) socket; port 0 picks a free port.
    """

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        base = config if config is not None else Config.from_env()
        self.config: Config = base.replace(**overrides) if overrides else base
        #: Random per start of a Node: a restarted process is a new node.
        self.id: str = secrets.token_hex(16)
        self._id_bytes = bytes.fromhex(self.id)
        self._codec = Codec(self.config.limits)
        self._security = (
            Security(secret_file=self.config.secret_file, keys_dir=self.config.keys_dir)
            if self.config.secret_file is not None or self.config.keys_dir is not None
            else None
        )
        self._transport: Transport | None = None
        self._router: Pump | None = None
        self._pub: Pump | None = None
        self._port = 0
        self._pub_port = 0
        # The bound and the advertised host, looked up once at start (Config.bind_host).
        self._host = ""
        self._advertised = ""
        self._started_at = 0.0
        self._accepting = False
        self._closing = False  # refusing new work, finishing what runs
        self._closed = False  # sockets closed: nothing works any more
        self._refs = itertools.count(1)
        self._nonces = itertools.count(1)
        # Handshake state: peers that said HELLO to our ROUTER, and our DEALERs.
        self._sessions: dict[bytes, _Session] = {}
        # Caller checks so far (_check_callers); sessions ended by them.
        self._checks = 0
        self._sessions_expired = 0
        self._callers_lost = 0
        self._connections: dict[str, Connection] = {}
        # HELLOs waiting for an answer: ref -> (the connection it went out on, its future).
        self._pending: dict[int, tuple[Connection, asyncio.Future[Message]]] = {}
        self._services = ServiceRegistry()
        self._dispatcher = Dispatcher(
            self._services, self.config.workers, self.config.limits.caller_share, self.id
        )
        self._outgoing = Outgoing(self._codec)
        # Calls this node is handling for peers: (routing id, call id) -> its task.
        self._serving: dict[tuple[bytes, int], _Serving] = {}
        self._calls_by_peer: dict[bytes, int] = {}
        self._limit_violations = 0
        self._protocol_errors = 0
        self._handshakes_refused = 0
        self._transport_handshake_failures = 0
        self._stop: asyncio.Event | None = None
        # The mesh: gossip (membership and catalog) and discovery; a mesh.Client's node
        # does not join (``_joins`` False) and routes on a view pulled from one node.
        self._joins = True
        self._gossiper: Gossiper | None = None
        self._gossip_port = 0
        self._discovery: Discovery | None = None
        self._remote_view: list[MemberInfo] = []
        # Who offers each service (records and statuses, no stats), for routing: built
        # when first needed after a change, so a call costs what the providers cost, not
        # what the mesh does (1,000 members listed anew cost ~2 ms a call).
        self._providers: dict[str, list[MemberInfo]] | None = None
        # Members whose catalog record this node has held: only they are listed, so a
        # member that exists only in (forged) gossip, with no record anywhere, never is.
        self._listed: set[str] = {self.id}
        self._watchers: set[asyncio.Queue[MeshChange | None]] = set()
        self._changed: asyncio.Event | None = None
        self._connecting: dict[str, asyncio.Future[PeerInfo]] = {}
        self._routing: dict[str, int] = {}  # calls choosing a provider while it connects
        # When $mesh.members(fresh) last asked for stats (wall clock), and whom.
        self._fresh_pulled_at = 0.0
        self._fresh_pulled: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._events = EventBus(
            _EventHost(self),
            self.id,
            self._codec,
            history=self.config.limits.event_history,
            maxsize=self.config.limits.max_subscription_queue,
            history_bytes=self.config.limits.event_history_bytes,
            topics=self.config.limits.event_topics,
            arrivals=self.config.limits.event_arrivals,
        )
        self._republish_scheduled = False
        # Subscriptions of services' @on_event handlers, by service name.
        self._event_handlers: dict[str, list[Subscription]] = {}
        self._event_handler_errors = 0
        # Services with lifecycle hooks or dependencies: started, restarted, waiting.
        self._lifecycle = Lifecycle(
            _LifecycleHost(self), self._services, self.config.timings.supervision
        )
        # Durable queues (docs/architecture.md): with config.jobs_db, opened at start.
        self._jobs: JobRunner | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The human label of this node."""
        return self.config.name

    @property
    def mesh(self) -> str:
        """The name of the mesh this node belongs to."""
        return self.config.mesh

    @property
    def address(self) -> str:
        """``tcp://host:port`` of the RPC socket (after start); with per-node keys
        ``tcp://host:port#KEY``, the form callers need."""
        self._require_started()
        address = f"tcp://{self._advertised}:{self._port}"
        if self._security is not None and self._security.needs_peer_key:
            address += "#" + encode_key(self._security.server_key)
        return address

    @property
    def public_key(self) -> bytes | None:
        """This node's CURVE public key (raw 32 bytes) with per-node keys, else None."""
        if self._security is None or not self._security.needs_peer_key:
            return None
        return self._security.public_key

    @property
    def gossip_address(self) -> str:
        """``tcp://host:port[#KEY]`` of the gossip socket (after start; empty for a node
        that does not join, such as a :class:`mesh.Client`'s)."""
        self._require_started()
        if not self._gossip_port:
            return ""
        address = f"tcp://{self._advertised}:{self._gossip_port}"
        if self._security is not None and self._security.needs_peer_key:
            address += "#" + encode_key(self._security.server_key)
        return address

    @property
    def pub_address(self) -> str:
        """``tcp://host:port`` of the event socket (after start)."""
        self._require_started()
        return f"tcp://{self._advertised}:{self._pub_port}"

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        """Peers that completed a handshake with this node, by node id."""
        known: dict[str, PeerInfo] = {s.peer.id: s.peer for s in self._sessions.values()}
        known.update({c.peer.id: c.peer for c in self._connections.values() if c.peer})
        return MappingProxyType(known)

    def statistics(self) -> NodeStatistics:
        """A snapshot of this node's counters."""
        t = self._transport.statistics() if self._transport else None
        gossiper = self._gossiper
        return NodeStatistics(
            id=self.id,
            name=self.name,
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
            peers=len(self.peers),
            messages_in=t.messages_in if t else 0,
            messages_out=t.messages_out if t else 0,
            bytes_in=t.bytes_in if t else 0,
            bytes_out=t.bytes_out if t else 0,
            dropped_out=t.dropped_out if t else 0,
            protocol_errors=self._protocol_errors,
            handshakes_refused=self._handshakes_refused,
            transport_handshake_failures=self._transport_handshake_failures,
            calls_in_flight=len(self._serving),
            abandoned_workers=self._dispatcher.abandoned,
            calls_outstanding=len(self._outgoing),
            dropped_answers=self._outgoing.dropped_answers,
            limit_violations=self._limit_violations,
            security_refused=self._security.refused if self._security else 0,
            services=MappingProxyType(self._dispatcher.statistics()),
            process=process_statistics(),
            gossip=gossiper.statistics() if gossiper else None,
            membership=copy.copy(gossiper.membership.statistics) if gossiper else None,
            catalog=copy.copy(gossiper.catalog.statistics) if gossiper else None,
            discovery=self._discovery.statistics if self._discovery else None,
            events=self._events.statistics(),
            sockets=self._transport.sockets if self._transport else 0,
            max_sockets=self._transport.max_sockets if self._transport else 0,
            socket_failures=self._transport.socket_failures if self._transport else 0,
            sessions=len(self._sessions),
            sessions_expired=self._sessions_expired,
            callers_lost=self._callers_lost,
        )

    def worker_status(self) -> WorkerStatus:
        """What this node's workers do now: the pool's threads (busy ones with the call
        they run, since when, and whether its caller gave up) and the handler tasks."""
        return self._dispatcher.worker_status()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets and start serving."""
        if self._transport is not None:
            raise MeshError("node already started")
        # Fail early on a wildcard host without advertise, or an unknown interface.
        self._host = self.config.bind_host
        self._advertised = self.config.advertised_host
        self._transport = Transport(self.config.limits, self._security)
        try:
            self._router, self._port = self._transport.router(
                self._host,
                self.config.port,
                self._on_router_frames,
                on_event=self._on_router_event,
                keep_alive=True,
            )
            self._pub, self._pub_port = self._transport.publisher(self._host, self.config.pub_port)
        except BaseException:
            await self._transport.aclose()
            self._transport = None
            raise
        self._started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._accepting = True
        self._spawn(self._check_callers(), "check callers")
        for spec in self._services:
            self._start_event_handlers(spec)
        if self.config.jobs_db is not None and self._joins:
            try:
                self._jobs = JobRunner(self)
                await self._jobs.open()
            except BaseException:
                self._jobs = None
                await self.aclose(grace=0)
                raise
        if self._joins:
            try:
                await self._join_mesh()
            except BaseException:
                await self.aclose(grace=0)
                raise
        self._lifecycle.begin()
        log.debug("node %s (%s) serving at %s", self.name, self.id, self.address)

    async def _join_mesh(self) -> None:
        """Start gossip and discovery, and join through the seeds."""
        assert self._transport is not None
        limits = self.config.limits
        # Gossip DEALERs (three sockets each) take at most half the context's sockets,
        # join attempts at most half of those: RPC connections keep the rest.
        max_dealers = max(4, min(limits.max_gossip_peers, self._transport.max_sockets // 6))
        gossiper = Gossiper(
            self._transport,
            GossipCodec(limits),
            on_changes=self._on_changes,
            on_records=self._on_records,
            take_stats=self._take_stats,
            # How long a message may wait for a new connection to come up (then dropped).
            send_timeout=max(0.5, self.config.timings.membership.probe_interval),
            max_dealers=max_dealers,
            idle=float(limits.gossip_idle),
            max_pending_joins=max(1, min(limits.max_pending_joins, max_dealers // 2)),
        )
        self._gossip_port = gossiper.bind(self._host, self.config.gossip_port)
        self._gossiper = gossiper
        now = asyncio.get_running_loop().time()
        settings = self.config.timings.membership
        rng = random.Random(secrets.randbits(64))
        me = Member(self.id, self.name, self.gossip_address)
        catalog = Catalog(
            self.listing(),
            settings,
            rng,
            now,
            max_record_size=self.config.limits.max_record_size,
            # every member's stats are pulled once per 10 probe periods (lan: 10 s)
            stats_interval=max(1.0, 10 * settings.probe_interval),
        )
        membership = Membership(me, settings, rng, now)
        gossiper.start(membership, catalog)
        gossiper.publish()
        if self.config.seeds:
            self._spawn(self._join_seeds(), "join seeds")
        if self.config.discovery:
            self._discovery = Discovery(
                self._sighting(),
                self.config.discovery_interfaces,
                self._on_sighting,
                trusted=self._trusted_key(),
            )
            await self._discovery.start()

    def _trusted_key(self) -> Callable[[bytes], bool] | None:
        """Which keys discovery may join: with per-node keys, those this node admits."""
        if self._security is None or not self._security.needs_peer_key:
            return None
        return self._security.trusts

    def _sighting(self) -> Sighting:
        return Sighting(
            node_id=self.id,
            name=self.name,
            mesh=self.mesh,
            protocol=(PROTOCOL_MIN, PROTOCOL_MAX),
            rpc=self.address.partition("#")[0],
            gossip=self.gossip_address.partition("#")[0],
            pub=self.pub_address,
            public_key=self.listing().public_key,
        )

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"{self.name}: {name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self, grace: float | None = None) -> None:
        """Leave: refuse new work, let work in flight finish within ``grace`` seconds
        (default ``config.timings.grace_period``), say goodbye to peers, close sockets."""
        if self._transport is None or self._closing:
            return
        self._closing = True
        self._accepting = False
        grace = self.config.timings.grace_period if grace is None else grace
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)
        if self._discovery is not None:
            await self._discovery.aclose()
        if self._gossiper is not None:  # say "left" first: peers stop routing calls here
            await self._gossiper.aclose(leave=True)
        await self._events.aclose()
        for queue in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        serving = [s.task for s in self._serving.values()]
        if serving:
            _, late = await asyncio.wait(serving, timeout=grace)
            for task in late:  # past the grace period: callers get a retryable Unavailable
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._jobs is not None:  # jobs running now stay in the inbox for the next start
            await self._jobs.aclose()
        await self._lifecycle.aclose()  # stop() hooks, once the calls in flight are done
        self._closed = True  # from here on, calls (even from handlers) are refused
        told = self._say_goodbye()
        pumps = [c.pump for c in self._connections.values() if c.peer is not None]
        if self._router is not None:
            pumps.append(self._router)
        linger = min(grace, 0.5)
        await asyncio.gather(*(p.flush(timeout=linger) for p in pumps))
        if told:
            # A DEALER with IMMEDIATE=1 discards what it has not read when its connection
            # drops, so give peers a moment to read the GOODBYE before the sockets close.
            await asyncio.sleep(min(linger, 0.05))
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("node closed"))
        self._pending.clear()
        self._outgoing.fail_all(f"node {self.name!r} closed")
        await self._dispatcher.aclose()
        await self._transport.aclose(linger)
        self._connections.clear()
        self._sessions.clear()
        if self._stop is not None:
            self._stop.set()

    async def serve_forever(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Serve until one of ``signals`` arrives (or the node is closed), then leave
        gracefully. For node programs: ``async with Node(...) as n: await n.serve_forever()``."""
        self._require_started()
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        installed = []
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop.set)
                installed.append(sig)
        try:
            await self._stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        await self.aclose()

    # -- services and calls -----------------------------------------------------------------

    def add_service(
        self, obj: object, *, name: str | None = None, version: str | None = None
    ) -> ServiceSpec:
        """Offer a ``@service`` instance, or a function as ``name="service.method"``.

        Raises :class:`RecordTooLarge` (and offers nothing) if this node's listing would
        pass ``config.limits.max_record_size``."""
        spec = self._services.add(obj, name=name, version=version)
        self._lifecycle.add(spec)
        try:
            check_record(self.listing(), self.config.limits.max_record_size)
        except RecordTooLarge:
            self._lifecycle.remove(spec.name)
            self._services.remove(spec.name)
            raise
        self._republish()
        if self._transport is not None:
            self._start_event_handlers(spec)
        return spec

    def _start_event_handlers(self, spec: ServiceSpec) -> None:
        """Subscribe each ``@on_event`` handler of ``spec`` and run it per event."""
        for handler in spec.events:
            sub = self._events.subscribe(
                handler.prefix, group=handler.group, history=handler.history
            )
            self._event_handlers.setdefault(spec.name, []).append(sub)
            self._spawn(self._run_event_handler(handler, sub), f"{spec.name}.{handler.name}")

    async def _run_event_handler(self, handler: EventHandlerSpec, sub: Subscription) -> None:
        async with sub:
            async for event in sub:
                try:
                    if handler.is_coroutine:
                        await handler.handler(event)
                    else:
                        await asyncio.to_thread(handler.handler, event)
                except Exception:
                    self._event_handler_errors += 1
                    log.exception(
                        "%s.%s failed on event %s", handler.service, handler.name, event.topic
                    )

    def _republish(self) -> None:
        """This node's listing changed: a new catalog version, gossiped."""
        self._republish_scheduled = False
        if self._gossiper is not None and not self._closing:
            self._gossiper.catalog.publish(self.listing())
            self._gossiper.publish()
            self._listing_changed()
            me = self._gossiper.membership.get(self.id)
            if me is not None:
                self._events.member_changed(self._info_of(me))
            self._notify()

    def _republish_soon(self) -> None:
        """Topics or queue groups changed: republish once, after this loop turn."""
        if not self._republish_scheduled and self._gossiper is not None:
            self._republish_scheduled = True
            asyncio.get_running_loop().call_soon(self._republish)

    # -- events -----------------------------------------------------------------------------

    async def publish(self, topic: str, data: Any = None) -> Event:
        """Publish ``data`` on ``topic`` to every subscriber in the mesh whose prefix it
        matches (at-most-once), and to one member of each matching queue group
        (acknowledged, redelivered if that member fails). Returns the event sent, with
        its sequence number. Topics under ``$mesh.`` are reserved (:class:`InvalidTopic`)."""
        if self._pub is None or self._closed:
            self._require_started()  # raises the error that says why
        return self._events.publish(topic, data)

    def subscribe(
        self,
        prefix: str = "",
        *,
        group: str | None = None,
        history: int = 0,
        maxsize: int | None = None,
    ) -> Subscription:
        """Events whose topic starts with ``prefix``, from every member and this node:
        ``async for event in node.subscribe("orders."):``. Live from the moment it
        returns; ``$mesh.*`` system events included where the prefix matches them.

        ``group``: a queue group; each event goes to one live member of the group.
        ``history``: first the last ``history`` events of each matching topic from each
        publisher, then live ones, without gaps or repeats. ``maxsize``: events held
        unread before more are dropped (default ``limits.max_subscription_queue``)."""
        self._require_started()
        return self._events.subscribe(prefix, group=group, history=history, maxsize=maxsize)

    def listing(self) -> Record:
        """This node's catalog record as peers will see it: who it is, where (once
        started), its services with their methods, signatures and docstrings."""
        addresses = {}
        if self._router is not None:
            addresses = {"rpc": self.address, "pub": self.pub_address}
            if self._gossip_port:
                addresses["gossip"] = self.gossip_address
        key = self.public_key
        return Record(
            self.id,
            self.name,
            self.mesh,
            addresses=addresses,
            protocol=(PROTOCOL_MIN, PROTOCOL_MAX),
            tags=dict(self.config.tags),
            public_key=None if key is None else z85_encode(key),
            services=services_from(self._services, statuses=self._lifecycle.statuses()),
            topics=tuple(self._events.topics()[:MAX_LISTED_TOPICS]),
            groups=tuple(self._events.groups()[:MAX_LISTED_GROUPS]),
        )

    def remove_service(self, name: str) -> None:
        """Stop offering service ``name`` (calls already running finish)."""
        self._services.remove(name)
        self._lifecycle.remove(name)
        self._dispatcher.forget(name)
        for sub in self._event_handlers.pop(name, ()):
            sub.close()
        self._republish()

    @property
    def local_services(self) -> Mapping[str, ServiceSpec]:
        """The services this node offers, by name."""
        return MappingProxyType({s.name: s for s in self._services})

    # -- the mesh as this node sees it ----------------------------------------------------

    def members(self) -> list[MemberInfo]:
        """Every member this node knows (itself included), with status, record and stats;
        dead and left ones until they are purged. Sorted by name."""
        self._require_started()
        return self._member_view(with_stats=True)

    def _member_view(self, *, with_stats: bool = False, live: bool = False) -> list[MemberInfo]:
        """The listed members (only those alive or suspect if ``live``), their stats
        only if ``with_stats``: from membership and the catalog, or for a node that does
        not join, the members its client last pulled."""
        if self._gossiper is None:
            return list(self._remote_view)
        membership, catalog = self._gossiper.membership, self._gossiper.catalog
        listed = [m for m in membership.members() if m.id in self._listed and (not live or m.live)]
        stats = catalog.stats if with_stats else _no_stats
        return member_infos(listed, catalog.record, stats, membership.since)

    def services(self) -> dict[str, ServiceListing]:
        """Every service offered by a live member, by name: its methods and providers
        (node, version, state, load)."""
        return service_listings(self.members())

    def _providers_of(self, service: str) -> list[MemberInfo]:
        """The listed members whose record offers ``service`` (any status or state)."""
        if self._providers is None:
            index: dict[str, list[MemberInfo]] = {}
            for info in self._member_view():
                for offered in () if info.record is None else info.record.services:
                    index.setdefault(offered.name, []).append(info)
            self._providers = index
        return self._providers.get(service, [])

    def _listing_changed(self) -> None:
        """Members, their statuses or records changed: routing looks again, and so do
        supervised services at their dependencies."""
        self._providers = None
        self._lifecycle.changed()

    async def wait_for_service(self, service: str, *, timeout: float | None = None) -> None:
        """Wait until an alive member (this one included) offers ``service`` (``"calc"``
        or ``"calc@1.2"``) in a state that takes calls (``up``, or ``degraded``: not a
        service still ``waiting`` for its dependencies, ``restarting`` or ``failed``);
        raises :class:`NoProvider` after ``timeout`` seconds (default
        ``config.timings.call_timeout``)."""
        self._require_started()
        name, _, constraint = service.partition("@")
        parse_target(f"{service}.x")  # the same rules as a call's target
        timeout = self.config.timings.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if (
                self._serves_here(name, constraint, None)
                or choose_provider(self._providers_of(name), name, constraint, lambda _: 0)
                is not None
            ):
                return
            assert self._changed is not None
            changed = self._changed
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoProvider(
                    f"no provider of {service!r} appeared within {timeout:g} s", service=name
                )
            await wait_set(changed, left)

    async def watch(self) -> AsyncIterator[MeshChange]:
        """Membership and service changes as they happen: ``async for change in
        node.watch()``. Ends when the node closes. A watcher that falls 1,000 changes
        behind loses the oldest."""
        self._require_started()
        queue: asyncio.Queue[MeshChange | None] = asyncio.Queue(maxsize=1_000)
        self._watchers.add(queue)
        try:
            while (change := await queue.get()) is not None:
                yield change
        finally:
            self._watchers.discard(queue)

    def _notify(self, changes: Iterable[MeshChange] = ()) -> None:
        for change in changes:
            for queue in self._watchers:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(change)
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _on_changes(self, changes: list[Change]) -> None:
        self._listing_changed()
        events = []
        for change in changes:
            member = change.member
            # A member that left finishes its calls in flight (it said GOODBYE when done).
            if change.kind in {"suspect", "failed", "replaced", "forgotten"}:
                self._provider_lost(member.id, change.kind)
            if change.kind in {"failed", "replaced", "forgotten"}:
                self._caller_gone(member.id)
            if change.kind in {"failed", "replaced"} and self._jobs is not None:
                self._jobs.member_lost(member.id)
            # Only listed members are watched ("joined" comes with the first record); a
            # new record version heard of is "updated" once it is held (_on_records).
            if change.kind != "updated" and member.id in self._listed:
                info = self._info_of(member)
                events.append(MeshChange(change.kind, info, change.at))
                self._events.member_changed(info, gone=change.kind in {"forgotten", "replaced"})
            if change.kind in {"forgotten", "replaced"}:
                self._listed.discard(member.id)
        self._notify(events)

    def _info_of(self, member: Member) -> MemberInfo:
        """``member`` listed, even when the core no longer holds it (replaced, forgotten):
        the catalog still holds its record until after the changes are handled."""
        assert self._gossiper is not None
        catalog, membership = self._gossiper.catalog, self._gossiper.membership
        return member_infos([member], catalog.record, catalog.stats, membership.since)[0]

    def _on_records(self, ids: list[str]) -> None:
        """Records newly held: a member's first makes it listed ("joined"), a later one
        is "updated". Each is looked up by id, not by listing the mesh."""
        assert self._gossiper is not None
        self._listing_changed()
        events = []
        for id in ids:
            member = self._gossiper.membership.get(id)
            if member is None:
                continue
            kind = "updated" if id in self._listed else "joined"
            self._listed.add(id)
            info = self._info_of(member)
            events.append(MeshChange(kind, info, time.monotonic()))
            self._events.member_changed(info)
        self._notify(events)

    def _provider_lost(self, member_id: str, why: str) -> None:
        """Member ``member_id`` is suspect, dead or replaced: its calls fail now."""
        words = {"failed": "dead", "replaced": "replaced by a new process", "forgotten": "gone"}
        word = words.get(why, why)
        for connection in list(self._connections.values()):
            peer = connection.peer
            if peer is None or peer.id != member_id:
                continue
            self._outgoing.fail_connection(
                connection, f"provider {peer.name!r} is {word}", ProviderLost
            )
            if why != "suspect":
                self._drop_connection(connection)  # a fresh DEALER if it comes back

    def _caller_gone(self, member_id: str) -> None:
        """Member ``member_id`` is dead or replaced (a GOODBYE may never come): its
        sessions end and the calls it made here are abandoned, as after a GOODBYE."""
        for routing_id, session in list(self._sessions.items()):
            if session.peer.id == member_id:
                self._end_session(routing_id)

    def _end_session(self, routing_id: bytes) -> None:
        """Forget a caller's session and cancel the calls it has running here (their
        slots are freed; nobody is left to answer). Its next call, if any comes, is
        refused with SessionLost, and the caller shakes hands again."""
        del self._sessions[routing_id]
        if routing_id in self._calls_by_peer:
            for key in [k for k in self._serving if k[0] == routing_id]:
                self._abandon(key)

    async def _check_callers(self) -> None:
        """Every ``timings.caller_check``: end the sessions of callers gone without a
        GOODBYE. A ROUTER does not say which peer left, so:
        - a session with nothing from its caller for ``timings.session_idle`` and no
          call in flight ends (the caller shakes hands again on its next call);
        - a caller with calls in flight that sent nothing since the last check is
          probed: an unsolicited WELCOME (ref 0, which callers ignore) sent with
          ROUTER_MANDATORY fails at once when libzmq holds no connection for its
          routing id any more (a crash resets it; a paused or cut-off caller's ZMTP
          heartbeats stop and libzmq drops it after HEARTBEAT_TTL). Gone at two checks
          in a row (a reconnecting DEALER gets one interval), its session ends and its
          calls are cancelled.
        ZMTP heartbeats never reach the application, so they keep no session alive:
        only messages do."""
        timings = self.config.timings
        interval = timings.caller_check
        idle_checks = max(1, math.ceil(timings.session_idle / interval))
        while not self._closing:
            await asyncio.sleep(interval)
            self._checks += 1
            if not self._sessions or self._router is None:
                continue
            checks = self._checks
            probe: list[bytes] | None = None
            for routing_id, session in list(self._sessions.items()):
                silent = checks - session.seen  # 1: nothing since the last check
                if routing_id not in self._calls_by_peer:
                    session.gone = 0
                    if silent > idle_checks:
                        self._sessions_expired += 1
                        del self._sessions[routing_id]
                    continue
                if silent <= 1:
                    session.gone = 0
                    continue
                if probe is None:
                    probe = [b"", self._codec.encode(self._welcome(0, 1))]
                probe[0] = routing_id
                if self._router.probe(probe):
                    session.gone = 0
                    continue
                session.gone += 1
                if session.gone >= 2:
                    self._callers_lost += 1
                    log.info(
                        "caller %s (%s) is gone: its session ends, %d calls cancelled",
                        session.peer.name[:64],
                        session.peer.id[:64],
                        self._calls_by_peer.get(routing_id, 0),
                    )
                    self._end_session(routing_id)

    def _take_stats(self) -> Stats:
        t = self._transport.statistics() if self._transport else None
        p = process_statistics()
        return Stats(
            self.id,
            1,
            time.time(),
            NodeLoad(
                uptime=time.monotonic() - self._started_at,
                cpu=max(0.0, p.cpu_seconds),
                rss=p.rss_bytes if p.rss_bytes >= 0 else -1,
                messages_in=t.messages_in if t else 0,
                messages_out=t.messages_out if t else 0,
                bytes_in=t.bytes_in if t else 0,
                bytes_out=t.bytes_out if t else 0,
            ),
            method_loads(self._dispatcher.statistics()),
        )

    def _on_sighting(self, sighting: Sighting) -> None:
        """zeroconf found a node: join through it unless it is a live member already."""
        if self._gossiper is None or self._closing:
            return
        member = self._gossiper.membership.get(sighting.node_id)
        if member is None or not member.live:
            address = sighting.gossip
            if sighting.public_key and self._security and self._security.needs_peer_key:
                address += "#" + sighting.public_key
            self._gossiper.join([address])

    async def _join_seeds(self) -> None:
        """Join through the seeds (RPC addresses); again whenever this node is alone
        (a seed that was down at start, a healed partition across subnets)."""
        assert self._gossiper is not None
        settings = self.config.timings.membership
        delay = settings.probe_interval
        while not self._closing:
            if self._gossiper.membership.live_count() <= 1:
                for seed in self.config.seeds:
                    if seed != self.address:
                        await self._join_through(seed)
                delay = min(2 * delay, settings.push_pull_interval)
            else:
                delay = settings.push_pull_interval
            await asyncio.sleep(delay)

    async def _join_through(self, seed: str) -> None:
        assert self._gossiper is not None
        timeout = self.config.timings.connect_timeout
        try:
            connection = await self._connection_to(seed, time.monotonic() + timeout)
            deadline, trace_id = Outgoing.inherit(timeout)
            wire = await self._outgoing.call(
                connection, "$mesh.listing", [], {}, deadline, trace_id
            )
            record = Record.from_wire(wire, "seed listing")
        except MeshError as exc:
            log.info("node %s: cannot join through seed %s: %s", self.name, seed, exc)
            return
        gossip = record.addresses.get("gossip")
        if gossip and record.id != self.id:
            self._gossiper.join([gossip])

    # -- calls ------------------------------------------------------------------------------

    async def call(
        self,
        target: str,
        *args: Any,
        timeout: float | None = None,
        node: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``"service.method"`` with ``args``/``kwargs`` and return its result.

        ``"calc@1.add"`` asks for any 1.x.y version, ``"calc@1.2.add"`` for >= 1.2.0 and
        < 2; ``node`` (a name or id) pins the call to one node. Local services are called
        in-process; otherwise the alive provider with the fewest calls outstanding (never
        a suspect one). If the provider becomes suspect or dies meanwhile the call fails
        at once with :class:`ProviderLost`, and an idempotent method is retried on another
        provider within the deadline. ``timeout`` (default ``config.timings.call_timeout``)
        travels with the call as its deadline; inside a handler, calls inherit the
        handler's deadline and trace id. Raises :class:`NoProvider`,
        :class:`UnknownMethod`, :class:`CallTimeout`, :class:`RemoteError` (the handler
        raised), :class:`Overloaded` or :class:`ProviderLost`.
        """
        self._require_started()
        deadline, trace_id = Outgoing.inherit(
            self.config.timings.call_timeout if timeout is None else timeout
        )
        service, constraint, method = parse_target(target)
        plain = f"{service}.{method}"
        if self._serves_here(service, constraint, node):
            return await self._call_local(plain, args, kwargs, deadline, trace_id)
        tried: set[str] = set()
        attempt = 1
        failed: Unavailable | None = None
        sent_again = False
        while True:
            try:
                connection, provider = await self._route(service, constraint, node, tried, deadline)
            except NoProvider:
                if failed is not None:  # no other provider: what the call itself met
                    raise failed from None
                raise
            try:
                return await self._outgoing.call(
                    connection, plain, args, kwargs, deadline, trace_id, attempt
                )
            except SessionLost:
                if sent_again:
                    raise
                # Refused before it ran: the same call once more, over a fresh connection.
                sent_again = True
                await self._connection_to(connection.address, deadline)
            except Unavailable as exc:
                if (
                    provider is None
                    or not _idempotent(provider, service, method)
                    or time.monotonic() >= deadline
                ):
                    raise
                tried.add(provider.id)
                attempt += 1
                failed = exc

    async def enqueue(
        self,
        target: str,
        *args: Any,
        retries: Iterable[float] | None = None,
        key: str | None = None,
        wait_handed_off: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Put a job for ``"service.method"`` in this node's durable outbox; returns its
        id once it is stored (committed). A provider then stores it in its inbox (the
        hand-off) and runs it by the ``retries`` schedule (seconds before each further
        attempt, default ``(1, 10, 60)``); after the last failed attempt, or at once when
        the handler raises :class:`Reject`, it goes to the dead letters and
        ``$mesh.job.dead`` is emitted. ``key``: an idempotency key; a job with a key
        seen within the window runs once. ``wait_handed_off``: also wait (up to
        ``timeout``, default ``config.timings.call_timeout``) for the hand-off, so a
        short-lived program may exit with the job safe. Needs ``config.jobs_db``."""
        self._require_started()
        if self._jobs is None:
            raise ConfigError(
                "jobs_db: set a job database (MESH_JOBS_DB) to enqueue jobs on this node"
            )
        job_id = await self._jobs.enqueue(
            target, list(args), kwargs, DEFAULT_RETRIES if retries is None else retries, key
        )
        if wait_handed_off:
            await self.wait_handed_off(job_id, timeout=timeout)
        return job_id

    async def wait_handed_off(self, job_id: str, *, timeout: float | None = None) -> None:
        """Wait until a provider has stored job ``job_id`` in its inbox (or finished it);
        :class:`CallTimeout` after ``timeout`` (default ``config.timings.call_timeout``)."""
        if self._jobs is None:
            raise ConfigError("jobs_db: this node has no job database")
        timeout = self.config.timings.call_timeout if timeout is None else timeout
        try:
            await self._jobs.wait_handed_off(job_id, timeout)
        except TimeoutError:
            raise CallTimeout(
                f"job {job_id}: no provider took it within {timeout:g} s (it stays in the "
                "outbox and is handed off when one can take it)"
            ) from None

    def jobs(self) -> dict[str, Any]:
        """This node's outbox, inbox and dead letters (what ``meshctl jobs`` lists)."""
        if self._jobs is None:
            return {
                "node": self.name,
                "id": self.id,
                "store": None,
                "outbox": [],
                "inbox": [],
                "dead": [],
            }
        return self._jobs.listing()

    def stream(
        self,
        target: str,
        *args: Any,
        timeout: float | None = None,
        node: str | None = None,
        **kwargs: Any,
    ) -> Stream | RoutedStream:
        """Call a streaming method: ``async with node.stream(...) as items: async for ...``.

        Items flow with credit (a slow consumer pauses the producer); ``timeout``
        (default ``config.timings.call_timeout``) bounds the wait for each item.
        Leaving the block stops the producer. Providers are chosen as for :meth:`call`.
        """
        self._require_started()
        timeout = self.config.timings.call_timeout if timeout is None else timeout
        _, trace_id = Outgoing.inherit(timeout)
        service, constraint, method = parse_target(target)
        plain = f"{service}.{method}"
        if self._serves_here(service, constraint, node):
            return self._stream_local(plain, args, kwargs, timeout, trace_id)

        async def open_stream() -> Stream:
            deadline = time.monotonic() + timeout
            connection, _ = await self._route(service, constraint, node, set(), deadline)
            return self._outgoing.stream(connection, plain, args, kwargs, timeout, trace_id)

        return RoutedStream(open_stream)

    def proxy(self, service: str, *, timeout: float | None = None) -> Proxy:
        """An object whose attributes call the methods of ``service``:
        ``await node.proxy("calc").add(1, 2)``; ``node.proxy("calc").count.stream(10)``."""
        return Proxy(self, service, timeout)

    def _serves_here(self, service: str, constraint: str, node: str | None) -> bool:
        spec = self._services.get(service)
        if spec is None or (node is not None and node not in (self.id, self.name)):
            return False
        # A supervised service that takes no calls now (waiting, restarting, failed):
        # the call goes to another provider, if there is one.
        blocked = self._lifecycle.blocked
        return version_matches(constraint, spec.version) and service not in blocked

    async def _route(
        self,
        service: str,
        constraint: str,
        node: str | None,
        tried: set[str],
        deadline: float,
    ) -> tuple[Connection, MemberInfo | None]:
        """A connection to a provider of ``service``, and the provider as listed (None:
        a peer connected by hand)."""
        while True:
            info = choose_provider(
                self._providers_of(service),
                service,
                constraint,
                self._outstanding,
                exclude=tried,
                pinned=node,
            )
            if info is None or info.record is None or info.id == self.id:
                break
            connection = self._connections.get(info.address)
            if connection is not None and connection.peer is not None:
                return connection, info  # connected: the usual case, nothing to wait for
            # Counted as outstanding while it connects, so a burst of calls spreads.
            self._routing[info.id] = self._routing.get(info.id, 0) + 1
            try:
                connection = await self._connection_to(info.address, deadline)
            except ConnectError as exc:  # nothing was sent: any method may go elsewhere
                log.info("node %s: provider %s unreachable: %s", self.name, info.name, exc)
                tried.add(info.id)
                continue
            finally:
                left = self._routing.pop(info.id) - 1
                if left:
                    self._routing[info.id] = left
            return connection, info
        if node is None and not constraint and not tried:
            return self._provider(service), None
        where = f" on node {node!r}" if node is not None else ""
        version = f" version {constraint}" if constraint else ""
        raise NoProvider(
            f"no alive provider of {service!r}{version}{where} is known to node {self.name!r}",
            service=service,
        )

    def _outstanding(self, provider: MemberInfo) -> int:
        """Calls of this node on ``provider``: sent and unanswered, or connecting."""
        routing = self._routing.get(provider.id, 0)
        connection = self._connections.get(provider.address)
        peer = None if connection is None else connection.peer
        if connection is not None and peer is not None and peer.id == provider.id:
            return connection.outstanding + routing
        return routing

    async def _connection_to(self, address: str, deadline: float) -> Connection:
        """The connection to the node at ``address``, made (once) if needed."""
        connection = self._connections.get(address)
        if connection is not None and connection.peer is not None:
            return connection
        left = deadline - time.monotonic()
        timeout = max(0.001, min(self.config.timings.connect_timeout, left))
        await self.connect(address, timeout=timeout)
        return self._connections[address]

    def _provider(self, service: str) -> Connection:
        best: Connection | None = None
        for connection in self._connections.values():
            peer = connection.peer
            if (
                peer is not None
                and service in peer.services
                and (best is None or connection.outstanding < best.outstanding)
            ):
                best = connection
        if best is None:
            raise NoProvider(
                f"no provider of {service!r} is known to node {self.name!r}", service=service
            )
        return best

    def _local_context(self, target: str, deadline: float | None, trace_id: str) -> CallContext:
        service, _, method = target.rpartition(".")
        return CallContext(service, method, 0, self.id, trace_id, 1, deadline)

    async def _call_local(
        self, target: str, args: Any, kwargs: dict[str, Any], deadline: float, trace_id: str
    ) -> Any:
        spec = self._dispatcher.resolve(target)
        if spec.is_stream:
            raise CallError(
                f"{target} is a stream: call it with node.stream()",
                service=spec.service,
                method=spec.name,
            )
        context = self._local_context(target, deadline, trace_id)
        try:
            return await self._dispatcher.call(spec, context, args, kwargs)
        except MeshError:
            raise
        except Exception as exc:  # the same error a remote caller would see
            raise _as_remote(exc, spec.service, spec.name) from exc

    def _stream_local(
        self, target: str, args: Any, kwargs: dict[str, Any], timeout: float | None, trace_id: str
    ) -> Stream:
        spec = self._dispatcher.resolve(target)
        if not spec.is_stream:
            raise CallError(
                f"{target} is not a stream: call it with node.call()",
                service=spec.service,
                method=spec.name,
            )
        window = 64
        credit = Credit(window)
        context = self._local_context(target, None, trace_id)
        task: asyncio.Task[None] | None = None

        def cancel() -> None:
            if task is not None:
                task.cancel()

        stream = Stream(target, window, timeout, grant=credit.add, cancel=cancel)

        def emit(item: Any) -> None:
            stream.deliver(item)  # never over the window: the credit holds the producer

        async def produce() -> None:
            try:
                await self._dispatcher.stream(spec, context, args, kwargs, credit, emit)
            except asyncio.CancelledError:
                stream.finish()
                raise
            except MeshError as exc:
                stream.finish(exc)
            except Exception as exc:
                stream.finish(_as_remote(exc, spec.service, spec.name))
            else:
                stream.finish()

        task = asyncio.get_running_loop().create_task(produce(), name=f"stream {target}")
        return stream

    def _serve(self, routing_id: bytes, call: Call, caller: str) -> None:
        """A peer's CALL (``caller``: its node id): check it, then run it in a task of
        its own."""
        if not self._accepting:
            self._reply(
                routing_id,
                Error(call.call_id, Unavailable.code, f"node {self.name!r} is shutting down"),
            )
            return
        if call.target.startswith("$mesh."):
            self._serve_system(routing_id, call)
            return
        try:
            spec = self._dispatcher.resolve(call.target)
            blocked = self._lifecycle.blocked
            if blocked and spec.service in blocked:  # the caller may try another provider
                raise Unavailable(blocked[spec.service])
            if spec.is_stream != (call.credit > 0):
                how = "node.stream()" if spec.is_stream else "node.call()"
                raise CallError(
                    f"{call.target} is {'a' if spec.is_stream else 'not a'} "
                    f"stream: call it with {how}"
                )
        except CallError as exc:
            self._reply(routing_id, Error(call.call_id, exc.code, str(exc)))
            return
        limit = self.config.limits.max_calls_per_peer
        if self._calls_by_peer.get(routing_id, 0) >= limit:
            self._limit_violations += 1
            self._reply(
                routing_id,
                Error(
                    call.call_id,
                    Overloaded.code,
                    f"{limit} calls from this caller are running on node {self.name!r} "
                    "(limits.max_calls_per_peer); try again later",
                ),
            )
            return
        if self._serving and (routing_id, call.call_id) in self._serving:
            # Answering would settle the caller's first call with it: count and drop.
            self._protocol_errors += 1
            log.warning("call id %d reused while in flight: dropped", call.call_id)
            return
        deadline = None if call.deadline_ms is None else time.monotonic() + call.deadline_ms / 1000
        context = CallContext(
            spec.service, spec.name, call.call_id, caller, call.trace_id, call.attempt, deadline
        )
        credit = None
        if spec.is_stream:
            max_credit = self.config.limits.max_stream_credit
            if call.credit > max_credit:
                self._limit_violations += 1
            credit = Credit(call.credit, max_credit)
        elif self._dispatcher.can_call_now(spec, context):
            self._call_now(routing_id, call, spec, context)
            return
        task = asyncio.get_running_loop().create_task(
            self._run_call(routing_id, call, spec, context, credit)
        )
        key = (routing_id, call.call_id)
        self._serving[key] = _Serving(task, context, credit)
        self._calls_by_peer[routing_id] = self._calls_by_peer.get(routing_id, 0) + 1
        task.add_done_callback(lambda _: self._served(key))

    def _serve_system(self, routing_id: bytes, call: Call) -> None:
        """The mesh's own methods: ``$mesh.listing()`` (this node's record) and
        ``$mesh.members(fresh=False)`` (every member with record and stats; ``fresh``
        first asks every live member for its stats now and waits a moment for them)."""
        if call.target == "$mesh.listing":
            # The record as gossiped (with its version) once the catalog holds it.
            record = self.listing() if self._gossiper is None else self._gossiper.catalog.local
            self._reply(routing_id, Reply(call.call_id, record.to_wire()))
        elif call.target == "$mesh.members":
            fresh = bool(call.args[0]) if call.args else bool(call.kwargs.get("fresh"))
            if fresh and self._gossiper is not None and not self._closing:
                asked = time.time()
                if asked - self._fresh_pulled_at >= FRESH_STATS_WAIT:
                    self._fresh_pulled_at = asked
                    self._fresh_pulled = set()
                else:  # pulled a moment ago (by any caller): those answers will do
                    asked = self._fresh_pulled_at
                self._spawn(self._members_later(routing_id, call.call_id, asked), "fresh members")
            else:
                self._reply_members(routing_id, call.call_id)
        elif call.target == "$mesh.status":
            self._reply(routing_id, Reply(call.call_id, self.worker_status().to_json()))
        elif call.target == "$mesh.ping":
            self._reply(routing_id, Reply(call.call_id, [self.id, self.name]))
        elif call.target == "$mesh.publish":
            self._publish_for(routing_id, call)
        elif call.target == "$mesh.deliver":
            self._reply(routing_id, Reply(call.call_id, self._accept_group_event(call.args)))
        elif call.target == "$mesh.history":
            self._reply_error_or(routing_id, Reply(call.call_id, self._history(call.args)))
        elif call.target.startswith("$mesh.job."):
            self._spawn(serve_job_call(self, routing_id, call), "job call")
        else:
            self._reply(
                routing_id,
                Error(call.call_id, CallError.code, f"{call.target}: no such mesh method"),
            )

    def _publish_for(self, routing_id: bytes, call: Call) -> None:
        """``$mesh.publish(topic, data)``: publish for a caller that is not a member (a
        :class:`mesh.Client`, ``meshctl publish``): the event is this node's, and the
        answer is ``[seq, publisher id]``."""
        try:
            if len(call.args) != 2:
                raise CallError("$mesh.publish takes (topic, data)")
            event = self._events.publish(call.args[0], call.args[1])
        except MeshError as exc:
            code, message, kind, _ = error_to_wire(exc)
            self._reply_error(routing_id, Error(call.call_id, code, message, kind))
            return
        self._reply(routing_id, Reply(call.call_id, [event.seq, event.publisher]))

    def _accept_group_event(self, args: list[Any]) -> bool:
        """``$mesh.deliver(group, prefix, event)``: True once a subscription of this
        node's in that group holds the event (the acknowledgement)."""
        try:
            group, prefix, wire = args
            event = event_from_wire(wire)
        except (ValueError, ProtocolError):
            self._protocol_errors += 1
            return False
        if not isinstance(group, str) or not isinstance(prefix, str) or self._closing:
            return False
        return self._events.accept_group_event(group, prefix, event)

    def _history(self, args: list[Any]) -> list[Any]:
        """``$mesh.history(prefix, limit, after[, before])``: kept events, as event arrays."""
        prefix, limit, after, before = ([*list(args), None, None, None, None])[:4]
        if not isinstance(prefix, str) or type(limit) is not int or not isinstance(after, dict):
            return []
        after = {t: n for t, n in after.items() if isinstance(t, str) and type(n) is int}
        until = None
        if isinstance(before, dict):
            until = {t: n for t, n in before.items() if isinstance(t, str) and type(n) is int}
        return [event_to_wire(e) for e in self._events.history(prefix, limit, after, until)]

    async def _members_later(self, routing_id: bytes, call_id: int, asked: float) -> None:
        """Answer ``$mesh.members(fresh=True)`` once every live member's stats are newer
        than ``asked`` (wall clock), or after :data:`FRESH_STATS_WAIT`."""
        deadline = time.monotonic() + FRESH_STATS_WAIT
        while time.monotonic() < deadline and self._gossiper is not None:
            stale = {
                m.id
                for m in self.members()
                if m.status == "alive" and (m.stats is None or m.stats.taken_at < asked)
            }
            if not stale:
                break
            # Each member is asked once per window, also one listed since the request.
            if unasked := stale - self._fresh_pulled:
                self._fresh_pulled |= unasked
                self._gossiper.pull_stats_now(unasked)
            await asyncio.sleep(0.01)  # stats come unannounced
        self._reply_members(routing_id, call_id)

    def _reply_members(self, routing_id: bytes, call_id: int) -> None:
        self._reply_error_or(
            routing_id, Reply(call_id, [member_to_wire(m) for m in self.members()])
        )

    def _reply_error_or(self, routing_id: bytes, reply: Reply) -> None:
        try:
            self._reply(routing_id, reply)
        except ProtocolError as exc:
            self._reply(routing_id, Error(reply.call_id, ProtocolError.code, str(exc)))

    def _served(self, key: tuple[bytes, int]) -> None:
        self._serving.pop(key, None)
        routing_id = key[0]
        left = self._calls_by_peer[routing_id] - 1
        if left:
            self._calls_by_peer[routing_id] = left
        else:
            del self._calls_by_peer[routing_id]

    def _abandon(self, key: tuple[bytes, int]) -> None:
        """The caller no longer wants this call: stop it, answer nothing."""
        serving = self._serving.get(key)
        if serving is not None:
            serving.abandoned = True
            serving.context.cancel()
            serving.task.cancel()

    def _call_now(
        self, routing_id: bytes, call: Call, spec: MethodSpec, context: CallContext
    ) -> None:
        """Run an inline handler (an ``async def`` that never awaits) to its end and
        answer, without a task: a task, its step and its done callback cost more than
        such a handler (docs/performance.md)."""
        try:
            result = self._dispatcher.call_now(spec, context, call.args, call.kwargs)
        except asyncio.CancelledError:
            return  # the handler cancelled itself: as in a task, nothing is answered
        except BaseException as exc:
            self._answer_error(routing_id, call.call_id, exc)
            return
        self._answer(routing_id, call, Reply(call.call_id, result))

    async def _run_call(
        self,
        routing_id: bytes,
        call: Call,
        spec: MethodSpec,
        context: CallContext,
        credit: Credit | None,
    ) -> None:
        call_id = call.call_id

        def emit(item: Any) -> None:
            try:
                self._reply(routing_id, StreamItem(call_id, item))
            except ProtocolError as exc:
                raise ProtocolError(f"{call.target}: an item cannot be sent: {exc}") from None

        try:
            if credit is None:
                result = await self._dispatcher.call(spec, context, call.args, call.kwargs)
                answer: Message = Reply(call_id, result)
            else:
                await self._dispatcher.stream(spec, context, call.args, call.kwargs, credit, emit)
                answer = StreamEnd(call_id)
        except asyncio.CancelledError:
            serving = self._serving.get((routing_id, call_id))
            if self._closing and not (serving and serving.abandoned):
                # Cut off by shutdown: the caller may retry elsewhere.
                self._reply(
                    routing_id,
                    Error(
                        call_id, Unavailable.code, f"node {self.name!r} shut down during the call"
                    ),
                )
            return
        except BaseException as exc:
            self._answer_error(routing_id, call_id, exc)
            return
        self._answer(routing_id, call, answer)

    def _answer(self, routing_id: bytes, call: Call, answer: Message) -> None:
        """Send a call's REPLY (or STREAM_END); a result that cannot travel is an error."""
        try:
            self._reply(routing_id, answer)
        except ProtocolError as exc:
            self._reply(
                routing_id,
                Error(
                    call.call_id,
                    ProtocolError.code,
                    f"{call.target}: the result cannot be sent: {exc}",
                ),
            )

    def _answer_error(self, routing_id: bytes, call_id: int, exc: BaseException) -> None:
        """Send the handler's error to the caller; SystemExit and KeyboardInterrupt are
        answered, then let through."""
        code, message, kind, text = error_to_wire(exc)
        self._reply_error(routing_id, Error(call_id, code, message, kind, text))
        if not isinstance(exc, Exception):
            raise exc

    def _reply_error(self, routing_id: bytes, error: Error) -> None:
        """Send an ERROR; one too large to encode goes out shortened."""
        try:
            self._reply(routing_id, error)
        except ProtocolError:
            self._reply(
                routing_id,
                Error(
                    error.ref, error.code, error.message[:2000], error.type, error.traceback[-8000:]
                ),
            )

    # -- handshake: the caller's side -------------------------------------------------------

    async def connect(self, address: str, *, timeout: float | None = None) -> PeerInfo:
        """Open a connection to the node at ``address`` and introduce ourselves.

        Returns the peer's identity. Raises :class:`WrongMesh`,
        :class:`IncompatibleVersion` or :class:`ConnectTimeout` (no answer within
        ``timeout``, default ``config.timings.connect_timeout``), each naming the address.
        """
        self._require_started()
        pending = self._connecting.get(address)
        if pending is None:  # one handshake per address at a time; the others wait for it
            pending = asyncio.ensure_future(self._connect(address, timeout))
            self._connecting[address] = pending

            def done(_: object, address: str = address, pending: Any = pending) -> None:
                if self._connecting.get(address) is pending:
                    del self._connecting[address]
                if not pending.cancelled():
                    # Mark the error seen: every waiter may have gone (a node closing
                    # while a seed's handshake runs), and asyncio would log it as lost.
                    pending.exception()

            pending.add_done_callback(done)
        return await asyncio.shield(pending)

    async def _connect(self, address: str, timeout: float | None) -> PeerInfo:
        assert self._transport is not None
        endpoint, peer_key = parse_address(address)
        timeout = self.config.timings.connect_timeout if timeout is None else timeout
        old = self._connections.pop(address, None)
        if old is not None:  # a fresh DEALER: never reuse one that may hold stale messages
            self._outgoing.fail_connection(old, "the connection was replaced")
            await self._transport.close_pump(old.pump)
        routing_id = self._id_bytes + next(self._nonces).to_bytes(4, "big")
        ref = next(self._refs)
        # The handlers run later, on the pump's task, once `connection` exists.
        pump = self._transport.dealer(
            endpoint,
            routing_id,
            lambda frames: self._on_dealer_frames(connection, frames),
            send_timeout=timeout,
            peer_key=peer_key,
            on_event=lambda event: self._on_monitor_event(connection, event),
        )
        connection = Connection(pump, address)
        self._connections[address] = connection
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (connection, future)
        try:
            connection.pump.send([self._codec.encode(self._hello(ref))])
            try:
                answer = await within(future, timeout)
            except TimeoutError:
                raise ConnectTimeout(
                    f"no answer from {address} within {timeout:g} s"
                    f" ({_explain(connection.last_event)})",
                    address=address,
                ) from None
            peer = self._accept_welcome(answer, address)
        except BaseException:
            self._pending.pop(ref, None)
            if self._connections.get(address) is connection:
                del self._connections[address]
            await self._transport.close_pump(connection.pump)
            raise
        self._pending.pop(ref, None)
        connection.peer = peer
        return peer

    def _hello(self, ref: int) -> Hello:
        return hello(ref, self.id, self.name, self.mesh, self._services.versions(), self.public_key)

    def _accept_welcome(self, answer: Message, address: str) -> PeerInfo:
        return accept_welcome(answer, address, self.mesh)

    def _on_dealer_frames(self, connection: Connection, frames: list[bytes]) -> None:
        message = self._decode(frames, connection.address)
        if isinstance(message, ProtocolError):
            return
        if isinstance(message, Reply | StreamItem | StreamEnd):
            self._outgoing.on_message(connection, message)
        elif isinstance(message, Welcome | Error):
            pending = self._pending.get(message.ref)
            # Only the peer that got the HELLO may answer it.
            if pending is not None and pending[0] is connection:
                if not pending[1].done():
                    pending[1].set_result(message)
            elif isinstance(message, Error):
                if message.code == SessionLost.code and connection.peer is not None:
                    self._session_lost(connection, message)
                else:
                    self._outgoing.on_message(connection, message)
        elif isinstance(message, Goodbye):
            if connection.peer is not None and connection.peer.id == message.node_id:
                self._outgoing.fail_connection(connection, "the provider left")
                self._drop_connection(connection)
        else:
            self._protocol_errors += 1
            log.debug("unexpected %s from %s", type(message).__name__, connection.address)

    def _session_lost(self, connection: Connection, refusal: Error) -> None:
        """The listener refused a call on ``connection`` for want of a session: it dropped
        ours (it declared this node gone, while this node still holds the connection).
        The connection is dead weight: the next call makes a fresh one and shakes hands.
        The refused call did not run (``SessionLost``, which ``call`` sends again), nor
        did those sent after it on this connection: the listener answers in order and
        refuses every call without a session, so they fail with SessionLost too (sent
        again). Those sent before it may have run, and will never be answered."""
        self._outgoing.on_message(connection, refusal)
        name = connection.peer.name if connection.peer else connection.address
        self._outgoing.fail_connection(
            connection,
            f"node {name!r} had ended this connection's session",
            SessionLost,
            after=refusal.ref,
        )
        self._outgoing.fail_connection(
            connection, f"node {name!r} dropped this connection (it had declared this node gone)"
        )
        self._drop_connection(connection)

    def _drop_connection(self, connection: Connection) -> None:
        """Forget ``connection`` and close its socket: the next call to that address
        makes a fresh one (a DEALER left open would reconnect to whatever process takes
        the address next, and hold three file descriptors for nothing)."""
        connection.peer = None
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]
        if self._transport is not None:
            self._spawn(self._transport.close_pump(connection.pump), "close connection")

    def _on_monitor_event(self, connection: Connection, event: MonitorEvent) -> None:
        connection.last_event = event
        peer = connection.peer
        if event.kind == "disconnected" and not self._joins and peer is not None:
            # A node that does not join (a Client's) has no membership to say that the
            # provider died: its lost connection ends the calls waiting on it. (A member
            # waits for the verdict of membership: a disconnect alone is not one.)
            self._outgoing.fail_connection(
                connection, f"the connection to provider {peer.name!r} was lost", ProviderLost
            )
        if event.kind.startswith("handshake_failed"):
            self._transport_handshake_failures += 1
            log.warning("%s: socket handshake failed (%s)", connection.address, event.kind)
            # Fail a waiting connect now: libzmq would only retry, and fail again.
            for pending_connection, future in self._pending.values():
                if pending_connection is connection and not future.done():
                    future.set_exception(
                        AuthenticationFailed(
                            f"the security handshake with {connection.address} failed: "
                            f"{_explain(event)}; does it belong to this mesh, with these keys?",
                            address=connection.address,
                        )
                    )

    # -- handshake: the listener's side -----------------------------------------------------

    def _on_router_event(self, event: MonitorEvent) -> None:
        if event.kind.startswith("handshake_failed"):
            self._transport_handshake_failures += 1
            log.warning("peer %s failed the socket handshake (%s)", event.endpoint, event.kind)

    def _on_router_frames(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._protocol_errors += 1
            return
        routing_id = frames[0]
        if len(frames) == 2:  # the usual message: decoded here, one call fewer than _decode
            try:
                message: Message | ProtocolError = self._codec.decode(frames[1])
            except ProtocolError as exc:
                message = self._bad_frame(exc, routing_id)
        else:
            message = self._decode(frames[1:], routing_id)
        if isinstance(message, ProtocolError):
            self._reply(routing_id, Error(message.ref, ProtocolError.code, str(message)))
            return
        session = self._sessions.get(routing_id)
        if session is not None:
            session.seen = self._checks  # any message keeps a session; heartbeats cannot
            if type(message) is Call:  # most messages
                self._serve(routing_id, message, session.peer.id)
                return
        if isinstance(message, Hello):
            self._on_hello(routing_id, message)
        elif isinstance(message, Goodbye):
            if session is not None and session.peer.id == message.node_id:
                self._caller_gone(session.peer.id)
        elif session is None:
            self._protocol_errors += 1
            if not isinstance(message, Error):
                self._reply(
                    routing_id, Error(_ref_of(message), SessionLost.code, "say HELLO first")
                )
        elif isinstance(message, Cancel):
            self._abandon((routing_id, message.call_id))
        elif isinstance(message, WireCredit):
            serving = self._serving.get((routing_id, message.call_id))
            if (
                serving is not None
                and serving.credit is not None
                and not serving.credit.add(message.n)
            ):
                self._limit_violations += 1
        # Anything else (REPLY, STREAM_ITEM, ...) has no meaning on a ROUTER: ignored.

    def _on_hello(self, routing_id: bytes, hello: Hello) -> None:
        refusal = self._refuse(hello)
        if refusal is not None:
            self._handshakes_refused += 1
            log.info("refused HELLO from %s (%s): %s", hello.name, hello.node_id, refusal.message)
            self._reply(routing_id, refusal)
            return
        version = negotiate((PROTOCOL_MIN, PROTOCOL_MAX), (hello.min_version, hello.max_version))
        assert version is not None
        self._sessions[routing_id] = _Session(
            _session_peer(hello, version, self.config.limits.max_session_hello), self._checks
        )
        self._reply(routing_id, self._welcome(hello.ref, version))

    def _welcome(self, ref: int, version: int) -> Welcome:
        return Welcome(
            ref=ref,
            node_id=self.id,
            name=self.name,
            mesh=self.mesh,
            min_version=PROTOCOL_MIN,
            max_version=PROTOCOL_MAX,
            version=version,
            services=self._services.versions(),
            public_key=self.public_key,
        )

    def _refuse(self, hello: Hello) -> Error | None:
        if not self._accepting:
            return Error(hello.ref, ConnectError.code, f"node {self.name!r} is shutting down")
        return refuse_hello(hello, self.name, self.mesh)

    # -- plumbing ---------------------------------------------------------------------------

    def _decode(self, frames: list[bytes], source: Any) -> Message | ProtocolError:
        """Decode a message from ``source`` (a routing id or an address); a bad one is
        counted and its error returned, not raised."""
        if len(frames) != 1:
            return self._bad_frame(ProtocolError("a mesh message is exactly one frame"), source)
        try:
            return self._codec.decode(frames[0])
        except ProtocolError as exc:
            return self._bad_frame(exc, source)

    def _bad_frame(self, error: ProtocolError, source: Any) -> ProtocolError:
        """Count and log a frame that is no valid message; returns ``error``."""
        self._protocol_errors += 1
        log.debug("bad frame from %s: %s", _source(source), error)
        return error

    def _reply(self, routing_id: bytes, message: Message) -> None:
        if self._router is not None:
            self._router.send([routing_id, self._codec.encode(message)])

    def _say_goodbye(self) -> int:
        """GOODBYE to every peer with a completed handshake; returns how many."""
        goodbye = self._codec.encode(Goodbye(self.id))
        told = 0
        for connection in self._connections.values():
            if connection.peer is not None:
                connection.pump.send([goodbye])
                told += 1
        for routing_id in self._sessions:
            self._reply(routing_id, Goodbye(self.id))
            told += 1
        return told

    def _require_started(self) -> None:
        if self._transport is None:
            raise MeshError("node not started: use 'async with Node(...)' or 'await node.start()'")
        if self._closed:
            raise MeshError("node is closed")


def _no_stats(member_id: str) -> None:
    return None


def _session_peer(hello: Hello, version: int, most: int) -> PeerInfo:
    """What a caller's session keeps of its HELLO: all of it up to ``most`` bytes of
    text (Limits.max_session_hello); past that, not its services, and its id and name
    cut to 64 characters (a 1 MB HELLO held 3.4 MB per session before)."""
    node_id, name, services = hello.node_id, hello.name, hello.services
    size = len(node_id) + len(name) + sum(len(k) + len(v) for k, v in services.items())
    if size > most:
        node_id, name, services = node_id[:64], name[:64], {}
    public_key = (
        hello.public_key if hello.public_key is None or len(hello.public_key) <= 64 else None
    )
    return PeerInfo(
        id=node_id,
        name=name,
        mesh=hello.mesh[:64],
        version=version,
        services=dict(services),
        public_key=public_key,
    )


def _idempotent(provider: MemberInfo, service: str, method: str) -> bool:
    """Whether ``provider`` lists ``service.method`` as safe to retry."""
    listed = None if provider.record is None else provider.record.service(service)
    return listed is not None and any(m.name == method and m.idempotent for m in listed.methods)


def _source(source: Any) -> str:
    return source.hex() if isinstance(source, bytes) else str(source)


def _ref_of(message: Message) -> int:
    for attribute in ("call_id", "ref"):
        value = getattr(message, attribute, None)
        if isinstance(value, int):
            return value
    return 0


def _explain(event: MonitorEvent | None) -> str:
    """Plain words for the last thing the socket monitor saw."""
    if event is None:
        return "no connection was made"
    return {
        "connect_delayed": "connection in progress",
        "connect_retried": "could not connect (refused or unreachable): is a node listening there?",
        "connected": "connected, but no mesh node answered",
        "handshake_succeeded": "connected, but no mesh node answered",
        "disconnected": "the connection was closed by the peer",
        "handshake_failed": "the security handshake failed",
        "handshake_failed_protocol": "the security handshake failed (protocol mismatch)",
        "handshake_failed_auth": "the security handshake failed (key not accepted)",
    }.get(event.kind, event.kind)


def _as_remote(exc: BaseException, service: str, method: str) -> RemoteError:
    """A local handler's exception, as a remote caller would see it."""
    _, message, kind, text = error_to_wire(exc)
    return RemoteError(
        message, remote_type=kind, remote_traceback=text, service=service, method=method
    )


class Proxy:
    """``node.proxy("calc")``: attributes are the service's methods."""

    def __init__(self, node: Node, service: str, timeout: float | None) -> None:
        self._node = node
        self._service = service
        self._timeout = timeout

    def __getattr__(self, name: str) -> ProxyMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return ProxyMethod(self._node, f"{self._service}.{name}", self._timeout)

    def __repr__(self) -> str:
        return f"<Proxy {self._service!r} of node {self._node.name!r}>"


class ProxyMethod:
    """One method of a proxy: ``await method(*args)`` or ``method.stream(*args)``."""

    def __init__(self, node: Node, target: str, timeout: float | None) -> None:
        self._node = node
        self.target = target
        self._timeout = timeout

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.pop("timeout", self._timeout)
        return await self._node.call(self.target, *args, timeout=timeout, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Stream | RoutedStream:
        timeout = kwargs.pop("timeout", self._timeout)
        return self._node.stream(self.target, *args, timeout=timeout, **kwargs)


class _LifecycleHost:
    """What a node's supervisor (:class:`Lifecycle`) uses of it."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def node_name(self) -> str:
        return self._node.name

    def remote_offers(self, service: str) -> list[str]:
        node = self._node
        offers = []
        for info in node._providers_of(service):
            if info.id == node.id or info.status not in ("alive", "suspect") or not info.record:
                continue
            listed = info.record.service(service)
            if listed is not None and listed.offered:
                offers.append(listed.version)
        return offers

    def republish(self) -> None:
        self._node._republish()

    def system_event(self, topic: str, data: dict[str, Any]) -> None:
        node = self._node
        address = node.address if node._router is not None and not node._closed else ""
        fields = {"node": node.name, "node_id": node.id, "status": "alive", "address": address}
        node._events.system_event(topic, {**data, **fields})


class _EventHost:
    """What a node's :class:`EventBus` uses of it (sockets, members, calls)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def send_events(self, frames: list[bytes]) -> None:
        pub = self._node._pub
        if pub is not None:
            pub.send(frames)

    def open_sub(self, on_frames: Callable[[list[bytes]], None]) -> Subscriber:
        assert self._node._transport is not None
        return self._node._transport.subscriber(on_frames)

    def live_members(self) -> list[MemberInfo]:
        view = self._node._member_view(live=True)
        return [m for m in view if m.status in ("alive", "suspect")]

    def events_listing_changed(self) -> None:
        self._node._republish_soon()

    def spawn(self, coroutine: Any, name: str) -> None:
        self._node._spawn(coroutine, name)

    async def call_member(
        self, member: MemberInfo, method: str, args: list[Any], timeout: float
    ) -> Any:
        node = self._node
        deadline, trace_id = Outgoing.inherit(timeout)
        connection = await node._connection_to(member.address, deadline)
        return await node._outgoing.call(connection, method, args, {}, deadline, trace_id)
