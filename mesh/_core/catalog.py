"""What each node offers: versioned catalog records and stats, pulled within a budget (pure).

No sockets, no asyncio, no clock: the node (or the simulator) passes ``now`` in and an
injected ``random.Random`` picks among sources, so a seed replays a run.

A node's listing is a :class:`Record` (who it is, where, its services with their methods,
signatures and docs, the event topics it publishes) with a version that goes up on every
:meth:`Catalog.publish`; its load is a :class:`Stats` snapshot with a version of its own.
Membership gossip carries only the digest (member, record version, stats version: see
``Update.record`` and ``Update.stats`` in mesh/_core/membership.py). How records and stats move::

    owner publishes v  -> membership.set_versions(record=v) gossips the digest
    a peer hears of v  -> membership emits Advert(id, v, via)  -> Catalog.advert()
    Catalog.tick()     -> RecordPull(id, have) to a random via (a holder, not the owner)
    the via answers    -> RecordReply: the record, "unchanged" or "not held"
    Catalog.apply()    -> (id, v) newly held -> membership.hold_record(id, v),
                          and only now does this node gossip v on: the next pulls
                          land on it, so pulls spread over holders
    "not held"/timeout -> the next via; the owner after ``max_tries`` or ``owner_after`` s

Stats are not gossiped: each node pulls every live member's stats from that member,
round-robin, one member every ``interval / members`` seconds, where
``interval = max(stats_interval, members * expected_stats_size / stats_rate)``
(:func:`stats_interval`), so the stats bytes per second stay within their share at any
mesh size. A pull carries the version held; an unchanged record or stats is answered
with a tiny "unchanged". :meth:`Catalog.pull_stats_now` asks a node for fresh stats at
once, outside the budget (for ``meshctl``).

The budget: ``MembershipSettings.budget`` bytes/s per node, counting the bytes this node
sends and the replies it asks for (a pull is charged to the puller, both ways).
Membership has first call (:data:`MEMBERSHIP_SHARE` nominally, and whatever more it
spends, reported with :meth:`Catalog.membership_sent`, is taken from stats, then from
records); records get :data:`RECORD_SHARE`, stats :data:`STATS_SHARE`. Each share is a
token bucket refilled from ``now``; a pull that does not fit waits and is counted.

Every value here has ``to_wire()`` (plain lists, dicts, str, int, float, bool, None for
the msgpack codec), ``from_wire(obj)`` that validates strictly and raises
:class:`ProtocolError` naming the bad field, and ``size()`` (its msgpack length).
Wire forms are positional lists; trailing items a receiver does not know are ignored,
so later versions can add fields at the end.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NoReturn, Protocol

import msgpack

from .._config import Limits, MembershipSettings
from .._errors import ProtocolError, RecordTooLarge
from .._rpc.services import ServiceSpec
from .._util.values import fail, flag, show_repr
from .membership import MEMBERSHIP_SHARE as _MEMBERSHIP_SHARE
from .stats import ServiceStatistics
from .supervision import Crash, ServiceStatus

__all__ = [
    "ADDRESS_KINDS",
    "KINDS",
    "MEMBERSHIP_SHARE",
    "RECORD_SHARE",
    "SERVICE_STATES",
    "STATS_SHARE",
    "WIRE_STATE",
    "WIRE_STATES",
    "Catalog",
    "CatalogMessage",
    "CatalogStatistics",
    "Crash",
    "MethodInfo",
    "MethodLoad",
    "NodeLoad",
    "Pull",
    "Record",
    "RecordPull",
    "RecordReply",
    "Reply",
    "ServiceInfo",
    "Stats",
    "StatsPull",
    "StatsReply",
    "check_record",
    "method_loads",
    "services_from",
    "stats_interval",
]

#: Shares of ``MembershipSettings.budget``: membership first, then records, then stats.
MEMBERSHIP_SHARE: Final = _MEMBERSHIP_SHARE
RECORD_SHARE: Final = 0.3
STATS_SHARE: Final = 0.2

#: How a method is called.
KINDS: Final = ("unary", "stream")
#: A service's state in a listing: serving, finishing work before it goes, or not serving;
#: and the states of supervised services (mesh/_core/supervision.py).
SERVICE_STATES: Final = (
    "up",
    "draining",
    "down",
    "starting",
    "waiting",
    "degraded",
    "restarting",
    "failed",
    "stopped",
)
#: The states item 2 of a service's wire form may hold: what every reader knows. A
#: supervised service's own state travels in the supervision item, and item 2 says
#: what it means for callers (:data:`WIRE_STATE`).
WIRE_STATES: Final = ("up", "draining", "down")
#: Each state as item 2 spells it: ``degraded`` still takes calls.
WIRE_STATE: Final = MappingProxyType(
    {s: "up" if s == "degraded" else s if s in WIRE_STATES else "down" for s in SERVICE_STATES}
)
#: The usual keys of ``Record.addresses`` (others are allowed).
ADDRESS_KINDS: Final = ("rpc", "gossip", "pub")

# -- limits of the wire form (the record as a whole is bounded by max_record_size) ----------

_U64_MAX: Final = 2**64 - 1
_MAX_ID: Final = 64
_MAX_NAME: Final = 63
_MAX_VERSION_TEXT: Final = 64
_MAX_ADDRESSES: Final = 8
_MAX_ADDRESS: Final = 256
_MAX_TAGS: Final = 64
_MAX_TAG_VALUE: Final = 256
_MAX_SERVICES: Final = 256
_MAX_METHODS: Final = 1024
_MAX_SIGNATURE: Final = 2048
_MAX_DOC: Final = 8192
_MAX_TOPICS: Final = 256
_MAX_TOPIC: Final = 255
_MAX_GROUPS: Final = 64
_MAX_DEPENDENCIES: Final = 64
_MAX_DEPENDENCY: Final = 128
_MAX_ERROR: Final = 1000
_MAX_METHOD_LOADS: Final = 4096
_KEY_LENGTH: Final = 40  # a CURVE public key in Z85 text
#: Service and method names as mesh/_rpc/services.py allows them.
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_-]{0,62}"
_NAME_RE: Final = re.compile(_IDENT)
_TARGET_RE: Final = re.compile(rf"{_IDENT}\.{_IDENT}")
_DEPENDENCY_RE: Final = re.compile(rf"{_IDENT}(@\d+(\.\d+){{0,2}})?")

#: Docstrings longer than this are cut by :func:`services_from` (the wire allows more).
DOC_LIMIT: Final = 2000
#: Default largest encoded record, in bytes.
MAX_RECORD_SIZE: Final = Limits().max_record_size


class Advert(Protocol):
    """What :meth:`Catalog.advert` reads of membership's ``Advert`` (mesh/_core/membership.py)."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def via(self) -> str: ...


