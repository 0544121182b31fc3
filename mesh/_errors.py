"""The one exception tree of mesh.

    MeshError
    ├── ConfigError               a bad setting; names the variable or field
    ├── ProtocolError             bytes that are not a valid mesh message
    ├── RecordTooLarge            this node's catalog record would pass its size limit
    ├── Reject                    a job handler refuses a job for good: no retries
    ├── TransportError            sockets, addresses, peers
    │   └── ConnectError          the handshake with a peer did not succeed
    │       ├── ConnectTimeout    no answer in time (also a TimeoutError)
    │       ├── WrongMesh         the peer belongs to another mesh
    │       ├── IncompatibleVersion  no protocol version in common
    │       └── AuthenticationFailed  the CURVE handshake failed (keys, secret)
    └── CallError                 a call did not return a result
        ├── CallTimeout           its deadline passed (also a TimeoutError)
        ├── NoProvider            nobody offers the service
        ├── UnknownMethod         the service has no such method (lists those it has)
        ├── Overloaded            the service is at its limit and queue (retryable)
        ├── Unavailable           the provider is shutting down (retryable)
        └── RemoteError           the handler raised; carries the remote type,
                                  message and traceback text

Errors that cross the wire travel as ``(code, message, type, traceback)``;
:func:`error_from_wire` rebuilds the matching class on the receiving side.
"""

from __future__ import annotations

import traceback as _traceback
from typing import Any

__all__ = [
    "AuthenticationFailed",
    "CallError",
    "CallTimeout",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "IncompatibleVersion",
    "InvalidTopic",
    "MeshError",
    "NoMeshFound",
    "NoProvider",
    "Overloaded",
    "ProtocolError",
    "ProviderLost",
    "RecordTooLarge",
    "Reject",
    "RemoteError",
    "SessionLost",
    "TransportError",
    "Unavailable",
    "UnknownMethod",
    "WrongMesh",
]


class MeshError(Exception):
    """Base class of every error that mesh raises on purpose."""

    #: Stable, short code used on the wire and in ``--json`` output.
    code: str = "error"


class ConfigError(MeshError, ValueError):
    """A configuration value is missing or invalid; the message names it."""

    code = "config"


class ProtocolError(MeshError):
    """Bytes that are not a valid mesh message (or that may not be sent).

    ``ref`` is the call id (or HELLO ref) of the bad message when it could be read.
    """

    code = "protocol"
    ref: int = 0


class RecordTooLarge(MeshError, ValueError):
    """This node's catalog record would be ``size`` encoded bytes, more than ``limit``:
    refused when a service is registered (or the listing otherwise changes)."""

    code = "record_too_large"

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class Reject(MeshError):
    """Raised by a handler running a job of a durable queue: the job cannot succeed
    (bad input, ...), so it goes to the dead letters at once, without further attempts."""

    code = "rejected"


class InvalidTopic(MeshError, ValueError):
    """A topic or prefix that cannot be used: empty, too long, or reserved (``$mesh.``)."""

    code = "invalid_topic"


class TransportError(MeshError):
    """A socket, address or peer problem."""

    code = "transport"


class ConnectError(TransportError):
    """The handshake with ``address`` did not succeed."""

    code = "connect"

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class ConnectTimeout(ConnectError, TimeoutError):
    """No WELCOME from the peer within the timeout."""

    code = "connect_timeout"


class WrongMesh(ConnectError):
    """The peer is a node of another mesh."""

    code = "wrong_mesh"


class IncompatibleVersion(ConnectError, ProtocolError):
    """The two sides have no protocol version in common."""

    code = "incompatible_version"


class AuthenticationFailed(ConnectError):
    """The CURVE security handshake failed: wrong secret, key not admitted, wrong peer key."""

    code = "auth_failed"


class NoMeshFound(ConnectError):
    """No node of the mesh answered: no seed was reachable, and zeroconf found none."""

    code = "no_mesh"


class CallError(MeshError):
    """A call did not produce a result. Carries what is known of the call."""

    code = "call"
    #: True when the same call may succeed if tried again (elsewhere or later).
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        method: str = "",
        peer: str = "",
        call_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.method = method
        self.peer = peer
        self.call_id = call_id


