"""Outgoing calls: provider choice, call ids, deadlines, cancellation and streams.

A call is one CALL message on the DEALER of the chosen peer and one REPLY or
ERROR back, matched by call id and checked against the connection it went out
on. Deadlines are timers on the loop (no task per call; one timer for the calls
whose deadlines come in order); a cancelled caller sends CANCEL. Streams pull
with credit: the caller grants ``window`` items at first and grants more as it
consumes them, so neither side buffers more than ``window`` items.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from random import getrandbits
from typing import Any, Final

from .._errors import CallTimeout, MeshError, ProtocolError, Unavailable, error_from_wire
from .._io.transport import MonitorEvent, Pump
from .._util.deadlines import DeadlineQueue
from .._util.resource import AsyncResource
from .._wire.codec import Cancel, Codec, Credit, Error, Reply, StreamEnd, StreamItem
from .._wire.handshake import PeerInfo
from .context import CALL_CONTEXT

__all__ = ["Connection", "Outgoing", "Stream"]

#: Stream items a caller takes before it must grant more.
DEFAULT_WINDOW: Final = 64


@dataclass(slots=True, eq=False)
class Connection:
    """This node's DEALER to one peer, and what the handshake told us about the peer."""

    pump: Pump
    address: str
    peer: PeerInfo | None = None
    last_event: MonitorEvent | None = None
    #: Calls sent on this connection and not answered yet.
    outstanding: int = 0


@dataclass(slots=True, eq=False)
class _Pending:
    connection: Connection
    target: str
    future: asyncio.Future[Any] | None = None
    timer: asyncio.TimerHandle | None = None
    stream: Stream | None = None


class Stream(AsyncResource):
    """Items of a streaming call: ``async with node.stream(...) as items: async for x in items``.

    Leaving the block, ``break`` or :meth:`aclose` tells the producer to stop.
    ``timeout`` bounds the wait for each item, not the whole stream.
    """

    def __init__(
        self,
        target: str,
        window: int,
        timeout: float | None,
        grant: Callable[[int], object],
        cancel: Callable[[], None],
    ) -> None:
        self.target = target
        self._window = window
        self._timeout = timeout
        self._grant = grant
        self._cancel = cancel
        self._items: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None
        self._consumed = 0
        self._closed = False

    # fed by the client

    def deliver(self, item: Any) -> bool:
        """Buffer an item; False if that is more than the credit granted (a faulty peer)."""
        if len(self._items) >= self._window:
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        self._ready.set()

    # used by the caller

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._done or self._closed:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._ready.clear()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._ready.wait()
            except TimeoutError:
                await self.aclose()
                raise CallTimeout(f"{self.target}: no item within {self._timeout:g} s") from None
        item = self._items.popleft()
        self._consumed += 1
        if self._consumed * 2 >= self._window and not self._done:
            self._grant(self._consumed)
            self._consumed = 0
        return item

    async def aclose(self) -> None:
        """Stop the stream; the producer is told to stop if it has not finished."""
        if not self._closed:
            self._closed = True
            if not self._done:
                self._cancel()
            self._items.clear()


class RoutedStream(AsyncResource):
    """A stream whose provider is chosen (and connected to) when it is first used;
    used like :class:`Stream`."""

    def __init__(self, open_stream: Callable[[], Awaitable[Stream]]) -> None:
        self._open = open_stream
        self._stream: Stream | None = None
        self._closed = False

    async def _get(self) -> Stream:
        if self._stream is None:
            self._stream = await self._open()
        return self._stream

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        return await (await self._get()).__anext__()

    async def aclose(self) -> None:
        self._closed = True
        if self._stream is not None:
            await self._stream.aclose()

    async def start(self) -> None:
        """Choose and connect the provider now (``async with`` does)."""
        await self._get()


