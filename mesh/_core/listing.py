"""What a node shows of the mesh, and whom it calls: listings and provider choice (pure).

Built from a membership view (mesh/_core/membership.py) and the catalog records and stats
held (mesh/_core/catalog.py); no sockets, no clock. ``node.members()`` and
``node.services()`` return these objects; ``meshctl`` prints their ``to_json()``.

Targets name a service, optionally with a version constraint, then a method:
``"calc.add"``, ``"calc@1.add"`` (any 1.x.y), ``"calc@1.2.add"`` (>= 1.2.0, < 2),
``"calc@1.2.3.add"`` (>= 1.2.3, < 2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import CallError, ProtocolError
from .catalog import SERVICE_STATES, MethodInfo, MethodLoad, Record, Stats
from .membership import Member, Status
from .supervision import Crash

__all__ = [
    "STATUS_NAMES",
    "MemberInfo",
    "MeshChange",
    "Provider",
    "ServiceListing",
    "choose_provider",
    "member_from_wire",
    "member_infos",
    "member_to_wire",
    "parse_target",
    "service_listings",
    "version_matches",
]

#: A member's status as listings and ``--json`` spell it.
STATUS_NAMES: Mapping[Status, str] = {
    Status.ALIVE: "alive",
    Status.SUSPECT: "suspect",
    Status.DEAD: "dead",
    Status.LEFT: "left",
}

_CONSTRAINT = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_target(target: str) -> tuple[str, str, str]:
    """``"calc@1.2.add"`` -> ``("calc", "1.2", "add")``; raises :class:`CallError`."""
    head, dot, method = target.rpartition(".")
    service, at, constraint = head.partition("@")
    if not dot or not service or not method or (at and not _CONSTRAINT.fullmatch(constraint)):
        raise CallError(
            f"{target!r}: expected 'service.method' or 'service@VERSION.method' "
            "(VERSION: 1, 1.2 or 1.2.3)"
        )
    return service, constraint, method


def version_matches(constraint: str, version: str) -> bool:
    """Whether ``version`` satisfies ``constraint`` ("" matches any; "1": any 1.x.y;
    "1.2": >= 1.2.0 and < 2; "1.2.3": >= 1.2.3 and < 2). Versions that are not
    numeric never match a constraint."""
    if not constraint:
        return True
    want = _CONSTRAINT.fullmatch(constraint)
    have = _VERSION.match(version)
    if want is None or have is None:
        return False
    wanted = [int(x) if x is not None else 0 for x in want.groups()]
    had = [int(x) if x is not None else 0 for x in have.groups()]
    return had[0] == wanted[0] and had >= wanted


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member as this node sees it. ``address`` is its RPC address (empty until its
    record is held); ``record`` and ``stats`` are the latest held (None: not yet)."""

    id: str
    name: str
    status: str
    incarnation: int
    gossip: str
    address: str = ""
    record: Record | None = None
    stats: Stats | None = None
    #: When this node saw the status change last (monotonic seconds), if it did.
    since: float | None = None

    @property
    def services(self) -> tuple[str, ...]:
        """Names of the services its record lists."""
        return () if self.record is None else tuple(s.name for s in self.record.services)

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` form (docs/cli.md)."""
        record = self.record
        return {
            "name": self.name,
            "id": self.id,
            "address": self.address,
            "status": self.status,
            "incarnation": self.incarnation,
            "services": list(self.services),
            "addresses": {} if record is None else dict(record.addresses),
            "tags": {} if record is None else dict(record.tags),
            "stats": None if self.stats is None else stats_json(self.stats),
        }


def member_to_wire(info: MemberInfo) -> list[Any]:
    """``[id, name, status, incarnation, gossip, record | None, stats | None]``: how
    ``$mesh.members`` sends a member (docs/protocol.md)."""
    return [
        info.id,
        info.name,
        info.status,
        info.incarnation,
        info.gossip,
        None if info.record is None else info.record.to_wire(),
        None if info.stats is None else info.stats.to_wire(),
    ]


def member_from_wire(obj: object) -> MemberInfo:
    """The inverse of :func:`member_to_wire`; raises :class:`ProtocolError`."""
    if not isinstance(obj, list) or len(obj) < 7:
        raise ProtocolError(f"member: expected a list of 7 items, got {obj!r:.80}")
    id, name, status, incarnation, gossip, record, stats = obj[:7]
    if not (isinstance(id, str) and isinstance(name, str) and isinstance(gossip, str)):
        raise ProtocolError(f"member: id, name and gossip must be text, got {obj!r:.80}")
    if status not in STATUS_NAMES.values():
        raise ProtocolError(
            f"member.status: expected one of alive, suspect, dead, left, got {status!r}"
        )
    if type(incarnation) is not int or not 0 <= incarnation < 2**64:
        raise ProtocolError(
            f"member.incarnation: expected an unsigned integer, got {incarnation!r}"
        )
    held = None if record is None else Record.from_wire(record, "member.record")
    return MemberInfo(
        id=id,
        name=name,
        status=status,
        incarnation=incarnation,
        gossip=gossip,
        address="" if held is None else held.addresses.get("rpc", ""),
        record=held,
        stats=None if stats is None else Stats.from_wire(stats, "member.stats"),
    )


def stats_json(stats: Stats) -> dict[str, Any]:
    """A node's stats as plain JSON values."""
    node = stats.node
    return {
        "taken_at": stats.taken_at,
        "uptime": node.uptime,
        "cpu": node.cpu,
        "rss": None if node.rss < 0 else node.rss,
        "messages_in": node.messages_in,
        "messages_out": node.messages_out,
        "bytes_in": node.bytes_in,
        "bytes_out": node.bytes_out,
        "methods": {k: load_json(m) for k, m in stats.methods.items()},
    }


def load_json(load: MethodLoad) -> dict[str, Any]:
    return {
        "requests": load.requests,
        "errors": load.errors,
        "in_flight": load.in_flight,
        "p50": load.p50,
        "p90": load.p90,
        "p99": load.p99,
    }


@dataclass(frozen=True, slots=True)
class MeshChange:
    """What ``node.watch()`` yields. ``kind``: ``joined``, ``suspect``, ``alive``
    (recovered), ``failed``, ``left``, ``replaced`` (a new process under the same name
    and address), ``forgotten`` (purged), or ``updated`` (a new record: its services
    changed). ``at`` is this node's monotonic clock."""

    kind: str
    member: MemberInfo
    at: float


@dataclass(frozen=True, slots=True)
class Provider:
    """One node offering a service, with that service's load on it (summed over methods;
    percentiles are the worst method's, None without calls)."""

    node_id: str
    node_name: str
    address: str
    status: str
    version: str
    state: str
    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    p50: float | None = None
    p99: float | None = None
    #: Supervised services: restarts so far, the last crash, and what it depends on.
    restarts: int = 0
    last_crash: Crash | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceListing:
    """A service and every node that offers it."""

    name: str
    methods: tuple[MethodInfo, ...] = ()
    providers: tuple[Provider, ...] = field(default_factory=tuple)

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(sorted({p.version for p in self.providers}))

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.providers)

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.providers)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.providers)

    @property
    def states(self) -> dict[str, int]:
        """How many providers are in each state (in the order of ``SERVICE_STATES``)."""
        counts = {s: 0 for s in SERVICE_STATES}
        for p in self.providers:
            counts[p.state] = counts.get(p.state, 0) + 1
        return {s: n for s, n in counts.items() if n}

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` form (docs/cli.md)."""
        p50s = [p.p50 for p in self.providers if p.p50 is not None]
        p99s = [p.p99 for p in self.providers if p.p99 is not None]
        return {
            "name": self.name,
            "versions": list(self.versions),
            "methods": [
                {"name": m.name, "kind": m.kind, "signature": m.signature, "doc": m.doc}
                for m in self.methods
            ],
            "providers": [
                {
                    "node": p.node_name,
                    "id": p.node_id,
                    "address": p.address,
                    "status": p.status,
                    "version": p.version,
                    "state": p.state,
                    "requests": p.requests,
                    "errors": p.errors,
                    "in_flight": p.in_flight,
                    "p50": p.p50,
                    "p99": p.p99,
                    "restarts": p.restarts,
                    "last_crash": None
                    if p.last_crash is None
                    else {"time": p.last_crash.time, "error": p.last_crash.error},
                    "depends_on": list(p.depends_on),
                }
                for p in self.providers
            ],
            "states": self.states,
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "p50": max(p50s) if p50s else None,
            "p99": max(p99s) if p99s else None,
        }


def member_infos(
    members: Iterable[Member],
    record_of: Callable[[str], Record | None],
    stats_of: Callable[[str], Stats | None],
    since_of: Callable[[str], float | None],
) -> list[MemberInfo]:
    """The listing of ``members``, sorted by name then id."""
    infos = []
    for m in members:
        record = record_of(m.id)
        infos.append(
            MemberInfo(
                id=m.id,
                name=m.name,
                status=STATUS_NAMES[m.status],
                incarnation=m.incarnation,
                gossip=m.address,
                address="" if record is None else record.addresses.get("rpc", ""),
                record=record,
                stats=stats_of(m.id),
                since=since_of(m.id),
            )
        )
    infos.sort(key=lambda i: (i.name, i.id))
    return infos


def service_listings(infos: Iterable[MemberInfo]) -> dict[str, ServiceListing]:
    """Services offered by live members (alive or suspect), by name, sorted."""
    methods: dict[str, tuple[MethodInfo, ...]] = {}
    providers: dict[str, list[Provider]] = {}
    for info in infos:
        if info.record is None or info.status not in ("alive", "suspect"):
            continue
        loads = {} if info.stats is None else info.stats.methods
        for service in info.record.services:
            mine = [loads[k] for k in loads if k.startswith(service.name + ".")]
            p50s = [m.p50 for m in mine if m.p50 is not None]
            p99s = [m.p99 for m in mine if m.p99 is not None]
            providers.setdefault(service.name, []).append(
                Provider(
                    node_id=info.id,
                    node_name=info.name,
                    address=info.address,
                    status=info.status,
                    version=service.version,
                    state=service.state,
                    requests=sum(m.requests for m in mine),
                    errors=sum(m.errors for m in mine),
                    in_flight=sum(m.in_flight for m in mine),
                    p50=max(p50s) if p50s else None,
                    p99=max(p99s) if p99s else None,
                    restarts=service.restarts,
                    last_crash=service.last_crash,
                    depends_on=service.depends_on,
                )
            )
            methods.setdefault(service.name, service.methods)
    return {
        name: ServiceListing(name, methods[name], tuple(providers[name]))
        for name in sorted(providers)
    }


def choose_provider(
    candidates: Iterable[MemberInfo],
    service: str,
    constraint: str,
    outstanding: Callable[[MemberInfo], int],
    *,
    exclude: Container[str] = (),
    pinned: str | None = None,
) -> MemberInfo | None:
    """The alive member to call ``service`` on: one whose record offers it ``up`` (or
    ``degraded``: still taking calls, chosen only when no provider is ``up``) in a
    version that matches ``constraint``, never a suspect one, the fewest calls
    ``outstanding`` first (ties: by id, so the choice is stable); ``pinned`` (a node
    name or id) restricts the choice; members in ``exclude`` (ids) are skipped."""
    best: MemberInfo | None = None
    best_key = (0, 0)
    for info in candidates:
        if info.status != "alive" or info.record is None or info.id in exclude:
            continue
        if pinned is not None and pinned not in (info.id, info.name):
            continue
        listed = info.record.service(service)
        if listed is None or (listed.state != "up" and listed.state != "degraded"):
            continue
        if not version_matches(constraint, listed.version):
            continue
        key = (listed.state != "up", outstanding(info))
        if best is None or key < best_key or (key == best_key and info.id < best.id):
            best, best_key = info, key
    return best