def _packed_size(obj: Any) -> int:
    return len(msgpack.packb(obj, use_bin_type=True))


# -- strict readers: each takes the place to name in errors ----------------------------------


def _fail(where: str, expected: str, value: object) -> NoReturn:
    """:func:`fail`, showing the value with plain repr (the catalog's messages)."""
    fail(where, expected, value, show_repr)


def _list(where: str, value: object, length: int) -> list[Any]:
    """A list of at least ``length`` items (later ones are ignored by the caller)."""
    if type(value) is not list:
        _fail(where, f"a list of {length} items", value)
    if len(value) < length:
        raise ProtocolError(f"{where}: expected {length} items, got {len(value)}")
    return value


def _items(where: str, value: object, most: int) -> list[Any]:
    if type(value) is not list:
        _fail(where, "a list", value)
    if len(value) > most:
        raise ProtocolError(f"{where}: at most {most} items, got {len(value)}")
    return value


def _text(where: str, value: object, most: int, least: int = 0) -> str:
    if type(value) is not str or not least <= len(value) <= most:
        _fail(where, f"a string of {least} to {most} characters", value)
    return value


def _label(where: str, value: object, most: int) -> str:
    """A short printable string (names, ids, versions)."""
    text = _text(where, value, most, 1)
    if not text.isprintable():
        _fail(where, "printable characters", value)
    return text


def _count(where: str, value: object, least: int = 0) -> int:
    if type(value) is not int or not least <= value <= _U64_MAX:
        _fail(where, f"an integer from {least} to 2**64-1", value)
    return value