class Outgoing:
    """The calls one node has sent and not yet seen answered."""

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        # One timer for the call ids whose deadlines come in order (calls sharing a
        # timeout); a deadline earlier than the last queued gets a timer of its own.
        self._deadlines = DeadlineQueue(self._expire, self._pending.__contains__)
        #: Answers that matched no call of their connection (late, forged, misrouted).
        self.dropped_answers = 0

    def __len__(self) -> int:
        return len(self._pending)

    @staticmethod
    def inherit(timeout: float) -> tuple[float, str]:
        """Deadline (monotonic) and trace id for a new call, inherited inside a handler."""
        deadline = time.monotonic() + timeout
        parent = CALL_CONTEXT.get()
        if parent is None or not parent.trace_id:
            # 64 random bits as 16 hex digits; from random, not os.urandom: no system
            # call a call (a trace id identifies, it guards nothing)
            return deadline, f"{getrandbits(64):016x}"
        if parent.deadline is not None and parent.deadline < deadline:
            deadline = parent.deadline
        return deadline, parent.trace_id

    async def call(
        self,
        connection: Connection,
        target: str,
        args: Any,
        kwargs: dict[str, Any],
        deadline: float,
        trace_id: str,
        attempt: int = 1,
    ) -> Any:
        """Send a CALL on ``connection`` and wait for its answer until ``deadline``."""
        call_id = next(self._ids)
        # Rounded up, so the callee's deadline is never before ours: our own timer
        # decides, and the caller always sees its own CallTimeout.
        remaining_ms = math.ceil((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:  # an inherited deadline already passed: do not even send
            service, _, method = target.rpartition(".")
            raise CallTimeout(
                f"{target}: the deadline passed before the call was made",
                service=service,
                method=method,
                call_id=call_id,
            )
        frame = self._codec.encode_call(
            call_id, target, list(args), kwargs, remaining_ms, 0, trace_id, attempt
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = _Pending(connection, target, future)
        if not self._deadlines.add(loop, deadline, call_id):
            pending.timer = loop.call_at(deadline, self._expire, call_id)
        self._pending[call_id] = pending
        connection.outstanding += 1
        connection.pump.send([frame])
        try:
            return await future
        except asyncio.CancelledError:
            if self._pending.pop(call_id, None) is not None:
                self._settled(pending)
                connection.pump.send([self._codec.encode(Cancel(call_id))])
            raise

    def stream(
        self,
        connection: Connection,
        target: str,
        args: Any,
        kwargs: dict[str, Any],
        timeout: float | None,
        trace_id: str,
        window: int = DEFAULT_WINDOW,
    ) -> Stream:
        """Send a streaming CALL granting ``window`` items; items arrive in the Stream."""
        call_id = next(self._ids)
        send = connection.pump.send
        encode = self._codec.encode

        def cancel() -> None:
            if self._pending.pop(call_id, None) is not None:
                connection.outstanding -= 1
                send([encode(Cancel(call_id))])

        stream = Stream(
            target,
            window,
            timeout,
            grant=lambda n: send([encode(Credit(call_id, n))]),
            cancel=cancel,
        )
        self._pending[call_id] = _Pending(connection, target, stream=stream)
        connection.outstanding += 1
        send([self._codec.encode_call(call_id, target, list(args), kwargs, None, window, trace_id)])
        return stream

    def on_message(self, connection: Connection, message: Any) -> None:
        """An answer arrived on ``connection``: settle the call it belongs to."""
        call_id = message.call_id if not isinstance(message, Error) else message.ref
        pending = self._pending.get(call_id)
        if pending is None or pending.connection is not connection:
            self.dropped_answers += 1  # late (timed out, cancelled), forged or misrouted
            return
        is_stream = pending.stream is not None
        if isinstance(message, StreamItem) and is_stream:
            assert pending.stream is not None
            if not pending.stream.deliver(message.item):
                self._violation(call_id, pending, "sent stream items beyond its credit")
            return
        if isinstance(message, StreamItem | StreamEnd) != is_stream and not isinstance(
            message, Error
        ):
            kind = type(message).__name__
            self._violation(
                call_id, pending, f"answered a {'stream' if is_stream else 'call'} with {kind}"
            )
            return
        del self._pending[call_id]
        self._settled(pending)
        if isinstance(message, Reply):
            outcome: Any = message.result
            failed = False
        elif isinstance(message, StreamEnd):
            outcome, failed = None, False
        else:
            service, _, method = pending.target.rpartition(".")
            peer = connection.peer.name if connection.peer else connection.address
            outcome = error_from_wire(
                message.code,
                message.message,
                message.type,
                message.traceback,
                service=service,
                method=method,
                peer=peer,
                call_id=call_id,
            )
            failed = True
        if pending.stream is not None:
            pending.stream.finish(outcome if failed else None)
        elif pending.future is not None and not pending.future.done():
            if failed:
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def fail_connection(
        self,
        connection: Connection,
        reason: str,
        error: type[Unavailable] = Unavailable,
        after: int = 0,
    ) -> None:
        """The peer is gone: fail every call that waits on it with ``error`` (retryable);
        with ``after``, only the calls sent after call ``after``."""
        for call_id, pending in list(self._pending.items()):
            if pending.connection is connection and call_id > after:
                del self._pending[call_id]
                service, _, method = pending.target.rpartition(".")
                self._fail(
                    pending,
                    call_id,
                    error(
                        f"{pending.target}: {reason}",
                        service=service,
                        method=method,
                        peer=connection.peer.name if connection.peer else connection.address,
                        call_id=call_id,
                    ),
                )

    def fail_all(self, reason: str) -> None:
        for call_id, pending in list(self._pending.items()):
            del self._pending[call_id]
            self._fail(pending, call_id, MeshError(reason))
        self._deadlines.close()

    def _violation(self, call_id: int, pending: _Pending, what: str) -> None:
        """The peer broke the protocol for this call: fail it and tell the peer to stop."""
        del self._pending[call_id]
        peer = pending.connection.peer.name if pending.connection.peer else ""
        self._fail(pending, call_id, ProtocolError(f"{pending.target}: peer {peer!r} {what}"))
        pending.connection.pump.send([self._codec.encode(Cancel(call_id))])

    def _expire(self, call_id: int) -> None:
        pending = self._pending.pop(call_id, None)
        if pending is not None:
            service, _, method = pending.target.rpartition(".")
            self._fail(
                pending,
                call_id,
                CallTimeout(
                    f"{pending.target}: no answer before the deadline",
                    service=service,
                    method=method,
                    call_id=call_id,
                    peer=pending.connection.peer.name if pending.connection.peer else "",
                ),
            )

    def _fail(self, pending: _Pending, call_id: int, error: BaseException) -> None:
        self._settled(pending)
        if pending.stream is not None:
            pending.stream.finish(error)
        elif pending.future is not None and not pending.future.done():
            pending.future.set_exception(error)

    def _settled(self, pending: _Pending) -> None:
        pending.connection.outstanding -= 1
        if pending.timer is not None:
            pending.timer.cancel()
        elif pending.stream is None:
            self._deadlines.finished()  # its deadline was queued
