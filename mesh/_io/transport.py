"""The ZeroMQ boundary: the only module that imports zmq.

One :class:`Transport` (one zmq Context) per node. Every socket is made by
:func:`make_socket`, where the security hook (CURVE) is applied. Each socket is
owned by one :class:`Pump`: a reader callback on the event loop reads every
ready message without blocking, up to :data:`READ_BATCH` per turn, then yields
so timers run; :meth:`Pump.send` hands frames to libzmq at once when nothing is
queued, and queues them for the pump otherwise.

Why one owner, on the loop thread: libzmq sockets are not thread-safe, and
their file descriptor is edge-triggered: reading ZMQ_EVENTS (which every send
does) resets it, so whoever reads EVENTS must make sure a waiting message is
still noticed (sending through a shadow socket from several tasks lost such
wake-ups and hung). Why callbacks and NOBLOCK draining rather than an awaited
``recv`` per message: each await costs a future and loop turns; draining in the
reader callback costs neither (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from .._config import Limits
from .._errors import TransportError
from .._util.aio import wait_set
from .security import Security

__all__ = [
    "BlockingDealer",
    "MonitorEvent",
    "Pump",
    "PumpStatistics",
    "Role",
    "SocketHook",
    "Transport",
    "make_socket",
]

log = logging.getLogger("mesh.transport")

# Plain ints: pyzmq's enum flags cost an enum operation per use (5 per call, measured).
_EVENTS: Final = int(zmq.EVENTS)
_NOBLOCK: Final = int(zmq.NOBLOCK)
_NOBLOCK_MORE: Final = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
_POLLIN: Final = int(zmq.POLLIN)
_POLLOUT: Final = int(zmq.POLLOUT)

#: Most messages read from one socket before yielding to the event loop.
READ_BATCH: Final = 256
#: The same for a SUB socket, whose messages are batches of events (up to BATCH_MOST).
SUB_READ_BATCH: Final = 8
#: Every connecting socket (SUB, DEALER) pings its peer this often (ZMTP heartbeats,
#: milliseconds; libzmq's I/O threads answer, so a busy loop delays nothing) and drops a
#: connection that has carried nothing for HEARTBEAT_TIMEOUT after a ping, then connects
#: again (each attempt given up after CONNECT_TIMEOUT). Without them a connection whose
#: packets were lost for a while (a link down and up) stays open while the kernel
#: retransmits with a backoff that can reach minutes: events and calls stop although
#: both ends list each other alive (docs/events.md, "Delivery"; tests/test_events_lan.py).
#: The TTL asks the peer to drop its end after that much silence too (libzmq 4.3.5 does
#: not: a listening ROUTER pings its callers itself, Transport.router(keep_alive=True)).
HEARTBEAT_IVL: Final = 1_000
HEARTBEAT_TIMEOUT: Final = 3_000
HEARTBEAT_TTL: Final = 3_000
CONNECT_TIMEOUT: Final = 2_000
#: File descriptors kept out of the socket budget: Python's own files, zeroconf, sqlite,
#: the event loop. Each ZeroMQ socket costs about two (its mailbox and a connection).
FD_RESERVE: Final = 256
FDS_PER_SOCKET: Final = 2
#: A failure to open a socket (the context's or the process's limit) is logged at most
#: once per this many seconds, with how many there were since (all are counted).
SOCKET_ERROR_LOG_INTERVAL: Final = 10.0

Role = Literal["router", "dealer", "pub", "sub"]
#: Called with every new socket, its role and (for a connecting socket) the public key
#: expected of the peer, before it binds or connects: where CURVE is applied.
SocketHook = Callable[[zmq.Socket[bytes], Role, bytes | None], None]
FrameHandler = Callable[[list[bytes]], None]

_ZMQ_EVENT_NAMES: Final = {
    zmq.EVENT_CONNECTED: "connected",
    zmq.EVENT_CONNECT_DELAYED: "connect_delayed",
    zmq.EVENT_CONNECT_RETRIED: "connect_retried",
    zmq.EVENT_DISCONNECTED: "disconnected",
    zmq.EVENT_ACCEPTED: "accepted",
    zmq.EVENT_CLOSED: "closed",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshake_succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failed_protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake_failed_auth",
}
_MONITORED: Final = sum(_ZMQ_EVENT_NAMES)


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """A socket monitor event: ``kind`` is one of the names above, ``endpoint`` the peer."""

    kind: str
    endpoint: str
    value: int


@dataclass(frozen=True, slots=True)
class PumpStatistics:
    """Counters of one socket."""

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    #: Messages that could not be sent (unroutable, peer at high-water mark, expired).
    dropped_out: int


class Pump:
    """The owner of one zmq socket: reads it from a loop callback, sends what had to wait."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        on_message: FrameHandler | None,
        *,
        name: str,
        wait_when_full: bool,
        send_timeout: float,
        on_dropped: Callable[[list[bytes], str], None] | None = None,
        read_batch: int = READ_BATCH,
    ) -> None:
        self.sock = sock
        # A ROUTER's messages start with the peer's routing id: read as bytes, no Frame
        self._recv = _recv_routed if sock.type == zmq.ROUTER else _recv
        # sock.get(EVENTS) bound once: the ``sock.events`` attribute costs 3x as much,
        # a method wrapping the call one Python call more (measured)
        self._events = cast(Callable[[], int], functools.partial(sock.get, _EVENTS))
        self._batch_size = read_batch
        self.name = name
        self._on_message = on_message
        self._on_dropped = on_dropped
        # ROUTERs drop at once when a peer is unreachable or full (one slow peer must not
        # stall replies to all others); DEALERs wait up to send_timeout for their one peer.
        self._wait_when_full = wait_when_full
        self._send_timeout = send_timeout
        self._outbox: collections.deque[tuple[list[bytes], float]] = collections.deque()
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: While a read batch runs: what its handlers sent, sent in bursts (_read_batch).
        self._held: list[list[bytes]] | None = None
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self.dropped_out = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = cast(int, self.sock.fd)
        self._loop.add_reader(self._fd, self._service)
        self._soon()  # messages may already be waiting: the fd only signals changes

    def send(self, frames: list[bytes]) -> None:
        """Send ``frames`` or queue them; never blocks. Counted as dropped if it cannot go."""
        if self._held is not None:
            self._held.append(frames)  # a reply from a read batch's handler: sent at its end
        elif self._send_now(frames):
            # libzmq may process its commands inside the send, which resets the fd's
            # edge: a message waiting now would not wake us. Check EVENTS once in the
            # next loop turn instead of after every send: a turn in which many tasks
            # reply pays one check, not one each (each costs syscalls in libzmq).
            self._soon()

    def probe(self, frames: list[bytes]) -> bool:
        """Send ``frames`` (a ROUTER's: routing id first) now, ahead of anything queued;
        False only when libzmq holds no connection for that routing id (EHOSTUNREACH,
        with ROUTER_MANDATORY), i.e. the peer is gone. A full pipe counts as there."""
        if self._closed:
            return True
        try:
            _send(self.sock, frames)
        except zmq.Again:
            return True
        except zmq.ZMQError as exc:
            return exc.errno != errno.EHOSTUNREACH
        self.messages_out += 1
        self.bytes_out += sum(map(len, frames))
        return True

    def _send_now(self, frames: list[bytes]) -> bool:
        """Hand ``frames`` to libzmq if nothing is queued before them, else queue them;
        True if libzmq took them."""
        if self._closed:
            self._drop(frames, "socket closed")
            return False
        if not self._outbox:
            # Fast path: hand the frames to libzmq now, from the caller (same thread, so
            # safe); nothing waits for a loop turn.
            try:
                _send(self.sock, frames)
            except zmq.Again:
                pass  # full or not connected: queue it; the pump retries or drops
            except zmq.ZMQError as exc:
                self._drop(frames, _reason(exc))
                return False
            else:
                self.messages_out += 1
                self.bytes_out += sum(map(len, frames))
                return True
        self._outbox.append((frames, time.monotonic() + self._send_timeout))
        self._flushed.clear()
        self._soon()
        return False

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been handed to libzmq (or dropped); False
        after ``timeout`` seconds. A cancellation is kept even when it comes as the
        outbox drains (:func:`wait_set`; ``asyncio.wait_for`` loses it on Python 3.11)."""
        return await wait_set(self._flushed, timeout)

    def statistics(self) -> PumpStatistics:
        return PumpStatistics(
            self.messages_in, self.messages_out, self.bytes_in, self.bytes_out, self.dropped_out
        )

    async def aclose(self, linger: float = 0.0) -> None:
        """Stop servicing and close the socket; libzmq may spend ``linger`` seconds
        delivering what it already holds (in the background of ``Context.term``)."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
        while self._outbox:
            self._drop(self._outbox.popleft()[0], "socket closed")
        self._flushed.set()
        self.sock.close(linger=int(linger * 1000))

    # servicing, from loop callbacks

    def _soon(self) -> None:
        if not self._scheduled and self._loop is not None and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._service)

    def _service(self) -> None:
        """Read a batch, send what waits, and make sure the next change wakes us."""
        self._scheduled = False
        if self._closed:
            return
        events = self._events()
        if not events & _POLLIN and not self._outbox:
            return  # nothing ran since that read: it is the current state, the fd is armed
        if events & _POLLIN:
            events = self._read_batch()
        if self._outbox and not self._closed:
            self._write_ready()
            events = self._events()
        if self._closed:
            return
        # Reading EVENTS (here or in a send) processes libzmq's pending commands and
        # resets the fd, so a message or a newly attached pipe (POLLOUT for a waiting
        # DEALER) would otherwise wake no one: ``events`` were read after the last send.
        if events & _POLLIN or (self._outbox and events & _POLLOUT):
            self._soon()  # more waits (a full batch): let timers and other sockets run first
        elif self._outbox:  # blocked on a full or unconnected pipe: retry at its expiry
            if self._timer is not None:
                self._timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(self._outbox[0][1] + 0.001, self._service)

    def _read_batch(self) -> int:
        """Read up to ``read_batch`` messages and send what their handlers sent, in
        bursts (libzmq's I/O thread is woken once, not once a reply): after the first
        message, and after the last. Returns EVENTS as read after the last send."""
        sock = self.sock
        recv = self._recv
        handler = self._on_message
        held: list[list[bytes]] = []
        self._held = held
        events = -1  # EVENTS as read after the last send; -1: not read since
        try:
            for i in range(self._batch_size):
                if self._closed:  # a handler closed this socket
                    break
                if i == 1:
                    # One message a wake-up is a quiet socket's usual case: its answer
                    # goes now, then EVENTS (0.9 us) says whether another waits, where
                    # a recv finding nothing raises zmq.Again (2.7 us). Under load,
                    # Again ends the batch.
                    self._release(held)
                    events = self._events()
                    if not events & _POLLIN:
                        break
                    events = -1
                try:
                    frames = recv(sock)
                except zmq.Again:
                    break
                self.messages_in += 1
                self.bytes_in += sum(map(len, frames))
                if handler is None:
                    continue
                try:
                    handler(frames)
                except Exception:  # a handler bug must not kill the socket
                    log.exception("%s: message handler failed", self.name)
        finally:
            self._held = None
            if self._release(held):
                events = -1
        if self._closed:
            return 0
        return self._events() if events < 0 else events

    def _release(self, held: list[list[bytes]]) -> bool:
        """Send what handlers sent during a read batch; True if there was anything."""
        if not held:
            return False
        for frames in held:
            self._send_now(frames)
        held.clear()
        return True

    def _write_ready(self) -> None:
        """Send what can go now; leave the rest queued if this DEALER's pipe is not ready."""
        sock = self.sock
        outbox = self._outbox
        while outbox:
            frames, expires = outbox[0]
            try:
                _send(sock, frames)
            except zmq.Again:
                if self._wait_when_full and time.monotonic() < expires:
                    return
                outbox.popleft()
                self._drop(frames, "peer not reachable or at its high-water mark")
                continue
            except zmq.ZMQError as exc:
                outbox.popleft()
                self._drop(frames, _reason(exc))
                continue
            outbox.popleft()
            self.messages_out += 1
            self.bytes_out += sum(map(len, frames))
        self._flushed.set()

    def _drop(self, frames: list[bytes], reason: str) -> None:
        self.dropped_out += 1
        if self._on_dropped is not None:
            try:
                self._on_dropped(frames, reason)
            except Exception:
                log.exception("%s: drop handler failed", self.name)


