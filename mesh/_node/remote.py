"""A window on a mesh that does not join it: how ``meshctl`` and scripts look in.

A :class:`Client` finds one node (the first seed that answers, else the first node of
its mesh that zeroconf reports), pulls the member list with records and stats from it
(``$mesh.members``), and calls providers directly over their RPC sockets. It never
joins the membership and never announces itself, so it leaves no trace in the mesh.

Events: :meth:`Client.publish` asks that node to publish (``$mesh.publish``: the event is
the node's). :meth:`Client.subscribe` subscribes on the client's own node, whose SUB
socket follows every live member's PUB as a member's would; a background task pulls the
member list every probe interval and tells the node's event bus what changed, so new
publishers are followed, gone ones dropped, and ``$mesh.*`` events derived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._config import Config
from .._core.jobs import DEFAULT_RETRIES, Job, check_retries, choose_store
from .._core.listing import (
    MemberInfo,
    ServiceListing,
    member_from_wire,
    parse_target,
    service_listings,
)
from .._errors import MeshError, NoMeshFound, NoProvider, ProtocolError
from .._io.discovery import Discovery, Sighting
from .._rpc.outbound import Outgoing, RoutedStream, Stream
from .._rpc.server import WorkerStatus
from .._util.aio import within
from .._util.resource import AsyncResource
from .._wire.codec import PROTOCOL_MAX, PROTOCOL_MIN
from .eventbus import Subscription
from .node import Node

__all__ = ["Client", "Ping"]

log = logging.getLogger("mesh.client")

#: Fewest seconds between two pulls of the member list while a subscription is open.
REFRESH_LEAST = 0.2


@dataclass(frozen=True, slots=True)
class Ping:
    """What :meth:`Client.ping` measured of one member: round-trip times of
    ``$mesh.ping`` in seconds (on a connection already made), or why it did not
    answer (``error``; ``rtts`` then holds the calls that were answered before)."""

    id: str
    name: str
    address: str
    rtts: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Every call was answered."""
        return self.error is None and bool(self.rtts)

    def to_json(self) -> dict[str, Any]:
        """``{"name", "id", "address", "rtt_ms": {"min", "avg", "max"} | None, "error"}``
        (docs/cli.md, ``meshctl ping``)."""
        rtt_ms = None
        if self.rtts:
            rtt_ms = {
                "min": min(self.rtts) * 1000,
                "avg": sum(self.rtts) / len(self.rtts) * 1000,
                "max": max(self.rtts) * 1000,
            }
        return {
            "name": self.name,
            "id": self.id,
            "address": self.address,
            "rtt_ms": rtt_ms,
            "error": self.error,
        }


