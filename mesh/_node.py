"""The node runtime: binds the sockets, speaks the handshake, ties the layers together.

Only this module reads the clock and owns tasks; what decides (codec, version
choice) is pure code in other modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Self

from ._config import Config
from ._errors import (
    ConnectError,
    ConnectTimeout,
    IncompatibleVersion,
    MeshError,
    ProtocolError,
    TransportError,
    WrongMesh,
)
from ._transport import MonitorEvent, Pump, Transport
from ._wire import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Call,
    Codec,
    Error,
    Goodbye,
    Hello,
    Message,
    Welcome,
    negotiate,
)

__all__ = ["Node", "NodeStatistics", "PeerInfo"]

log = logging.getLogger("mesh.node")

_ADDRESS = re.compile(r"tcp://(?:[^:/#\s]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")
_HANDSHAKE_ERRORS: Mapping[str, type[ConnectError]] = {
    WrongMesh.code: WrongMesh,
    IncompatibleVersion.code: IncompatibleVersion,
}


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who a peer said it is in the handshake."""

    id: str
    name: str
    mesh: str
    #: The protocol version both sides use.
    version: int
    #: The peer's RPC address when this node connected to it, else "".
    address: str = ""
    #: Service name -> version, as the peer listed them at handshake.
    services: Mapping[str, str] = field(default_factory=dict)
    public_key: bytes | None = None


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


@dataclass(slots=True)
class _Connection:
    """This node's DEALER to one peer address."""

    pump: Pump
    address: str
    peer: PeerInfo | None = None
    last_event: MonitorEvent | None = None