def make_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    kind: int,
    role: Role,
    limits: Limits,
    hook: SocketHook | None,
    peer_key: bytes | None = None,
) -> zmq.Socket[bytes]:
    """The one place sockets are made: common options (a connecting socket's heartbeats
    too: a node's DEALERs and SUB, the blocking client's DEALER), then the security hook."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, limits.send_hwm)
    sock.setsockopt(zmq.RCVHWM, limits.recv_hwm)
    # A backstop only: the codec refuses oversize messages with a clear error first.
    # Twice the limit, so a slightly-too-big message still gets a readable error back.
    sock.setsockopt(zmq.MAXMSGSIZE, 2 * limits.max_message_size + 4096)
    if role in ("dealer", "sub"):
        _keep_alive(sock)
    if hook is not None:
        try:
            hook(sock, role, peer_key)
        except BaseException:
            sock.close(linger=0)
            raise
    return sock


def socket_budget(wanted: int) -> int:
    """How many ZeroMQ sockets this process can afford, at most ``wanted``: first raises
    the soft ``RLIMIT_NOFILE`` toward the hard limit (as far as ``wanted`` sockets need),
    then leaves :data:`FD_RESERVE` descriptors for the rest of the process. libzmq's own
    default (``zmq.MAX_SOCKETS``, 1,023) is far below what the fd limit usually allows,
    so raising the fd limit alone changes nothing; the context is told this figure."""
    need = wanted * FDS_PER_SOCKET + FD_RESERVE
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            target = need if hard == resource.RLIM_INFINITY else min(hard, need)
            if target > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
    except (OSError, ValueError) as exc:  # not allowed here: live with what there is
        log.debug("cannot raise RLIMIT_NOFILE: %s", exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(64, (soft - FD_RESERVE) // FDS_PER_SOCKET))


class Transport:
    """One zmq Context and the sockets of one node.

    The context may hold :attr:`max_sockets` sockets (``limits.max_sockets`` within the
    process's fd budget, :func:`socket_budget`). Opening one more raises
    :class:`TransportError`, counted in :attr:`socket_failures` and logged at most once
    per :data:`SOCKET_ERROR_LOG_INTERVAL`: callers treat it as an unreachable peer.
    """

    def __init__(self, limits: Limits, security: Security | None = None) -> None:
        self._limits = limits
        self._security = security
        self._hook: SocketHook | None = security.apply if security is not None else None
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        #: Sockets this context may hold (set before its first socket, as libzmq requires).
        self.max_sockets = socket_budget(limits.max_sockets)
        self._context.set(zmq.MAX_SOCKETS, self.max_sockets)
        #: Sockets that could not be opened (the limit above, or the process's fds).
        self.socket_failures = 0
        self._unlogged_failures = 0
        self._failure_logged_at = -math.inf
        if security is not None:  # ZAP is per context: one authenticator for all sockets
            security.start(self._context)
        self._pumps: list[Pump] = []
        # Socket pump -> the pump of its monitor socket (monitors are not in _pumps).
        self._monitors: dict[Pump, Pump] = {}
        # Counters of sockets already closed, so node totals never go down.
        self._closed_totals = [0, 0, 0, 0, 0]

    @property
    def closed(self) -> bool:
        return self._context.closed

    @property
    def sockets(self) -> int:
        """ZeroMQ sockets open now (a monitored socket counts three: its monitor is a
        pair of sockets)."""
        return len(self._pumps) + 2 * len(self._monitors)

    def _socket(
        self, kind: int, role: Role, peer_key: bytes | None = None, *, hwm: int | None = None
    ) -> zmq.Socket[bytes]:
        try:
            sock = make_socket(self._context, kind, role, self._limits, self._hook, peer_key)
        except zmq.ZMQError as exc:
            raise self._cannot_open(exc) from None
        if hwm is not None:
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
        return sock

    def _monitor(self, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """A monitor for ``sock`` (two more sockets); on failure ``sock`` is closed."""
        try:
            return sock.get_monitor_socket(_MONITORED)
        except zmq.ZMQError as exc:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            sock.close(linger=0)
            raise self._cannot_open(exc) from None

    def _cannot_open(self, exc: zmq.ZMQError) -> TransportError:
        """Count a socket that could not be opened; log it unless logged lately."""
        self.socket_failures += 1
        self._unlogged_failures += 1
        now = time.monotonic()
        if now - self._failure_logged_at >= SOCKET_ERROR_LOG_INTERVAL:
            log.warning(
                "cannot open a socket: %s (%d time(s) since the last warning; %d open, at most %d)",
                _strerror(exc),
                self._unlogged_failures,
                self.sockets,
                self.max_sockets,
            )
            self._failure_logged_at = now
            self._unlogged_failures = 0
        return TransportError(f"cannot open a socket: {_strerror(exc)}")

    def _pump(
        self,
        sock: zmq.Socket[bytes],
        on_message: FrameHandler | None,
        *,
        name: str,
        wait_when_full: bool = False,
        send_timeout: float = 0.0,
        on_dropped: Callable[[list[bytes], str], None] | None = None,
        read_batch: int = READ_BATCH,
    ) -> Pump:
        pump = Pump(
            sock,
            on_message,
            name=name,
            wait_when_full=wait_when_full,
            send_timeout=send_timeout,
            on_dropped=on_dropped,
            read_batch=read_batch,
        )
        pump.start()
        return pump

    def router(
        self,
        host: str,
        port: int,
        on_message: FrameHandler,
        *,
        on_event: Callable[[MonitorEvent], None] | None = None,
        on_dropped: Callable[[list[bytes], str], None] | None = None,
        hwm: int | None = None,
        keep_alive: bool = False,
    ) -> tuple[Pump, int]:
        """A bound ROUTER for incoming calls; returns it and the port it got. ``hwm``
        replaces the limits' high-water marks (gossip keeps them small). ``keep_alive``:
        ZMTP heartbeats to every connected peer (HEARTBEAT_IVL), so libzmq drops the
        connection of a peer that stopped answering (paused, cut off) after
        HEARTBEAT_TIMEOUT: the callers' check (``Pump.probe``) then finds it gone. The
        TTL in the peers' own PINGs does not do it (libzmq 4.3.5, measured: a paused
        DEALER's connection stayed up 12 s and more; dropped after 4 s with these)."""
        sock = self._socket(zmq.ROUTER, "router", hwm=hwm)
        if keep_alive:
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT)
        # An unroutable reply must raise (and be counted), not vanish silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A peer that reconnects with the same routing id takes over the old pipe.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        monitor = self._monitor(sock) if on_event is not None else None
        try:
            port = self._bind(sock, host, port)
        except TransportError:
            if monitor is not None:
                monitor.close(linger=0)
            raise
        pump = self._pump(sock, on_message, name=f"router:{port}", on_dropped=on_dropped)
        self._pumps.append(pump)
        self._watch(pump, monitor, on_event)
        return pump, port

    def publisher(self, host: str, port: int) -> tuple[Pump, int]:
        """A bound PUB socket for events; returns it and the port it got."""
        sock = self._socket(zmq.PUB, "pub")
        port = self._bind(sock, host, port)
        pump = self._pump(sock, None, name=f"pub:{port}")
        self._pumps.append(pump)
        return pump, port

    def subscriber(self, on_message: FrameHandler) -> Subscriber:
        """A SUB socket that follows publishers as it is told (:class:`Subscriber`)."""
        sock = self._socket(zmq.SUB, "sub")
        # A message may hold a batch of hundreds of events: read a few per loop turn, so
        # subscribers run between them and their queues do not fill up in one callback.
        pump = self._pump(sock, on_message, name="sub", read_batch=SUB_READ_BATCH)
        self._pumps.append(pump)
        return Subscriber(self, pump, self._security is not None and self._security.needs_peer_key)

    def dealer(
        self,
        address: str,
        routing_id: bytes,
        on_message: FrameHandler,
        *,
        send_timeout: float,
        peer_key: bytes | None = None,
        on_event: Callable[[MonitorEvent], None] | None = None,
        on_dropped: Callable[[list[bytes], str], None] | None = None,
        hwm: int | None = None,
    ) -> Pump:
        """A DEALER connected to ``address`` (``peer_key``: the CURVE key it must have).
        Use a fresh one after a peer's death."""
        sock = self._socket(zmq.DEALER, "dealer", peer_key, hwm=hwm)
        # Queue nothing for a connection that is not up: stale calls must never
        # reach a new process that later binds the same port.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        monitor = self._monitor(sock) if on_event is not None else None
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=0)
            raise TransportError(f"cannot connect to {address}: {_strerror(exc)}") from None
        pump = self._pump(
            sock,
            on_message,
            name=f"dealer:{address}",
            wait_when_full=True,
            send_timeout=send_timeout,
            on_dropped=on_dropped,
        )
        self._pumps.append(pump)
        self._watch(pump, monitor, on_event)
        return pump

    def _watch(
        self,
        pump: Pump,
        monitor: zmq.Socket[bytes] | None,
        on_event: Callable[[MonitorEvent], None] | None,
    ) -> None:
        """Feed the monitor socket of ``pump``'s socket to ``on_event``."""
        if monitor is not None and on_event is not None:
            self._monitors[pump] = self._pump(
                monitor, _monitor_handler(on_event), name=f"monitor:{pump.name}"
            )

    async def close_pump(self, pump: Pump, linger: float = 0.0) -> None:
        """Close one socket (and its monitor)."""
        monitor = self._monitors.pop(pump, None)
        if monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                pump.sock.disable_monitor()
            await monitor.aclose()
        if pump in self._pumps:
            self._pumps.remove(pump)
            for i, value in enumerate(_counters(pump)):
                self._closed_totals[i] += value
        await pump.aclose(linger)

    def statistics(self) -> PumpStatistics:
        """Counters summed over every socket this transport ever had (monitors excluded)."""
        totals = list(self._closed_totals)
        for pump in self._pumps:
            for i, value in enumerate(_counters(pump)):
                totals[i] += value
        return PumpStatistics(*totals)

    async def aclose(self, linger: float = 0.0) -> None:
        """Close every socket and end the context, letting libzmq deliver what it
        holds for up to ``linger`` seconds (a goodbye, the last replies)."""
        for pump in list(self._pumps):
            await self.close_pump(pump, linger)
        if self._security is not None:
            self._security.stop()
        # term() blocks until lingering messages are out: keep the loop free meanwhile.
        await asyncio.to_thread(self._context.term)

    @staticmethod
    def _bind(sock: zmq.Socket[bytes], host: str, port: int) -> int:
        endpoint = f"tcp://{host}:{port or '*'}"
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            sock.close(linger=0)
            raise TransportError(f"cannot bind {endpoint}: {_strerror(exc)}") from None
        last = sock.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(last, bytes)
        return int(last.rsplit(b":", 1)[1])