def _seconds(where: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        _fail(where, "a finite number >= 0", value)
    return float(value)


def _maybe_seconds(where: str, value: object) -> float | None:
    return None if value is None else _seconds(where, value)


def _ident(where: str, value: object) -> str:
    if type(value) is not str or not _NAME_RE.fullmatch(value):
        _fail(where, "a name of 1-63 letters, digits, '_' or '-', not starting with a digit", value)
    return value


def _flag(where: str, value: object) -> bool:
    return flag(where, value, show_repr)


def _choice(where: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices or type(value) is not str:
        _fail(where, f"one of {', '.join(choices)}", value)
    return value


def _label_map(where: str, value: object, most: int, value_most: int) -> dict[str, str]:
    if type(value) is not dict:
        _fail(where, "a map of strings", value)
    if len(value) > most:
        raise ProtocolError(f"{where}: at most {most} entries, got {len(value)}")
    for key, item in value.items():
        _label(f"{where} key", key, _MAX_NAME)
        _text(f"{where}[{key!r}]", item, value_most)
    return value


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


# -- the record --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One method as listed: ``kind`` is ``unary`` or ``stream``; ``idempotent`` ones may be
    retried by callers."""

    name: str
    kind: str
    signature: str
    doc: str = ""
    idempotent: bool = False

    def to_wire(self) -> list[Any]:
        """``[name, kind, signature, doc, idempotent]``."""
        return [self.name, self.kind, self.signature, self.doc, self.idempotent]

    @classmethod
    def from_wire(cls, obj: object, where: str = "method") -> MethodInfo:
        v = _list(where, obj, 5)
        return cls(
            _ident(f"{where}.name", v[0]),
            _choice(f"{where}.kind", v[1], KINDS),
            _text(f"{where}.signature", v[2], _MAX_SIGNATURE),
            _text(f"{where}.doc", v[3], _MAX_DOC),
            _flag(f"{where}.idempotent", v[4]),
        )

    def size(self) -> int:
        return _packed_size(self.to_wire())


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One service as listed: its version, state (:data:`SERVICE_STATES`) and methods;
    for a supervised service also how often it was restarted, its last crash, and the
    services it depends on (``"db"``, ``"cache@2"``)."""

    name: str
    version: str
    state: str = "up"
    methods: tuple[MethodInfo, ...] = ()
    restarts: int = 0
    last_crash: Crash | None = None
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "depends_on", tuple(self.depends_on))

    @property
    def offered(self) -> bool:
        """Whether it takes calls (``up`` or ``degraded``)."""
        return WIRE_STATE.get(self.state) == "up"

    def to_wire(self) -> list[Any]:
        """``[name, version, state, [method, ...]]``, and a fifth item, ``[state,
        restarts, last_crash | None, [dependency, ...]]``, for a supervised service
        (sent only when there is something in it). Item 2 holds ``up``, ``draining`` or
        ``down`` (:data:`WIRE_STATE`), what a reader that does not know the fifth item
        needs to route calls."""
        wire: list[Any] = [
            self.name,
            self.version,
            WIRE_STATE.get(self.state, self.state),
            [m.to_wire() for m in self.methods],
        ]
        if self.restarts or self.last_crash or self.depends_on or self.state not in WIRE_STATES:
            crash = self.last_crash
            wire.append(
                [
                    self.state,
                    self.restarts,
                    None if crash is None else [crash.time, crash.error],
                    list(self.depends_on),
                ]
            )
        return wire

    @classmethod
    def from_wire(cls, obj: object, where: str = "service") -> ServiceInfo:
        v = _list(where, obj, 4)
        methods = tuple(
            MethodInfo.from_wire(m, f"{where}.methods[{i}]")
            for i, m in enumerate(_items(f"{where}.methods", v[3], _MAX_METHODS))
        )
        _unique(f"{where}.methods", [m.name for m in methods])
        state = _choice(f"{where}.state", v[2], WIRE_STATES)
        restarts = 0
        crash = None
        depends_on: tuple[str, ...] = ()
        if len(v) > 4:
            at = f"{where}.supervision"
            sup = _list(at, v[4], 4)
            detail = _label(f"{at}[0]", sup[0], 32)
            restarts = _count(f"{at}[1]", sup[1])
            if sup[2] is not None:
                pair = _list(f"{at}[2]", sup[2], 2)
                crash = Crash(
                    _seconds(f"{at}[2][0]", pair[0]), _text(f"{at}[2][1]", pair[1], _MAX_ERROR)
                )
            depends_on = tuple(
                _dependency(f"{at}[3][{i}]", d)
                for i, d in enumerate(_items(f"{at}[3]", sup[3], _MAX_DEPENDENCIES))
            )
            _unique(f"{at}[3]", list(depends_on))
            # A state this reader does not know (a later version's) reads as item 2.
            if detail in SERVICE_STATES:
                if WIRE_STATE[detail] != state:
                    raise ProtocolError(
                        f"{at}[0]: state {detail!r} is listed as {WIRE_STATE[detail]!r}, "
                        f"not {state!r}"
                    )
                state = detail
        return cls(
            _ident(f"{where}.name", v[0]),
            _label(f"{where}.version", v[1], _MAX_VERSION_TEXT),
            state,
            methods,
            restarts,
            crash,
            depends_on,
        )

    def size(self) -> int:
        return _packed_size(self.to_wire())


def _dependency(where: str, value: object) -> str:
    if (
        type(value) is not str
        or len(value) > _MAX_DEPENDENCY
        or not _DEPENDENCY_RE.fullmatch(value)
    ):
        _fail(where, "a service name, or 'name@VERSION'", value)
    return value


def _group(where: str, value: object) -> tuple[str, str]:
    """A queue group entry: ``[group, prefix]`` (the prefix may be empty)."""
    v = _list(where, value, 2)
    group = _text(f"{where}[0]", v[0], _MAX_NAME, 1)
    prefix = _text(f"{where}[1]", v[1], _MAX_TOPIC, 0)
    return group, prefix


def _unique(where: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ProtocolError(f"{where}: {name!r} is listed twice")
        seen.add(name)


@dataclass(frozen=True, slots=True)
class Record:
    """A node's listing, one version of it. ``addresses`` maps a kind (``rpc``, ``gossip``,
    ``pub``) to a ``tcp://host:port`` address; ``tags`` are free labels (``zone=eu-1``);
    ``protocol`` is the (min, max) protocol versions spoken; ``public_key`` the node's
    CURVE key in Z85 text when security is on."""

    id: str
    name: str
    mesh: str
    version: int = 1
    addresses: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    protocol: tuple[int, int] = (1, 1)
    public_key: str | None = None
    services: tuple[ServiceInfo, ...] = ()
    topics: tuple[str, ...] = ()
    #: Queue groups the node is a member of: ``(group, topic prefix)`` pairs.
    groups: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(tuple(g) for g in self.groups))
        object.__setattr__(self, "addresses", _frozen_map(self.addresses))
        object.__setattr__(self, "tags", _frozen_map(self.tags))
        object.__setattr__(self, "protocol", tuple(self.protocol))
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "topics", tuple(self.topics))

    def service(self, name: str) -> ServiceInfo | None:
        """The listed service called ``name``, if any."""
        for listed in self.services:  # a loop, not next(genexpr): once a call, 3x cheaper
            if listed.name == name:
                return listed
        return None

    def to_wire(self) -> list[Any]:
        """``[id, name, mesh, version, {addresses}, {tags}, [min, max], public_key,
        [service, ...], [topic, ...], [[group, prefix], ...]]`` (the last only when the
        node is in a queue group)."""
        wire = [
            self.id,
            self.name,
            self.mesh,
            self.version,
            dict(self.addresses),
            dict(self.tags),
            list(self.protocol),
            self.public_key,
            [s.to_wire() for s in self.services],
            list(self.topics),
        ]
        if self.groups:  # a later field: sent only when there is something in it
            wire.append([list(g) for g in self.groups])
        return wire

    @classmethod
    def from_wire(cls, obj: object, where: str = "record") -> Record:
        v = _list(where, obj, 10)
        protocol = _list(f"{where}.protocol", v[6], 2)
        low = _count(f"{where}.protocol[0]", protocol[0], 1)
        high = _count(f"{where}.protocol[1]", protocol[1], 1)
        if low > high or high > 0xFFFF:
            raise ProtocolError(
                f"{where}.protocol: expected 1 <= min <= max <= 65535, got {protocol}"
            )
        key = v[7]
        if key is not None and (
            type(key) is not str
            or len(key) != _KEY_LENGTH
            or not key.isascii()
            or not key.isprintable()
        ):
            _fail(f"{where}.public_key", f"None or {_KEY_LENGTH} characters of Z85 text", key)
        services = tuple(
            ServiceInfo.from_wire(s, f"{where}.services[{i}]")
            for i, s in enumerate(_items(f"{where}.services", v[8], _MAX_SERVICES))
        )
        _unique(f"{where}.services", [s.name for s in services])
        topics = tuple(
            _text(f"{where}.topics[{i}]", t, _MAX_TOPIC, 1)
            for i, t in enumerate(_items(f"{where}.topics", v[9], _MAX_TOPICS))
        )
        _unique(f"{where}.topics", list(topics))
        groups = tuple(
            _group(f"{where}.groups[{i}]", g)
            for i, g in enumerate(
                _items(f"{where}.groups", v[10] if len(v) > 10 else [], _MAX_GROUPS)
            )
        )
        return cls(
            id=_label(f"{where}.id", v[0], _MAX_ID),
            name=_label(f"{where}.name", v[1], _MAX_NAME),
            mesh=_label(f"{where}.mesh", v[2], _MAX_NAME),
            version=_count(f"{where}.version", v[3], 1),
            addresses=_label_map(f"{where}.addresses", v[4], _MAX_ADDRESSES, _MAX_ADDRESS),
            tags=_label_map(f"{where}.tags", v[5], _MAX_TAGS, _MAX_TAG_VALUE),
            protocol=(low, high),
            public_key=key,
            services=services,
            topics=topics,
            groups=groups,
        )

    def size(self) -> int:
        """Encoded length in bytes (what :data:`MAX_RECORD_SIZE` bounds)."""
        return _packed_size(self.to_wire())