class Node:
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
        self._transport: Transport | None = None
        self._router: Pump | None = None
        self._pub: Pump | None = None
        self._port = 0
        self._pub_port = 0
        self._started_at = 0.0
        self._accepting = False
        self._closing = False
        self._refs = itertools.count(1)
        self._nonces = itertools.count(1)
        # Handshake state: peers that said HELLO to our ROUTER, and our DEALERs.
        self._sessions: dict[bytes, PeerInfo] = {}
        self._connections: dict[str, _Connection] = {}
        # HELLOs waiting for an answer: ref -> (the connection it went out on, its future).
        self._pending: dict[int, tuple[_Connection, asyncio.Future[Message]]] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._protocol_errors = 0
        self._handshakes_refused = 0
        self._transport_handshake_failures = 0
        self._stop: asyncio.Event | None = None

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
        """``tcp://host:port`` of the RPC socket (after start)."""
        self._require_started()
        return f"tcp://{self.config.advertised_host}:{self._port}"

    @property
    def pub_address(self) -> str:
        """``tcp://host:port`` of the event socket (after start)."""
        self._require_started()
        return f"tcp://{self.config.advertised_host}:{self._pub_port}"

    @property
    def peers(self) -> Mapping[str, PeerInfo]:
        """Peers that completed a handshake with this node, by node id."""
        known: dict[str, PeerInfo] = {p.id: p for p in self._sessions.values()}
        known.update({c.peer.id: c.peer for c in self._connections.values() if c.peer})
        return MappingProxyType(known)

    def statistics(self) -> NodeStatistics:
        """A snapshot of this node's counters."""
        t = self._transport.statistics() if self._transport else None
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
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets and start serving."""
        if self._transport is not None:
            raise MeshError("node already started")
        self.config.advertised_host  # noqa: B018  (fail early on a wildcard host)
        self._transport = Transport(self.config.limits)
        try:
            self._router, self._port = self._transport.router(
                self.config.host,
                self.config.port,
                self._on_router_frames,
                on_event=self._on_router_event,
            )
            self._pub, self._pub_port = self._transport.publisher(
                self.config.host, self.config.pub_port
            )
        except BaseException:
            await self._transport.aclose()
            self._transport = None
            raise
        self._started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._accepting = True
        log.debug("node %s (%s) serving at %s", self.name, self.id, self.address)

    async def aclose(self, grace: float | None = None) -> None:
        """Leave: refuse new work, let work in flight finish within ``grace`` seconds
        (default ``config.timings.grace_period``), say goodbye to peers, close sockets."""
        if self._transport is None or self._closing:
            return
        self._closing = True
        self._accepting = False
        grace = self.config.timings.grace_period if grace is None else grace
        if self._inflight:
            _, late = await asyncio.wait(self._inflight, timeout=grace)
            for task in late:
                task.cancel()
        self._say_goodbye()
        pumps = [c.pump for c in self._connections.values()]
        if self._router is not None:
            pumps.append(self._router)
        linger = min(grace, 0.5)
        await asyncio.gather(*(p.flush(timeout=linger) for p in pumps))
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("node closed"))
        self._pending.clear()
        await self._transport.aclose(linger)
        self._connections.clear()
        self._sessions.clear()
        if self._stop is not None:
            self._stop.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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

    # -- handshake: the caller's side -------------------------------------------------------

    async def connect(self, address: str, *, timeout: float | None = None) -> PeerInfo:
        """Open a connection to the node at ``address`` and introduce ourselves.

        Returns the peer's identity. Raises :class:`WrongMesh`,
        :class:`IncompatibleVersion` or :class:`ConnectTimeout` (no answer within
        ``timeout``, default ``config.timings.connect_timeout``), each naming the address.
        """
        self._require_started()
        assert self._transport is not None
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise ConnectError(f"{address!r} is not a tcp://host:port address", address=address)
        timeout = self.config.timings.connect_timeout if timeout is None else timeout
        old = self._connections.pop(address, None)
        if old is not None:  # a fresh DEALER: never reuse one that may hold stale messages
            await self._transport.close_pump(old.pump)
        routing_id = self._id_bytes + next(self._nonces).to_bytes(4, "big")
        ref = next(self._refs)
        # The handlers run later, on the pump's task, once `connection` exists.
        pump = self._transport.dealer(
            address,
            routing_id,
            lambda frames: self._on_dealer_frames(connection, frames),
            send_timeout=timeout,
            on_event=lambda event: self._on_monitor_event(connection, event),
        )
        connection = _Connection(pump, address)
        self._connections[address] = connection
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (connection, future)
        try:
            connection.pump.send([self._codec.encode(self._hello(ref))])
            try:
                answer = await asyncio.wait_for(future, timeout)
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
        return Hello(
            ref=ref,
            node_id=self.id,
            name=self.name,
            mesh=self.mesh,
            min_version=PROTOCOL_MIN,
            max_version=PROTOCOL_MAX,
        )

    def _accept_welcome(self, answer: Message, address: str) -> PeerInfo:
        if isinstance(answer, Error):
            cls = _HANDSHAKE_ERRORS.get(answer.code, ConnectError)
            raise cls(f"{address} refused the handshake: {answer.message}", address=address)
        if not isinstance(answer, Welcome):
            raise ConnectError(f"{address} answered HELLO with {type(answer).__name__}")
        if answer.mesh != self.mesh:
            raise WrongMesh(
                f"{address} is node {answer.name!r} of mesh {answer.mesh!r}, "
                f"not of mesh {self.mesh!r}",
                address=address,
            )
        chosen = negotiate((PROTOCOL_MIN, PROTOCOL_MAX), (answer.min_version, answer.max_version))
        if chosen is None or answer.version != chosen:
            raise IncompatibleVersion(
                f"{address} speaks protocol {answer.min_version}..{answer.max_version} "
                f"and chose version {answer.version}; this node speaks "
                f"{PROTOCOL_MIN}..{PROTOCOL_MAX}",
                address=address,
            )
        return PeerInfo(
            id=answer.node_id,
            name=answer.name,
            mesh=answer.mesh,
            version=answer.version,
            address=address,
            services=dict(answer.services),
            public_key=answer.public_key,
        )

    def _on_dealer_frames(self, connection: _Connection, frames: list[bytes]) -> None:
        message = self._decode(frames, connection.address)
        if isinstance(message, ProtocolError):
            return
        if isinstance(message, Welcome | Error):
            pending = self._pending.get(message.ref)
            # Only the peer that got the HELLO may answer it.
            if pending is not None and pending[0] is connection and not pending[1].done():
                pending[1].set_result(message)
            elif isinstance(message, Error):
                log.warning(
                    "error from %s: %s: %s", connection.address, message.code, message.message
                )
        elif isinstance(message, Goodbye):
            if connection.peer is not None and connection.peer.id == message.node_id:
                connection.peer = None
        else:
            self._protocol_errors += 1
            log.debug("unexpected %s from %s", type(message).__name__, connection.address)

    def _on_monitor_event(self, connection: _Connection, event: MonitorEvent) -> None:
        connection.last_event = event
        if event.kind.startswith("handshake_failed"):
            self._transport_handshake_failures += 1
            log.warning("%s: socket handshake failed (%s)", connection.address, event.kind)

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
        message = self._decode(frames[1:], routing_id.hex())
        if isinstance(message, ProtocolError):
            self._reply(routing_id, Error(message.ref, ProtocolError.code, str(message)))
            return
        if isinstance(message, Hello):
            self._on_hello(routing_id, message)
        elif isinstance(message, Goodbye):
            session = self._sessions.get(routing_id)
            if session is not None and session.id == message.node_id:
                del self._sessions[routing_id]
        elif routing_id not in self._sessions:
            self._protocol_errors += 1
            if not isinstance(message, Error):
                self._reply(
                    routing_id, Error(_ref_of(message), ProtocolError.code, "say HELLO first")
                )
        elif isinstance(message, Call):
            self._reply(
                routing_id,
                Error(
                    message.call_id,
                    "no_provider",
                    f"no service {message.target!r} on node {self.name!r}",
                ),
            )
        # STREAM/CREDIT/CANCEL for calls this node never started: nothing to do.

    def _on_hello(self, routing_id: bytes, hello: Hello) -> None:
        refusal = self._refuse(hello)
        if refusal is not None:
            self._handshakes_refused += 1
            log.info("refused HELLO from %s (%s): %s", hello.name, hello.node_id, refusal.message)
            self._reply(routing_id, refusal)
            return
        version = negotiate((PROTOCOL_MIN, PROTOCOL_MAX), (hello.min_version, hello.max_version))
        assert version is not None
        self._sessions[routing_id] = PeerInfo(
            id=hello.node_id,
            name=hello.name,
            mesh=hello.mesh,
            version=version,
            services=dict(hello.services),
            public_key=hello.public_key,
        )
        self._reply(
            routing_id,
            Welcome(
                ref=hello.ref,
                node_id=self.id,
                name=self.name,
                mesh=self.mesh,
                min_version=PROTOCOL_MIN,
                max_version=PROTOCOL_MAX,
                version=version,
            ),
        )

    def _refuse(self, hello: Hello) -> Error | None:
        if not self._accepting:
            return Error(hello.ref, ConnectError.code, f"node {self.name!r} is shutting down")
        if hello.mesh != self.mesh:
            return Error(
                hello.ref,
                WrongMesh.code,
                f"node {self.name!r} belongs to mesh {self.mesh!r}, not {hello.mesh!r}",
            )
        if negotiate((PROTOCOL_MIN, PROTOCOL_MAX), (hello.min_version, hello.max_version)) is None:
            return Error(
                hello.ref,
                IncompatibleVersion.code,
                f"no common protocol version: node {self.name!r} speaks "
                f"{PROTOCOL_MIN}..{PROTOCOL_MAX}, the caller {hello.min_version}.."
                f"{hello.max_version}",
            )
        return None

    # -- plumbing ---------------------------------------------------------------------------

    def _decode(self, frames: list[bytes], source: str) -> Message | ProtocolError:
        """Decode a message; a bad one is counted and its error returned, not raised."""
        if len(frames) != 1:
            error = ProtocolError("a mesh message is exactly one frame")
        else:
            try:
                return self._codec.decode(frames[0])
            except ProtocolError as exc:
                error = exc
        self._protocol_errors += 1
        log.debug("bad frame from %s: %s", source, error)
        return error

    def _reply(self, routing_id: bytes, message: Message) -> None:
        if self._router is not None:
            self._router.send([routing_id, self._codec.encode(message)])

    def _say_goodbye(self) -> None:
        goodbye = self._codec.encode(Goodbye(self.id))
        for connection in self._connections.values():
            if connection.peer is not None:
                connection.pump.send([goodbye])
        for routing_id in self._sessions:
            self._reply(routing_id, Goodbye(self.id))

    def _require_started(self) -> None:
        if self._transport is None:
            raise MeshError("node not started: use 'async with Node(...)' or 'await node.start()'")
        if self._closing:
            raise MeshError("node is closed")


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
        "connect_retried": "connection refused: is a node listening there?",
        "connected": "connected, but no mesh node answered",
        "handshake_succeeded": "connected, but no mesh node answered",
        "disconnected": "the connection was closed by the peer",
        "handshake_failed": "the security handshake failed",
        "handshake_failed_protocol": "the security handshake failed (protocol mismatch)",
        "handshake_failed_auth": "the security handshake failed (key not accepted)",
    }.get(event.kind, event.kind)
