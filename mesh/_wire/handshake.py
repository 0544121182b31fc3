"""The handshake, pure: who a peer is, and whether to accept its HELLO or WELCOME.

Shared by the node runtime and the blocking client (``mesh.sync``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .._errors import ConnectError, IncompatibleVersion, WrongMesh
from .._util.keys import decode_key
from .codec import PROTOCOL_MAX, PROTOCOL_MIN, Error, Hello, Message, Welcome, negotiate

__all__ = ["ADDRESS", "PeerInfo", "accept_welcome", "hello", "refuse_hello"]

#: A peer's RPC address.
ADDRESS: Final = re.compile(r"tcp://(?:[^:/#\s]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")

_REFUSALS: Mapping[str, type[ConnectError]] = {
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


def hello(
    ref: int,
    node_id: str,
    name: str,
    mesh: str,
    services: dict[str, str],
    public_key: bytes | None = None,
) -> Hello:
    """The HELLO this implementation sends."""
    return Hello(ref, node_id, name, mesh, PROTOCOL_MIN, PROTOCOL_MAX, services, public_key)


def parse_address(address: object) -> tuple[str, bytes | None]:
    """``tcp://host:port[#KEY]`` -> the ZeroMQ endpoint and the peer's public key (or None)."""
    if not isinstance(address, str):
        raise ConnectError(f"{address!r} is not a tcp://host:port address")
    endpoint, _, key_text = address.partition("#")
    if not ADDRESS.fullmatch(endpoint):
        raise ConnectError(f"{address!r} is not a tcp://host:port address", address=address)
    if not key_text:
        return endpoint, None
    try:
        return endpoint, decode_key(key_text)
    except ValueError as exc:
        raise ConnectError(f"{address!r}: {exc}", address=address) from None


def accept_welcome(answer: Message, address: str, mesh: str) -> PeerInfo:
    """The peer's identity from its answer to our HELLO, or the ConnectError it amounts to."""
    if isinstance(answer, Error):
        cls = _REFUSALS.get(answer.code, ConnectError)
        raise cls(f"{address} refused the handshake: {answer.message}", address=address)
    if not isinstance(answer, Welcome):
        raise ConnectError(
            f"{address} answered HELLO with {type(answer).__name__}", address=address
        )
    if answer.mesh != mesh:
        raise WrongMesh(
            f"{address} is node {answer.name!r} of mesh {answer.mesh!r}, not of mesh {mesh!r}",
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


def refuse_hello(request: Hello, name: str, mesh: str) -> Error | None:
    """The ERROR to answer a HELLO with (wrong mesh, no common version), or None to accept."""
    if request.mesh != mesh:
        return Error(
            request.ref,
            WrongMesh.code,
            f"node {name!r} belongs to mesh {mesh!r}, not {request.mesh!r}",
        )
    if negotiate((PROTOCOL_MIN, PROTOCOL_MAX), (request.min_version, request.max_version)) is None:
        return Error(
            request.ref,
            IncompatibleVersion.code,
            f"no common protocol version: node {name!r} speaks "
            f"{PROTOCOL_MIN}..{PROTOCOL_MAX}, the caller {request.min_version}.."
            f"{request.max_version}",
        )
    return None