def check_record(record: Record, limit: int) -> int:
    """The encoded size of ``record``; :class:`RecordTooLarge` past ``limit`` (naming the
    largest services), :class:`ProtocolError` if a peer could not read it."""
    Record.from_wire(record.to_wire(), "this node's record")  # the rules peers apply
    size = record.size()
    if size > limit:
        parts = sorted(((s.size(), s.name) for s in record.services), reverse=True)[:3]
        largest = ", ".join(f"{name} ({n} bytes)" for n, name in parts)
        raise RecordTooLarge(
            f"the catalog record of node {record.name!r} would be {size} bytes, more than "
            f"the limit of {limit}"
            + (f"; the largest services: {largest}" if largest else "")
            + " (shorten docstrings, or list fewer tags or topics)",
            size=size,
            limit=limit,
        )
    return size


def services_from(
    specs: Iterable[ServiceSpec],
    state: str = "up",
    doc_limit: int = DOC_LIMIT,
    statuses: Mapping[str, ServiceStatus] | None = None,
) -> tuple[ServiceInfo, ...]:
    """The listing of a node's registered services (``ServiceRegistry`` iterates specs);
    docstrings longer than ``doc_limit`` characters are cut, ending with "...". A
    service in ``statuses`` (the supervised ones) is listed with its state, restarts
    and last crash; the others with ``state``."""

    def cut(doc: str) -> str:
        return doc if len(doc) <= doc_limit else doc[: max(0, doc_limit - 3)] + "..."

    plain = ServiceStatus(state)
    known = statuses or {}
    return tuple(
        ServiceInfo(
            spec.name,
            spec.version,
            known.get(spec.name, plain).state,
            tuple(
                MethodInfo(
                    m.name,
                    "stream" if m.is_stream else "unary",
                    m.signature,
                    cut(m.doc),
                    m.idempotent,
                )
                for _, m in sorted(spec.methods.items())
            ),
            known.get(spec.name, plain).restarts,
            known.get(spec.name, plain).last_crash,
            tuple(str(d) for d in spec.depends_on),
        )
        for spec in sorted(specs, key=lambda s: s.name)
    )


# -- stats -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodLoad:
    """One method's counters; percentiles of finished calls in seconds (None: no calls)."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def to_wire(self) -> list[Any]:
        """``[requests, errors, in_flight, p50, p90, p99]``."""
        return [self.requests, self.errors, self.in_flight, self.p50, self.p90, self.p99]

    @classmethod
    def from_wire(cls, obj: object, where: str = "method load") -> MethodLoad:
        v = _list(where, obj, 6)
        load = cls(
            _count(f"{where}.requests", v[0]),
            _count(f"{where}.errors", v[1]),
            _count(f"{where}.in_flight", v[2]),
            _maybe_seconds(f"{where}.p50", v[3]),
            _maybe_seconds(f"{where}.p90", v[4]),
            _maybe_seconds(f"{where}.p99", v[5]),
        )
        p50, p90, p99 = load.p50, load.p90, load.p99
        if p50 is None or p90 is None or p99 is None:
            if not (p50 is None and p90 is None and p99 is None):
                raise ProtocolError(f"{where}: p50, p90 and p99 are all given or all None")
        elif not p50 <= p90 <= p99:
            raise ProtocolError(f"{where}: expected p50 <= p90 <= p99, got {(p50, p90, p99)}")
        return load


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """A node's own counters: seconds up, CPU seconds used, resident bytes (-1: unknown),
    messages and bytes in and out."""

    uptime: float = 0.0
    cpu: float = 0.0
    rss: int = -1
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def to_wire(self) -> list[Any]:
        """``[uptime, cpu, rss, messages_in, messages_out, bytes_in, bytes_out]``."""
        return [
            self.uptime,
            self.cpu,
            self.rss,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
        ]

    @classmethod
    def from_wire(cls, obj: object, where: str = "node load") -> NodeLoad:
        v = _list(where, obj, 7)
        rss = v[2]
        if rss != -1 or type(rss) is not int:
            _count(f"{where}.rss", rss)
        return cls(
            _seconds(f"{where}.uptime", v[0]),
            _seconds(f"{where}.cpu", v[1]),
            rss,
            _count(f"{where}.messages_in", v[3]),
            _count(f"{where}.messages_out", v[4]),
            _count(f"{where}.bytes_in", v[5]),
            _count(f"{where}.bytes_out", v[6]),
        )


@dataclass(frozen=True, slots=True)
class Stats:
    """A node's load at one moment: ``taken_at`` is the owner's wall clock (seconds since
    the epoch; compare with care), ``methods`` is keyed ``"service.method"``."""

    id: str
    version: int
    taken_at: float
    node: NodeLoad = field(default_factory=NodeLoad)
    methods: Mapping[str, MethodLoad] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _frozen_map(self.methods))

    def to_wire(self) -> list[Any]:
        """``[id, version, taken_at, node, {target: method load}]``."""
        return [
            self.id,
            self.version,
            self.taken_at,
            self.node.to_wire(),
            {k: m.to_wire() for k, m in self.methods.items()},
        ]

    @classmethod
    def from_wire(cls, obj: object, where: str = "stats") -> Stats:
        v = _list(where, obj, 5)
        methods = v[4]
        if type(methods) is not dict:
            _fail(f"{where}.methods", "a map", methods)
        if len(methods) > _MAX_METHOD_LOADS:
            raise ProtocolError(
                f"{where}.methods: at most {_MAX_METHOD_LOADS} entries, got {len(methods)}"
            )
        loads: dict[str, MethodLoad] = {}
        for key, item in methods.items():
            if type(key) is not str or not _TARGET_RE.fullmatch(key):
                _fail(f"{where}.methods key", "'service.method'", key)
            target = key
            loads[target] = MethodLoad.from_wire(item, f"{where}.methods[{key!r}]")
        return cls(
            _label(f"{where}.id", v[0], _MAX_ID),
            _count(f"{where}.version", v[1], 1),
            _seconds(f"{where}.taken_at", v[2]),
            NodeLoad.from_wire(v[3], f"{where}.node"),
            loads,
        )

    def size(self) -> int:
        return _packed_size(self.to_wire())

    def same_load(self, other: Stats) -> bool:
        """Whether the two differ at most in version, ``taken_at`` and uptime."""
        return self.methods == other.methods and dataclasses.replace(
            self.node, uptime=0.0
        ) == dataclasses.replace(other.node, uptime=0.0)


def method_loads(services: Mapping[str, ServiceStatistics]) -> dict[str, MethodLoad]:
    """``{"service.method": MethodLoad}`` from a node's service statistics."""
    loads = {}
    for service in services.values():
        for name, m in service.methods.items():
            latency = m.latency
            loads[f"{service.name}.{name}"] = MethodLoad(
                m.requests, m.errors, m.in_flight, latency.p50, latency.p90, latency.p99
            )
    return loads


