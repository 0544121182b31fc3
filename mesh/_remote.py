"""A window on a mesh that does not join it: how ``meshctl`` and scripts look in.

A :class:`Client` finds one node (the first seed that answers, else the first node of
its mesh that zeroconf reports), pulls the member list with records and stats from it
(``$mesh.members``), and calls providers directly over their RPC sockets. It never
joins the membership and never announces itself, so it leaves no trace in the mesh.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Self

from ._client import Outgoing, RoutedStream, Stream
from ._config import Config
from ._discovery import Discovery, Sighting
from ._errors import MeshError, NoMeshFound, ProtocolError
from ._listing import MemberInfo, ServiceListing, member_from_wire, service_listings
from ._node import Node
from ._wire import PROTOCOL_MAX, PROTOCOL_MIN

__all__ = ["Client"]


class Client:
    """``async with Client(seeds=["tcp://10.0.0.5:7000"]) as client: ...``.

    Built like a :class:`Node` (a :class:`Config`, by default ``Config.from_env()``,
    with keyword overrides). Entering finds a node within ``config.timings.connect_timeout``
    or raises :class:`NoMeshFound`.
    """

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        base = config if config is not None else Config.from_env()
        self.config: Config = base.replace(**overrides) if overrides else base
        self._node = Node(
            self.config.replace(discovery=False, seeds=(), port=0, pub_port=0, gossip_port=0)
        )
        self._node._joins = False
        #: The RPC address of the node this client talks to (after entering).
        self.via = ""
        self._members: list[MemberInfo] = []

    async def __aenter__(self) -> Self:
        await self._node.start()
        try:
            self.via = await self._find()
        except BaseException:
            await self._node.aclose(grace=0)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._node.aclose(grace=0)

    async def _find(self) -> str:
        timeout = self.config.timings.connect_timeout
        errors = []
        for seed in self.config.seeds:
            try:
                await self._node.connect(seed, timeout=timeout)
            except MeshError as exc:
                errors.append(f"{seed}: {exc}")
            else:
                return seed
        if self.config.discovery:
            found = await self._discover(timeout)
            if found:
                return found
            errors.append(
                f"zeroconf found no node of mesh {self.config.mesh!r} on "
                f"{', '.join(self.config.discovery_interfaces)} within {timeout:g} s"
            )
        elif not self.config.seeds:
            errors.append("no seeds given and discovery is off")
        raise NoMeshFound("no node of the mesh answered: " + "; ".join(errors))

    async def _discover(self, timeout: float) -> str:
        """The RPC address of the first node zeroconf reports that answers a handshake."""
        node = self._node
        sightings: asyncio.Queue[Sighting] = asyncio.Queue()
        me = Sighting(
            node_id=node.id,
            name=node.name,
            mesh=node.mesh,
            protocol=(PROTOCOL_MIN, PROTOCOL_MAX),
            rpc=node.address.partition("#")[0],
            gossip=node.address.partition("#")[0],
            pub=node.pub_address,
        )
        deadline = time.monotonic() + timeout
        async with Discovery(
            me,
            self.config.discovery_interfaces,
            sightings.put_nowait,
            trusted=node._trusted_key(),
            announce=False,
        ):
            while (left := deadline - time.monotonic()) > 0:
                try:
                    sighting = await asyncio.wait_for(sightings.get(), left)
                except TimeoutError:
                    break
                address = sighting.rpc
                if sighting.public_key and node.public_key is not None:
                    address += "#" + sighting.public_key
                try:
                    await node.connect(address, timeout=max(0.01, deadline - time.monotonic()))
                except MeshError:
                    continue
                return address
        return ""

    async def members(self, *, fresh: bool = False) -> list[MemberInfo]:
        """Every member the node found knows, with records and stats; ``fresh`` asks it
        to pull every member's stats first (a fraction of a second more)."""
        node = self._node
        connection = await node._connection_to(self.via, time.monotonic() + 10)
        timeout = self.config.timings.connect_timeout + (1.0 if fresh else 0.0)
        deadline, trace_id = Outgoing.inherit(timeout)
        wire = await node._outgoing.call(
            connection, "$mesh.members", [fresh], {}, deadline, trace_id
        )
        if not isinstance(wire, list):
            raise ProtocolError(f"$mesh.members: expected a list, got {wire!r:.80}")
        self._members = [member_from_wire(item) for item in wire]
        node._remote_view = self._members
        node._listing_changed()
        return self._members

    async def services(self, *, fresh: bool = False) -> dict[str, ServiceListing]:
        """Every service offered by a live member, by name (see :meth:`Node.services`)."""
        return service_listings(await self.members(fresh=fresh))

    async def call(
        self,
        target: str,
        *args: Any,
        timeout: float | None = None,
        node: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call a provider directly, chosen as :meth:`Node.call` chooses (the member
        list is pulled first if this client has none yet)."""
        if not self._members:
            await self.members()
        return await self._node.call(target, *args, timeout=timeout, node=node, **kwargs)

    async def stream(
        self,
        target: str,
        *args: Any,
        timeout: float | None = None,
        node: str | None = None,
        **kwargs: Any,
    ) -> Stream | RoutedStream:
        """A streaming call, as :meth:`Node.stream`."""
        if not self._members:
            await self.members()
        return self._node.stream(target, *args, timeout=timeout, node=node, **kwargs)