class CallTimeout(CallError, TimeoutError):
    """The call's deadline passed before a result arrived."""

    code = "timeout"


class NoProvider(CallError):
    """No alive node offers the service."""

    code = "no_provider"


class UnknownMethod(CallError):
    """The service exists but has no such method; the message lists its methods."""

    code = "unknown_method"


class Overloaded(CallError):
    """The service's concurrency limit and queue are full; try again later or elsewhere."""

    code = "overloaded"
    retryable = True


class Unavailable(CallError):
    """The provider is shutting down and takes no new calls."""

    code = "unavailable"
    retryable = True


class ProviderLost(Unavailable):
    """The provider became suspect or died (or left) while the call was in flight:
    the call failed at once, not at its deadline. Idempotent methods are retried on
    another provider by ``node.call``; others may have run, or not."""

    code = "provider_lost"


class SessionLost(Unavailable):
    """The listener has no session for this connection: it declared this caller gone (a
    membership verdict it has not taken back yet), ended an idle session
    (``timings.session_idle``) or lost its state. The call was refused before it ran;
    ``node.call`` opens a fresh connection and sends it once more (``mesh.sync`` shakes
    hands again on the same one)."""

    code = "no_session"


class RemoteError(CallError):
    """The remote handler raised; ``remote_type`` and ``remote_traceback`` say what."""

    code = "remote"

    def __init__(
        self,
        message: str,
        *,
        remote_type: str = "",
        remote_traceback: str = "",
        service: str = "",
        method: str = "",
        peer: str = "",
        call_id: int | None = None,
    ) -> None:
        super().__init__(message, service=service, method=method, peer=peer, call_id=call_id)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.remote_type}: {text}" if self.remote_type else text


_BY_CODE: dict[str, type[MeshError]] = {
    cls.code: cls
    for cls in (
        MeshError,
        ConfigError,
        ProtocolError,
        RecordTooLarge,
        Reject,
        InvalidTopic,
        TransportError,
        ConnectError,
        ConnectTimeout,
        WrongMesh,
        IncompatibleVersion,
        AuthenticationFailed,
        CallError,
        CallTimeout,
        NoProvider,
        UnknownMethod,
        Overloaded,
        Unavailable,
        ProviderLost,
        SessionLost,
        NoMeshFound,
        RemoteError,
    )
}


def error_to_wire(exc: BaseException) -> tuple[str, str, str, str]:
    """``(code, message, type, traceback)`` for an ERROR message about ``exc``.

    Mesh errors keep their code (a nested call's timeout stays a timeout), except a
    :class:`ProviderLost`, sent as ``unavailable``: it would tell the caller that the
    node it called is lost, when that node is alive and only lost a provider of its
    own. Any other exception becomes ``remote`` with its qualified type and traceback.
    """
    if isinstance(exc, RemoteError):
        return exc.code, str(exc.args[0]) if exc.args else "", exc.remote_type, exc.remote_traceback
    if isinstance(exc, ProviderLost):
        return Unavailable.code, str(exc), type(exc).__name__, ""
    if isinstance(exc, MeshError):
        return exc.code, str(exc), type(exc).__name__, ""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = "".join(_traceback.format_exception(exc))
    return RemoteError.code, str(exc), name, text


def error_from_wire(
    code: str,
    message: str,
    remote_type: str = "",
    traceback: str = "",
    *,
    service: str = "",
    method: str = "",
    peer: str = "",
    call_id: int | None = None,
) -> MeshError:
    """Rebuild the exception that a peer reported with an ERROR message."""
    cls = _BY_CODE.get(code, RemoteError)
    context: dict[str, Any] = {
        "service": service,
        "method": method,
        "peer": peer,
        "call_id": call_id,
    }
    if issubclass(cls, RemoteError):
        return RemoteError(message, remote_type=remote_type, remote_traceback=traceback, **context)
    if issubclass(cls, CallError):
        return cls(message, **context)
    return cls(message)