# -- pulls and replies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordPull:
    """Send me member ``id``'s record if you hold one newer than ``have`` (0: none)."""

    id: str
    have: int = 0

    def to_wire(self) -> list[Any]:
        return [self.id, self.have]

    @classmethod
    def from_wire(cls, obj: object) -> RecordPull:
        v = _list("record pull", obj, 2)
        return cls(_label("record pull.id", v[0], _MAX_ID), _count("record pull.have", v[1]))

    def size(self) -> int:
        return _packed_size(self.to_wire())


@dataclass(frozen=True, slots=True)
class RecordReply:
    """The answer to a :class:`RecordPull`: the ``record``, or None with ``unchanged``
    (the puller's version is the newest held here) or without (not held here)."""

    id: str
    record: Record | None = None
    unchanged: bool = False

    def to_wire(self) -> list[Any]:
        return [self.id, None if self.record is None else self.record.to_wire(), self.unchanged]

    @classmethod
    def from_wire(cls, obj: object) -> RecordReply:
        v = _list("record reply", obj, 3)
        id = _label("record reply.id", v[0], _MAX_ID)
        record = None if v[1] is None else Record.from_wire(v[1], "record reply.record")
        unchanged = _flag("record reply.unchanged", v[2])
        if record is not None and (record.id != id or unchanged):
            raise ProtocolError(
                "record reply: a record must be of the member asked for and not 'unchanged'"
            )
        return cls(id, record, unchanged)

    def size(self) -> int:
        return _packed_size(self.to_wire())


@dataclass(frozen=True, slots=True)
class StatsPull:
    """Send me member ``id``'s stats if newer than version ``have``; ``fresh`` asks the
    owner to take them anew before answering (the on-demand pull)."""

    id: str
    have: int = 0
    fresh: bool = False

    def to_wire(self) -> list[Any]:
        return [self.id, self.have, self.fresh]

    @classmethod
    def from_wire(cls, obj: object) -> StatsPull:
        v = _list("stats pull", obj, 3)
        return cls(
            _label("stats pull.id", v[0], _MAX_ID),
            _count("stats pull.have", v[1]),
            _flag("stats pull.fresh", v[2]),
        )

    def size(self) -> int:
        return _packed_size(self.to_wire())


@dataclass(frozen=True, slots=True)
class StatsReply:
    """The answer to a :class:`StatsPull`, like :class:`RecordReply`."""

    id: str
    stats: Stats | None = None
    unchanged: bool = False

    def to_wire(self) -> list[Any]:
        return [self.id, None if self.stats is None else self.stats.to_wire(), self.unchanged]

    @classmethod
    def from_wire(cls, obj: object) -> StatsReply:
        v = _list("stats reply", obj, 3)
        id = _label("stats reply.id", v[0], _MAX_ID)
        stats = None if v[1] is None else Stats.from_wire(v[1], "stats reply.stats")
        unchanged = _flag("stats reply.unchanged", v[2])
        if stats is not None and (stats.id != id or unchanged):
            raise ProtocolError(
                "stats reply: stats must be of the member asked for and not 'unchanged'"
            )
        return cls(id, stats, unchanged)

    def size(self) -> int:
        return _packed_size(self.to_wire())


Pull = RecordPull | StatsPull
Reply = RecordReply | StatsReply
CatalogMessage = RecordPull | RecordReply | StatsPull | StatsReply


# -- scheduling ----------------------------------------------------------------------------------


def stats_interval(members: int, expected_size: float, rate: float, base: float) -> float:
    """Seconds between two stats pulls of the same member: every live member once per
    interval costs ``members * expected_size`` bytes, which ``rate`` bytes/s must cover."""
    return max(base, members * expected_size / rate)


@dataclass(slots=True)
class _Bucket:
    """Bytes that may be spent: refilled at ``rate`` up to ``capacity``. A cost larger
    than the capacity goes when the bucket is full, so nothing waits forever."""

    rate: float
    capacity: float
    tokens: float

    def refill(self, elapsed: float) -> None:
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)

    def affords(self, cost: float) -> bool:
        return self.tokens + 1e-6 >= min(cost, self.capacity)  # float dust is no debt

    def wait(self, cost: float) -> float:
        """Seconds until :meth:`affords` ``cost`` (never 0: time must move on)."""
        return max(0.0, min(cost, self.capacity) - self.tokens) / self.rate + 1e-6


@dataclass(slots=True)
class CatalogStatistics:
    """Counters of one catalog. Bytes are encoded sizes of the catalog's pulls and replies."""

    record_pulls: int = 0
    stats_pulls: int = 0
    #: Of the stats pulls, those asked for with :meth:`Catalog.pull_stats_now`.
    on_demand_pulls: int = 0
    #: Pulls of the owner itself, after the vias failed.
    owner_fallbacks: int = 0
    #: Pulls answered by this node.
    record_pulls_served: int = 0
    stats_pulls_served: int = 0
    #: Answers received: records and stats newly held, "unchanged", "not held", none.
    records_received: int = 0
    stats_received: int = 0
    unchanged: int = 0
    not_held: int = 0
    timeouts: int = 0
    #: Replies that matched no pull in flight (late, or never asked for): dropped.
    unsolicited: int = 0
    #: Pulls that were due and had to wait for the budget (each counted once).
    deferred: int = 0
    #: Records of another mesh (gossip reached across meshes): refused, never listed.
    foreign: int = 0
    #: Bytes of pulls sent and replies received (the budget's view), and of replies sent.
    bytes_pulled: int = 0
    bytes_served: int = 0