class Client(AsyncResource):
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
        # What the node's event bus was last told of each member (by id), and the task
        # that keeps it in step while subscriptions may be open.
        self._fed: dict[str, MemberInfo] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Find a node of the mesh (``async with`` does): :class:`NoMeshFound` else."""
        await self._node.start()
        try:
            self.via = await self._find()
        except BaseException:
            await self._node.aclose(grace=0)
            raise

    async def aclose(self) -> None:
        """Stop following the mesh; every subscription ends; the node closes."""
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
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
                    sighting = await within(sightings.get(), left)
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
        return await self._pull(self.via, fresh)

    def members_nowait(self) -> list[MemberInfo]:
        """The member list as last pulled (by :meth:`members`, or every probe interval
        while subscribed), without asking; empty before the first pull."""
        return list(self._members)

    async def _ask(self, address: str, method: str, args: list[Any], timeout: float) -> Any:
        """Call one of the mesh's own methods (``$mesh.*``) of the node at ``address``."""
        node = self._node
        connect_by = time.monotonic() + self.config.timings.connect_timeout
        connection = await node._connection_to(address, connect_by)
        deadline, trace_id = Outgoing.inherit(timeout)
        return await node._outgoing.call(connection, method, args, {}, deadline, trace_id)

    async def _pull(self, address: str, fresh: bool = False) -> list[MemberInfo]:
        timeout = self.config.timings.connect_timeout + (1.0 if fresh else 0.0)
        wire = await self._ask(address, "$mesh.members", [fresh], timeout)
        if not isinstance(wire, list):
            raise ProtocolError(f"$mesh.members: expected a list, got {wire!r:.80}")
        members = [member_from_wire(item) for item in wire]
        self._members = members
        node = self._node
        node._remote_view = members
        node._listing_changed()
        self._feed(members)
        return members

    def _feed(self, members: list[MemberInfo]) -> None:
        """Tell the node's event bus which members changed status or record since the
        last pull, and which vanished: it follows or drops their PUB sockets and
        derives system events, as a member's bus does from gossip."""
        bus = self._node._events
        before, now = self._fed, {info.id: info for info in members}
        self._fed = now
        for member_id, info in now.items():
            old = before.get(member_id)
            if old is None or old.status != info.status or old.record != info.record:
                bus.member_changed(info)
        for member_id, old in before.items():
            if member_id not in now:
                bus.member_changed(old, gone=True)

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

    async def ping(self, node: str | None = None, *, count: int = 1) -> list[Ping]:
        """Time ``count`` ``$mesh.ping`` calls to ``node`` (a member's name or id), or to
        every live (alive or suspect) member when None, all at once; in member-list
        order. The connection is made first, so no handshake is timed. A member that
        does not answer, or answers as another node, gets a :class:`Ping` with an
        ``error``; :class:`NoProvider` when no member is called ``node``."""
        if count < 1:
            raise ValueError(f"count: expected 1 or more, got {count}")
        members = await self.members()
        if node is None:
            chosen = [m for m in members if m.status in ("alive", "suspect")]
        else:
            chosen = [m for m in members if node in (m.id, m.name)]
            live = [m for m in chosen if m.status in ("alive", "suspect")]
            chosen = live or chosen
            if not chosen:
                known = ", ".join(sorted({m.name for m in members})) or "none"
                raise NoProvider(
                    f"no member called {node!r} is known to node {self.via}; members: {known}"
                )
        return list(await asyncio.gather(*(self._ping(m, count) for m in chosen)))

    async def _ping(self, member: MemberInfo, count: int) -> Ping:
        if not member.address:
            return Ping(member.id, member.name, "", error="no record held: address unknown")
        timeout = self.config.timings.connect_timeout
        node = self._node
        rtts: list[float] = []
        try:
            # a moment more than the timeout: the connection gets the whole of it
            connect_by = time.monotonic() + timeout + 0.01
            connection = await node._connection_to(member.address, connect_by)
            for _ in range(count):
                deadline, trace_id = Outgoing.inherit(timeout)
                began = time.perf_counter()
                answer = await node._outgoing.call(
                    connection, "$mesh.ping", [], {}, deadline, trace_id
                )
                rtt = time.perf_counter() - began
                if not (isinstance(answer, list) and len(answer) == 2):
                    raise ProtocolError(f"$mesh.ping: expected [id, name], got {answer!r:.80}")
                if answer[0] != member.id:  # another process took the address over
                    raise MeshError(
                        f"the node at {member.address} answered as {answer[1]!r} "
                        f"({str(answer[0])[:12]}), not as this member"
                    )
                rtts.append(rtt)
        except MeshError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Ping(member.id, member.name, member.address, tuple(rtts), error)
        return Ping(member.id, member.name, member.address, tuple(rtts))

    async def status(self, node: str) -> tuple[MemberInfo, WorkerStatus]:
        """What the workers of member ``node`` (a name or id) do now (``$mesh.status``):
        its pool threads, busy ones with their calls, and its handler tasks.
        :class:`NoProvider` when no live member is called ``node``."""
        members = await self.members()
        chosen = [m for m in members if node in (m.id, m.name) and m.status in ("alive", "suspect")]
        if not chosen:
            known = ", ".join(sorted({m.name for m in members})) or "none"
            raise NoProvider(
                f"no live member called {node!r} is known to node {self.via}; members: {known}"
            )
        member = chosen[0]
        if not member.address:
            raise MeshError(f"member {member.name!r}: no record held yet, address unknown")
        wire = await self._ask(
            member.address, "$mesh.status", [], self.config.timings.connect_timeout
        )
        return member, WorkerStatus.from_json(wire)

    # -- durable queues ---------------------------------------------------------------------

    async def enqueue(
        self,
        target: str,
        *args: Any,
        retries: Iterable[float] | None = None,
        key: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Hand a job straight to a provider's inbox and return its id once that provider
        has stored it (a client has no outbox of its own: until then nothing is stored,
        and an error means the job was not taken). With a ``key``, the provider that
        nodes would choose for it is asked first. See :meth:`Node.enqueue`."""
        service = parse_target(target)[0]
        members = await self.members()
        job = Job(
            secrets.token_hex(16),
            target,
            list(args),
            dict(kwargs),
            key,
            check_retries(DEFAULT_RETRIES if retries is None else retries),
            time.time(),
        )
        live = {
            m.id: m for m in members if m.status == "alive" and m.address and service in m.services
        }
        order = list(live)
        first = choose_store(order, key, random.Random(), None)
        if first is not None:
            order.remove(first)
            order.insert(0, first)
        timeout = self.config.timings.call_timeout if timeout is None else timeout
        problems = []
        for member_id in order:
            member = live[member_id]
            try:
                answer = await self._ask(
                    member.address, "$mesh.job.take", [[job.to_wire()]], timeout
                )
                state = answer["states"][0]
            except (MeshError, KeyError, TypeError, IndexError) as exc:
                problems.append(f"{member.name}: {exc}")
                continue
            if state != "refused":
                return job.id
            problems.append(f"{member.name}: refused")
        raise NoProvider(
            f"no provider of {service!r} with a job store took the job"
            + (f" ({'; '.join(problems)})" if problems else ""),
            service=service,
        )

    async def jobs(self, node: str | None = None) -> list[dict[str, Any]]:
        """Each live member's outbox, inbox and dead letters (``$mesh.job.list``), or
        ``{"node", "id", "error"}`` for one that did not answer (no job store, ...)."""
        members = [
            m
            for m in await self.members()
            if m.status in ("alive", "suspect") and m.address and node in (None, m.id, m.name)
        ]
        timeout = self.config.timings.connect_timeout

        async def one(member: MemberInfo) -> dict[str, Any]:
            try:
                answer = await self._ask(member.address, "$mesh.job.list", [], timeout)
            except MeshError as exc:
                return {"node": member.name, "id": member.id, "error": str(exc)}
            return dict(answer)

        return list(await asyncio.gather(*(one(m) for m in members)))

    async def job_action(self, action: str, job_id: str) -> list[str]:
        """``retry`` (a dead letter back to its inbox) or ``drop`` job ``job_id`` on
        whichever live member holds it; returns the names of those that did."""
        if action not in ("retry", "drop"):
            raise ValueError(f"action: retry or drop, got {action!r}")
        members = [m for m in await self.members() if m.status == "alive" and m.address]
        timeout = self.config.timings.connect_timeout

        async def one(member: MemberInfo) -> str | None:
            try:
                done = await self._ask(member.address, f"$mesh.job.{action}", [job_id], timeout)
            except MeshError:
                return None
            return member.name if done is True else None

        return [n for n in await asyncio.gather(*(one(m) for m in members)) if n]

    # -- events -----------------------------------------------------------------------------

    async def publish(self, topic: str, data: Any = None) -> tuple[int, str]:
        """Publish ``data`` on ``topic`` through the node this client talks to: the
        event is that node's (``$mesh.publish``). Returns ``(seq, publisher id)``.
        Topics under ``$mesh.`` are reserved (:class:`InvalidTopic`)."""
        answer = await self._ask(
            self.via, "$mesh.publish", [topic, data], self.config.timings.connect_timeout
        )
        if (
            not isinstance(answer, list)
            or len(answer) != 2
            or type(answer[0]) is not int
            or not isinstance(answer[1], str)
        ):
            raise ProtocolError(f"$mesh.publish: expected [seq, publisher], got {answer!r:.80}")
        return answer[0], answer[1]

    async def subscribe(self, prefix: str = "", *, history: int = 0) -> Subscription:
        """Events whose topic starts with ``prefix``, from every member (as
        :meth:`Node.subscribe`, at-most-once; ``$mesh.*`` system events are derived by
        this client from the member list it pulls). The client does not join the mesh,
        so it cannot be in a queue group. While the client is open it pulls the member
        list every probe interval (at least :data:`REFRESH_LEAST` s) to follow new
        publishers and drop gone ones."""
        await self.members()
        sub = self._node.subscribe(prefix, history=history)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh(), name=f"client {self._node.name}: refresh members"
            )
        return sub

    async def _refresh(self) -> None:
        """Pull the member list every period; when the node this client talks to does
        not answer, ask the other live members of the last list, and stay with the
        first that answers."""
        period = max(REFRESH_LEAST, self.config.timings.membership.probe_interval)
        while True:
            await asyncio.sleep(period)
            try:
                await self._pull_anywhere()
            except MeshError as exc:
                log.debug("client %s: member list not pulled: %s", self._node.name, exc)
            except Exception:
                log.exception("client %s: member list not pulled", self._node.name)

    async def _pull_anywhere(self) -> None:
        try:
            await self._pull(self.via)
            return
        except MeshError as exc:
            first = exc
            log.debug("client %s: %s did not answer: %s", self._node.name, self.via, exc)
        for info in list(self._members):
            address = info.address
            if not address or address == self.via or info.status not in ("alive", "suspect"):
                continue
            try:
                await self._pull(address)
            except MeshError as exc:
                log.debug("client %s: %s did not answer: %s", self._node.name, address, exc)
                continue
            self.via = address
            return
        raise first
