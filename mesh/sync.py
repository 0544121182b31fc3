"""The blocking API for scripts: ``with mesh.sync.connect(address) as c: c.call(...)``.

A :class:`Client` is a short-lived mesh member that offers nothing: it handshakes
with one node and calls its services from the caller's thread over a blocking
DEALER (no event loop, no thread hand-off: the fast path for scripts). It shares
the codec, the handshake and the error mapping with :class:`mesh.Node`. One
client per thread; it is not thread-safe.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from ._config import Config
from ._errors import CallTimeout, ConnectTimeout, ProtocolError, SessionLost, error_from_wire
from ._io.security import Security
from ._io.transport import BlockingDealer
from ._rpc.outbound import DEFAULT_WINDOW, Outgoing
from ._wire.codec import (
    Cancel,
    Codec,
    Credit,
    Error,
    Goodbye,
    Message,
    Reply,
    StreamEnd,
    StreamItem,
    Welcome,
)
from ._wire.handshake import PeerInfo, accept_welcome, hello, parse_address

__all__ = ["Client", "SyncStream", "connect"]


def connect(
    address: str, *, config: Config | None = None, timeout: float | None = None, **overrides: Any
) -> Client:
    """Handshake with the node at ``address`` and return a blocking :class:`Client`.

    Settings come from ``config`` (default ``Config.from_env()``) with ``overrides``,
    e.g. ``connect("tcp://10.0.0.5:7000", mesh="prod")``. Raises the same errors as
    :meth:`mesh.Node.connect`.
    """
    base = config if config is not None else Config.from_env()
    return Client(address, base.replace(**overrides) if overrides else base, timeout)


class Client:
    """Blocking calls to the services of one node. Use :func:`connect` to make one."""

    def __init__(self, address: str, config: Config, timeout: float | None = None) -> None:
        endpoint, peer_key = parse_address(address)
        self.config = config
        self.address = address
        self.id = secrets.token_hex(16)
        self._codec = Codec(config.limits)
        self._ids = itertools.count(1)
        security = (
            Security(secret_file=config.secret_file, keys_dir=config.keys_dir)
            if config.secret_file is not None or config.keys_dir is not None
            else None
        )
        self._dealer = BlockingDealer(
            endpoint, bytes.fromhex(self.id) + os.urandom(4), config.limits, security, peer_key
        )
        try:
            self.peer: PeerInfo = self._handshake(
                address, config.timings.connect_timeout if timeout is None else timeout
            )
        except BaseException:
            self._dealer.close()
            raise
        self._closed = False

    def _handshake(self, address: str, timeout: float) -> PeerInfo:
        ref = next(self._ids)
        deadline = time.monotonic() + timeout
        frame = self._codec.encode(hello(ref, self.id, self.config.name, self.config.mesh, {}))
        if self._dealer.send(frame, timeout):
            while (answer := self._next(deadline)) is not None:
                if isinstance(answer, Welcome | Error) and answer.ref == ref:
                    return accept_welcome(answer, address, self.config.mesh)
        raise ConnectTimeout(f"no answer from {address} within {timeout:g} s", address=address)

    def call(self, target: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``"service.method"`` and return its result (errors as in :meth:`Node.call`)."""
        deadline, trace_id = Outgoing.inherit(
            self.config.timings.call_timeout if timeout is None else timeout
        )
        try:
            return self._call_once(target, args, kwargs, deadline, trace_id)
        except SessionLost:
            # The node had ended our session (it declared us gone) and refused the call
            # before it ran: introduce ourselves again and send it once more.
            self.peer = self._handshake(self.address, max(0.0, deadline - time.monotonic()))
            return self._call_once(target, args, kwargs, deadline, trace_id)

    def _call_once(
        self, target: str, args: Any, kwargs: dict[str, Any], deadline: float, trace_id: str
    ) -> Any:
        call_id = next(self._ids)
        remaining_ms = math.ceil((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:  # an inherited deadline already passed: do not even send
            raise self._timeout(target, call_id)
        frame = self._codec.encode_call(
            call_id, target, list(args), kwargs, remaining_ms, 0, trace_id
        )
        if not self._dealer.send(frame, max(0.0, deadline - time.monotonic())):
            raise self._timeout(target, call_id)
        while (answer := self._next(deadline)) is not None:
            if type(answer) is Reply and answer.call_id == call_id:
                return answer.result
            if type(answer) is Error and answer.ref == call_id:
                raise self._error(answer, target, call_id)
            # anything else: a late answer to an earlier call that timed out
        raise self._timeout(target, call_id)

    def stream(
        self, target: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> SyncStream:
        """Items of a streaming method: ``with c.stream(...) as items: for x in items``.

        ``timeout`` bounds the wait for each item; leaving the block stops the producer.
        """
        timeout = self.config.timings.call_timeout if timeout is None else timeout
        _, trace_id = Outgoing.inherit(timeout)
        call_id = next(self._ids)
        frame = self._codec.encode_call(
            call_id, target, list(args), kwargs, None, DEFAULT_WINDOW, trace_id
        )
        if not self._dealer.send(frame, timeout):
            raise self._timeout(target, call_id)
        return SyncStream(self, target, call_id, timeout)

    def close(self) -> None:
        """Close the connection (at once: nothing is left to deliver)."""
        if not self._closed:
            self._closed = True
            # Say goodbye, so the node forgets this short-lived client at once.
            self._dealer.send(self._codec.encode(Goodbye(self.id)), 0.0)
            self._dealer.close(linger=0.1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # shared with SyncStream

    def _next(self, deadline: float | None) -> Message | None:
        """The next valid message before ``deadline`` (bad frames are skipped)."""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            frame = self._dealer.recv(left)
            if frame is None:
                return None
            try:
                return self._codec.decode(frame)
            except ProtocolError:
                continue

    def _send(self, message: Message) -> None:
        self._dealer.send(self._codec.encode(message), 0.0)

    def _error(self, answer: Error, target: str, call_id: int) -> Exception:
        service, _, method = target.rpartition(".")
        return error_from_wire(
            answer.code, answer.message, answer.type, answer.traceback,
            service=service, method=method, peer=self.peer.name, call_id=call_id,
        )  # fmt: skip

    def _timeout(self, target: str, call_id: int) -> CallTimeout:
        service, _, method = target.rpartition(".")
        return CallTimeout(
            f"{target}: no answer before the deadline",
            service=service, method=method, peer=self.peer.name, call_id=call_id,
        )  # fmt: skip


class SyncStream:
    """The items of a streaming call, for a blocking caller."""

    def __init__(self, client: Client, target: str, call_id: int, timeout: float) -> None:
        self._client = client
        self.target = target
        self._call_id = call_id
        self._timeout = timeout
        self._consumed = 0
        self._done = False

    def __iter__(self) -> Iterator[Any]:
        while not self._done:
            answer = self._client._next(time.monotonic() + self._timeout)
            if answer is None:
                self.close()
                raise CallTimeout(f"{self.target}: no item within {self._timeout:g} s")
            if _ref(answer) != self._call_id:
                continue
            if isinstance(answer, StreamItem):
                self._consumed += 1
                if self._consumed * 2 >= DEFAULT_WINDOW:
                    self._client._send(Credit(self._call_id, self._consumed))
                    self._consumed = 0
                yield answer.item
            elif isinstance(answer, StreamEnd):
                self._done = True
            elif isinstance(answer, Error):
                self._done = True
                raise self._client._error(answer, self.target, self._call_id)

    def close(self) -> None:
        """Stop the stream; the producer is told to stop if it has not finished."""
        if not self._done:
            self._done = True
            self._client._send(Cancel(self._call_id))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _ref(message: Message) -> int | None:
    if isinstance(message, Error):
        return message.ref
    return getattr(message, "call_id", None)