@dataclass(slots=True)
class _Held:
    record: Record
    size: int


@dataclass(slots=True)
class _Want:
    """A member's record that this node wants (a newer version was advertised)."""

    id: str
    version: int
    owner: str
    since: float
    vias: list[str] = field(default_factory=list)
    tries: int = 0
    #: The pull in flight: its address, whether that is the owner, deadline, charged bytes.
    pending: str | None = None
    pending_owner: bool = False
    pending_until: float = 0.0
    charged: int = 0
    not_before: float = 0.0
    backoff: float = 0.0
    deferred: bool = False


@dataclass(slots=True)
class _StatsPending:
    until: float
    charged: int
    on_demand: bool
    #: Fresh pulls sent behind this one: their replies follow its reply (one connection).
    fresh_behind: int = 0


class Catalog:
    """This node's record and stats, and what it holds of the other members'.

    ``local`` is this node's record (its version is raised to at least 1); it must fit
    ``max_record_size`` or :class:`RecordTooLarge` is raised. ``live`` in :meth:`tick` is
    the live members as ``(id, address)`` (this node may be among them; it is skipped).
    """

    def __init__(
        self,
        local: Record,
        settings: MembershipSettings,
        rng: random.Random,
        now: float,
        *,
        max_record_size: int = MAX_RECORD_SIZE,
        stats_interval: float = 10.0,
        pull_timeout: float = 2.0,
        max_tries: int = 3,
        owner_after: float = 5.0,
        max_in_flight: int = 8,
        burst: float = 2.0,
        expected_record_size: int = 1_000,
        expected_stats_size: int = 300,
    ) -> None:
        self.id = local.id
        self.settings = settings
        self.statistics = CatalogStatistics()
        self.max_record_size = max_record_size
        self.base_stats_interval = stats_interval
        self.pull_timeout = pull_timeout
        self.max_tries = max_tries
        self.owner_after = owner_after
        self.max_in_flight = max_in_flight
        self._rng = rng
        budget = float(settings.budget)
        self._membership = _Bucket(budget * MEMBERSHIP_SHARE, budget * MEMBERSHIP_SHARE * burst, 0)
        self._records_bucket = _Bucket(budget * RECORD_SHARE, budget * RECORD_SHARE * burst, 0)
        self._stats_bucket = _Bucket(budget * STATS_SHARE, budget * STATS_SHARE * burst, 0)
        for bucket in (self._membership, self._records_bucket, self._stats_bucket):
            bucket.tokens = bucket.capacity
        self._last_refill = now
        # Running averages: a full record reply; a stats pull and its reply (full or not).
        self._record_size = float(expected_record_size)
        self._stats_size = float(expected_stats_size)
        self._records: dict[str, _Held] = {}
        self._stats: dict[str, Stats] = {}
        self._wants: dict[str, _Want] = {}
        self._pending: dict[str, _Want] = {}
        self._stats_pending: dict[str, _StatsPending] = {}
        self._record_wake = math.inf
        self._stats_due = now + rng.uniform(0.0, stats_interval)
        self._stats_order: list[tuple[str, str]] = []
        self._stats_cursor = 0
        self._stats_waiting = False
        self._gone: set[str] = set()
        # Members whose first record was just held and whose stats are not: their stats
        # are pulled before the round's (a new member is listed with its load at once).
        self._stats_first: dict[str, str] = {}
        self._foreign: set[str] = set()  # members whose record is of another mesh
        self._first_wake = math.inf
        first = dataclasses.replace(local, version=max(1, local.version))
        self._records[self.id] = _Held(first, self._check(first))

    # -- this node's own listing -------------------------------------------------------------

    @property
    def version(self) -> int:
        """The version of this node's record (pass it to ``membership.set_versions``)."""
        return self._records[self.id].record.version

    @property
    def local(self) -> Record:
        return self._records[self.id].record

    def publish(self, record: Record) -> int:
        """Make ``record`` this node's listing under the next version, and return it (for
        ``membership.set_versions(record=...)``). Refused, changing nothing, with
        :class:`RecordTooLarge` past ``max_record_size`` or :class:`ProtocolError` when a
        peer could not read it."""
        if record.id != self.id:
            raise ValueError(f"this catalog lists node {self.id}, not {record.id}")
        new = dataclasses.replace(record, version=self.version + 1)
        self._records[self.id] = _Held(new, self._check(new))
        return new.version

    def set_stats(self, stats: Stats) -> int:
        """This node's load now; returns the stats version (for
        ``membership.set_versions(stats=...)``), raised only when more than the uptime
        and ``taken_at`` changed."""
        if stats.id != self.id:
            raise ValueError(f"this catalog lists node {self.id}, not {stats.id}")
        old = self._stats.get(self.id)
        version = 1 if old is None else old.version + (not stats.same_load(old))
        new = dataclasses.replace(stats, version=version)
        Stats.from_wire(new.to_wire(), "this node's stats")  # the rules peers apply
        self._stats[self.id] = new
        return version

    def _check(self, record: Record) -> int:
        return check_record(record, self.max_record_size)

    # -- what this node holds ------------------------------------------------------------------

    def record(self, id: str) -> Record | None:
        held = self._records.get(id)
        return None if held is None else held.record

    def records(self) -> list[Record]:
        """Every record held, this node's own included."""
        return [h.record for h in self._records.values()]

    def stats(self, id: str) -> Stats | None:
        return self._stats.get(id)

    def forget(self, id: str) -> None:
        """Member ``id`` failed, left or was replaced: drop its record, stats and pulls."""
        if id == self.id:
            return
        self._records.pop(id, None)
        self._stats.pop(id, None)
        self._wants.pop(id, None)
        self._pending.pop(id, None)
        self._stats_pending.pop(id, None)
        self._stats_first.pop(id, None)
        self._gone.add(id)

    # -- input from membership and the transport ---------------------------------------------

    def advert(self, advert: Advert, owner: str, now: float) -> None:
        """Membership heard of a newer record of member ``advert.id`` from the node at
        ``advert.via``; ``owner`` is the member's own address (``membership.get(id)``),
        the last resort."""
        id, version, via = advert.id, advert.version, advert.via
        if id == self.id or id in self._foreign:
            return
        held = self._records.get(id)
        if held is not None and held.record.version >= version:
            return
        want = self._wants.get(id)
        if want is None:
            want = self._wants[id] = _Want(id, version, owner, now)
        elif version > want.version:
            want.version = version
        if owner:
            want.owner = owner
        if via and via != owner and via not in want.vias and via != want.pending:
            want.vias.append(via)
        if want.pending is None:
            want.not_before = min(want.not_before, now)
            self._record_wake = min(self._record_wake, now)

    def membership_sent(self, size: int, now: float) -> None:
        """Membership sent ``size`` bytes: past its share they are taken from the stats
        budget, then from the records budget (membership has first call)."""
        self._refill(now)
        self._membership.tokens -= size
        debt = -self._membership.tokens
        if debt <= 0:
            return
        self._membership.tokens = 0
        for bucket in (self._stats_bucket, self._records_bucket):
            take = min(debt, max(0.0, bucket.tokens))
            bucket.tokens -= take
            debt -= take
        self._stats_bucket.tokens -= debt

    def answer(self, pull: Pull) -> Reply:
        """The reply to a peer's pull, from what this node holds. A :class:`StatsPull` of
        this node with ``fresh`` set should follow a :meth:`set_stats` by the node."""
        reply: Reply
        if isinstance(pull, RecordPull):
            self.statistics.record_pulls_served += 1
            held = self._records.get(pull.id)
            if held is None or held.record.version < pull.have:
                reply = RecordReply(pull.id)
            elif held.record.version == pull.have:
                reply = RecordReply(pull.id, unchanged=True)
            else:
                reply = RecordReply(pull.id, held.record)
        else:
            self.statistics.stats_pulls_served += 1
            stats = self._stats.get(pull.id)
            if stats is None or stats.version < pull.have:
                reply = StatsReply(pull.id)
            elif stats.version == pull.have and not pull.fresh:
                reply = StatsReply(pull.id, unchanged=True)
            else:
                reply = StatsReply(pull.id, stats)
        self.statistics.bytes_served += reply.size()
        return reply

    def apply(self, reply: Reply, now: float) -> list[tuple[str, int]]:
        """Take a reply to one of this node's pulls. Returns the ``(id, version)`` of
        records newly held, for ``membership.hold_record``."""
        self._refill(now)
        if isinstance(reply, StatsReply):
            self._apply_stats(reply, now)
            return []
        want = self._pending.pop(reply.id, None)
        if want is None or want.pending is None:
            self.statistics.unsolicited += 1
            return []
        size = reply.size()
        self._settle(self._records_bucket, want.charged, RecordPull(reply.id).size() + size)
        held = self._records.get(reply.id)
        record = reply.record
        if record is None:
            if reply.unchanged:
                self.statistics.unchanged += 1
            else:
                self.statistics.not_held += 1
            self._failed(want, now)
            return []
        self.statistics.records_received += 1
        self._record_size += (size - self._record_size) / 8
        want.pending = None
        if record.mesh != self.local.mesh:
            self.statistics.foreign += 1
            self._wants.pop(reply.id, None)
            self._foreign.add(reply.id)  # not pulled again, whatever it advertises
            return []
        newly = []
        if held is None or record.version > held.record.version:
            self._records[reply.id] = _Held(record, record.size())
            newly.append((reply.id, record.version))
            if held is None and reply.id not in self._stats:
                self._gone.discard(reply.id)  # failed once, back now
                self._stats_first[reply.id] = want.owner
                self._first_wake = now
        if record.version >= want.version:
            del self._wants[reply.id]
        else:  # an older one than advertised: keep looking
            self._failed(want, now)
        if self._wants:
            self._record_wake = min(self._record_wake, now)
        return newly

    def _apply_stats(self, reply: StatsReply, now: float) -> None:
        pending = self._stats_pending.pop(reply.id, None)
        if pending is None:
            self.statistics.unsolicited += 1
            return
        if pending.fresh_behind:
            behind = _StatsPending(
                pending.until, StatsPull(reply.id).size(), True, pending.fresh_behind - 1
            )
            self._stats_pending[reply.id] = behind
        size = StatsPull(reply.id).size() + reply.size()
        if not pending.on_demand:
            self._settle(self._stats_bucket, pending.charged, size)
            self._stats_size += (size - self._stats_size) / 8
        else:
            self.statistics.bytes_pulled += size - pending.charged
        if reply.stats is None:
            if reply.unchanged:
                self.statistics.unchanged += 1
            else:
                self.statistics.not_held += 1
            return
        self.statistics.stats_received += 1
        held = self._stats.get(reply.id)
        if held is None or reply.stats.version >= held.version:
            self._stats[reply.id] = reply.stats

    def _settle(self, bucket: _Bucket, charged: int, real: int) -> None:
        """Replace the estimate charged for a pull by its real cost."""
        bucket.tokens -= real - charged
        self.statistics.bytes_pulled += real - charged

    def _failed(self, want: _Want, now: float) -> None:
        """The pull in flight gave nothing: the next source, after a pause past the owner."""
        want.tries += 1
        if want.pending_owner:
            want.backoff = min(60.0, max(self.pull_timeout, 2 * want.backoff))
            want.not_before = now + want.backoff
            want.tries = 0
            want.since = now
        else:
            want.not_before = now
        want.pending = None
        self._record_wake = min(self._record_wake, want.not_before)

    # -- the schedule -----------------------------------------------------------------------

    def stats_interval(self, members: int) -> float:
        """Seconds between two pulls of one member's stats in a mesh of ``members``."""
        return stats_interval(
            members, self._stats_size, self._stats_bucket.rate, self.base_stats_interval
        )

    def tick(self, now: float, live: Sequence[tuple[str, str]]) -> list[tuple[str, Pull]]:
        """The pulls to send now, as ``(address, pull)``: records first, then stats."""
        self._refill(now)
        out: list[tuple[str, Pull]] = []
        self._tick_records(now, out)
        self._tick_stats(now, live, out)
        return out

    def pull_stats_now(self, id: str, address: str, now: float) -> tuple[str, StatsPull]:
        """Fresh stats of member ``id`` at ``address``, outside the budget: send the pull
        returned; the reply goes to :meth:`apply` like any other."""
        pull = StatsPull(id, 0, fresh=True)
        size = pull.size()
        ahead = self._stats_pending.get(id)
        if ahead is None:
            self._stats_pending[id] = _StatsPending(now + self.pull_timeout, size, on_demand=True)
        else:  # the reply in flight is older: wait for this one's too
            ahead.until = now + self.pull_timeout
            ahead.fresh_behind += 1
        self.statistics.stats_pulls += 1
        self.statistics.on_demand_pulls += 1
        self.statistics.bytes_pulled += size
        return address, pull

    def next_deadline(self) -> float:
        """When :meth:`tick` should run next (math.inf: only after new input)."""
        deadline = min(self._record_wake, self._stats_due, self._first_wake)
        for want in self._pending.values():
            deadline = min(deadline, want.pending_until)
        for pending in self._stats_pending.values():
            deadline = min(deadline, pending.until)
        return deadline

    def _refill(self, now: float) -> None:
        elapsed = now - self._last_refill
        if elapsed > 0:
            for bucket in (self._membership, self._records_bucket, self._stats_bucket):
                bucket.refill(elapsed)
            self._last_refill = now

    def _tick_records(self, now: float, out: list[tuple[str, Pull]]) -> None:
        for want in [w for w in self._pending.values() if now >= w.pending_until]:
            self.statistics.timeouts += 1
            del self._pending[want.id]
            self._failed(want, now)
        self._record_wake = math.inf
        bucket = self._records_bucket
        for want in self._wants.values():
            if want.pending is not None:
                continue
            if now < want.not_before:
                self._record_wake = min(self._record_wake, want.not_before)
                continue
            if len(self._pending) >= self.max_in_flight:
                return  # a reply or a timeout wakes the next one
            held = self._records.get(want.id)
            pull = RecordPull(want.id, 0 if held is None else held.record.version)
            estimate = pull.size() + round(self._record_size if held is None else held.size)
            if not bucket.affords(estimate):
                if not want.deferred:
                    want.deferred = True
                    self.statistics.deferred += 1
                self._record_wake = now + bucket.wait(estimate)
                return
            address, owner = self._source(want, now)
            if not address:  # nobody to ask: wait for another advert
                want.not_before = math.inf
                continue
            bucket.tokens -= estimate
            want.deferred = False
            want.pending, want.pending_owner = address, owner
            want.pending_until = now + self.pull_timeout
            want.charged = estimate
            self._pending[want.id] = want
            self.statistics.record_pulls += 1
            self.statistics.owner_fallbacks += owner
            self.statistics.bytes_pulled += estimate
            out.append((address, pull))

    def _source(self, want: _Want, now: float) -> tuple[str, bool]:
        """A random via that has not been asked yet; the owner past a few tries or
        ``owner_after`` seconds, or when no via is left."""
        if want.vias and want.tries < self.max_tries and now < want.since + self.owner_after:
            return want.vias.pop(self._rng.randrange(len(want.vias))), False
        return want.owner, True

    def _tick_stats(
        self, now: float, live: Sequence[tuple[str, str]], out: list[tuple[str, Pull]]
    ) -> None:
        for id in [i for i, p in self._stats_pending.items() if now >= p.until]:
            del self._stats_pending[id]
            self.statistics.timeouts += 1
        if now >= self._first_wake:
            self._pull_first_stats(now, out)
        members = len(live)
        interval = self.stats_interval(members)
        if now - self._stats_due > interval:
            self._stats_due = now  # a stalled loop does not pull a backlog in one burst
        while now >= self._stats_due:
            if self._stats_cursor >= len(self._stats_order):
                self._stats_order = [m for m in live if m[0] != self.id]
                self._rng.shuffle(self._stats_order)
                self._stats_cursor = 0
                self._gone.clear()
                if not self._stats_order:
                    self._stats_due = now + self.base_stats_interval
                    return
            id, address = self._stats_order[self._stats_cursor]
            if id in self._stats_pending or id in self._gone:
                # Its turn passes all the same: when every member has a pull in flight
                # (silent peers, a cut-off node), the schedule still moves on.
                self._stats_cursor += 1
                self._stats_due += interval / max(1, members)
                continue
            wait = self._pull_stats(id, address, now, out)
            if wait:
                self._stats_due = now + wait
                return
            self._stats_cursor += 1
            self._stats_due += interval / max(1, members)

    def _pull_first_stats(self, now: float, out: list[tuple[str, Pull]]) -> None:
        """Pull the stats of members just listed, as far as the budget goes."""
        first = self._stats_first
        while first:
            id, address = next(iter(first.items()))
            if id not in self._stats and id not in self._stats_pending and id not in self._gone:
                wait = self._pull_stats(id, address, now, out)
                if wait:
                    self._first_wake = now + wait
                    return
            del first[id]
        self._first_wake = math.inf

    def _pull_stats(self, id: str, address: str, now: float, out: list[tuple[str, Pull]]) -> float:
        """Send a pull of ``id``'s stats if the budget affords it: 0.0, else the seconds to
        wait for it (counted once as deferred until a pull goes)."""
        estimate = round(self._stats_size)
        bucket = self._stats_bucket
        if not bucket.affords(estimate):
            if not self._stats_waiting:
                self._stats_waiting = True
                self.statistics.deferred += 1
            return bucket.wait(estimate)
        self._stats_waiting = False
        bucket.tokens -= estimate
        have = self._stats.get(id)
        self._stats_pending[id] = _StatsPending(now + self.pull_timeout, estimate, False)
        self.statistics.stats_pulls += 1
        self.statistics.bytes_pulled += estimate
        out.append((address, StatsPull(id, 0 if have is None else have.version)))
        return 0.0