# The backend's send: pyzmq's Socket.send only adds routing_id/group handling (unused
# here) around it, and that wrapper doubles the cost of a send (measured 0.5 -> 0.25 us).
_backend_send: Final = zmq.backend.Socket.send


def _keep_alive(sock: zmq.Socket[bytes]) -> None:
    """ZMTP heartbeats and a bounded connect on a connecting socket (HEARTBEAT_IVL)."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TTL)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT)


def _send(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """send_multipart without blocking, with int flags. ROUTER and DEALER take a message
    whole or not at all, so only the first frame can raise zmq.Again."""
    if len(frames) == 1:  # a DEALER's message
        _backend_send(sock, frames[0], _NOBLOCK)
        return
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _backend_send(sock, frame, _NOBLOCK if i == last else _NOBLOCK_MORE)


def _recv_routed(sock: zmq.Socket[bytes]) -> list[bytes]:
    """:func:`_recv` for a ROUTER: its first frame, the routing id, always has more
    after it, so it is read as bytes (0.7 against 1.3 us a two-frame message)."""
    frames = [sock.recv(_NOBLOCK)]
    frame = sock.recv(_NOBLOCK, copy=False)
    frames.append(frame.bytes)
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def _recv(sock: zmq.Socket[bytes]) -> list[bytes]:
    """recv_multipart without blocking, with int flags. A Frame says whether more
    follow: cheaper than asking the socket for RCVMORE (0.8 vs 1.3 us a frame)."""
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def _counters(pump: Pump) -> tuple[int, int, int, int, int]:
    return (pump.messages_in, pump.messages_out, pump.bytes_in, pump.bytes_out, pump.dropped_out)


def _strerror(exc: zmq.ZMQError) -> str:
    """The error's text without pyzmq's address suffix."""
    return zmq.strerror(exc.errno) if exc.errno is not None else str(exc)


def _reason(exc: zmq.ZMQError) -> str:
    return "no such peer" if exc.errno == errno.EHOSTUNREACH else _strerror(exc)


def _monitor_handler(on_event: Callable[[MonitorEvent], None]) -> FrameHandler:
    def handle(frames: list[bytes]) -> None:
        message = parse_monitor_message(frames)
        kind = _ZMQ_EVENT_NAMES.get(zmq.Event(message["event"]))
        if kind is not None:
            endpoint = message["endpoint"]
            text = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else endpoint
            on_event(MonitorEvent(kind, str(text), int(message["value"])))

    return handle


class Subscriber:
    """One SUB socket connected to many PUB sockets (each a member's)."""

    def __init__(self, transport: Transport, pump: Pump, per_node_keys: bool) -> None:
        self._transport = transport
        self._pump = pump
        self._per_node_keys = per_node_keys

    def connect(self, address: str, public_key: str | None) -> None:
        """Follow the PUB at ``address``; with per-node keys, ``public_key`` (Z85 text) is
        the key it must prove (libzmq takes the key set at the time of each connect)."""
        sock = self._pump.sock
        try:
            if self._per_node_keys:
                if public_key is None:
                    log.debug("sub: %s has no public key; not followed", address)
                    return
                sock.setsockopt(zmq.CURVE_SERVERKEY, public_key.encode())
            sock.connect(address)
        except zmq.ZMQError as exc:
            log.debug("sub: cannot follow %s: %s", address, _strerror(exc))

    def disconnect(self, address: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._pump.sock.disconnect(address)

    def subscribe(self, prefix: str) -> None:
        self._pump.sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())

    def unsubscribe(self, prefix: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._pump.sock.setsockopt(zmq.UNSUBSCRIBE, prefix.encode())

    async def aclose(self) -> None:
        await self._transport.close_pump(self._pump)


class BlockingDealer:
    """A DEALER for one thread that blocks (``mesh.sync``): no loop, no hand-offs.

    The blocking client's fast path: a call is one ``send`` and one blocking ``recv``
    (bounded by ``RCVTIMEO``) in the caller's own thread. Same options as a node's
    DEALER.
    """

    def __init__(
        self,
        address: str,
        routing_id: bytes,
        limits: Limits,
        security: Security | None = None,
        peer_key: bytes | None = None,
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
        hook = security.apply if security is not None else None
        try:
            self._sock = make_socket(self._context, zmq.DEALER, "dealer", limits, hook, peer_key)
        except BaseException:
            self._context.term()
            raise
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self._rcvtimeo = -1
        self._poll_out: list[tuple[zmq.Socket[bytes], int]] = [(self._sock, _POLLOUT)]
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot connect to {address}: {_strerror(exc)}") from None

    def send(self, frame: bytes, timeout: float) -> bool:
        """Send one frame, waiting up to ``timeout`` for the connection; False if it could not."""
        # Try at once first: connected with room in the pipe is the usual case, and a
        # poll costs ~2 us. zmq_poll rather than Socket.poll: no Poller object (~1 us less).
        try:
            _backend_send(self._sock, frame, _NOBLOCK)
            return True
        except zmq.Again:
            pass
        if zmq.zmq_poll(self._poll_out, max(0, int(timeout * 1000))):
            try:
                _backend_send(self._sock, frame, _NOBLOCK)
                return True
            except zmq.Again:
                return False
        return False

    def recv(self, timeout: float | None) -> bytes | None:
        """The next frame, or None when ``timeout`` passes. Frames are returned one by
        one: a node sends one-frame messages; the frames of anything else fail to
        decode one by one."""
        # A blocking recv bounded by RCVTIMEO, set only when the wait changes (a script's
        # calls mostly share one timeout): one libzmq call where a zmq_poll, then a recv,
        # cost two; and bytes, not a Frame (cheaper for small messages, measured).
        wait = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        if wait != self._rcvtimeo:
            self._sock.setsockopt(zmq.RCVTIMEO, wait)
            self._rcvtimeo = wait
        try:
            return self._sock.recv(0)
        except zmq.Again:
            return None

    def close(self, linger: float = 0.0) -> None:
        """Close the socket and its context, waiting up to ``linger`` s to deliver."""
        self._sock.close(linger=int(linger * 1000))
        self._context.term()
