"""Gossip messages and their one-frame msgpack codec (pure: no sockets, no clock).

The membership messages of mesh/_core/membership.py (Ping, PingReq, Ack, Nack, Gossip, Sync)
and the catalog pulls and replies of mesh/_core/catalog.py travel in the envelope of the RPC
codec (mesh/_wire/codec.py): one msgpack array ``[version, kind, field, ...]``, kinds 16-25.
A :class:`Member` is a positional array ``[id, name, address, incarnation, status, by,
record, stats]``; a catalog message's fields are its ``to_wire()`` list. Every field is
required; trailing items a receiver does not know (in the envelope or in a member) are
ignored, so later versions can append fields. ``docs/protocol.md`` (section 10) is the
byte-level specification.

The decoding rule, as for RPC: :meth:`GossipCodec.decode` returns a message or raises
:class:`ProtocolError`, whatever the bytes. Encoding applies the same checks and limits,
so a node never sends what its peer would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, NoReturn, TypeAlias

import msgpack

from .._config import SEED_ADDRESS, Limits
from .._core.catalog import RecordPull, RecordReply, StatsPull, StatsReply
from .._core.membership import Ack, Gossip, Member, Nack, Ping, PingReq, Status, Sync
from .._errors import ProtocolError
from .._util.values import fail, flag, show
from .codec import PROTOCOL_MAX, PROTOCOL_MIN

__all__ = [
    "GossipCodec",
    "GossipKind",
    "GossipMessage",
    "source_of",
]


class GossipKind(IntEnum):
    """Kinds of gossip messages: membership 16-21, catalog 22-25 (of the 16-31 that
    mesh/_wire/codec.py reserves for membership)."""

    PING = 16
    PING_REQ = 17
    ACK = 18
    NACK = 19
    GOSSIP = 20
    SYNC = 21
    RECORD_PULL = 22
    RECORD_REPLY = 23
    STATS_PULL = 24
    STATS_REPLY = 25


GossipMessage: TypeAlias = (
    Ping | PingReq | Ack | Nack | Gossip | Sync | RecordPull | RecordReply | StatsPull | StatsReply
)

_CATALOG_TYPES: Final = (RecordPull, RecordReply, StatsPull, StatsReply)


def source_of(message: GossipMessage) -> str | None:
    """The node id ``message`` claims to come from: a membership message's ``source``;
    None for catalog messages, which do not say (their ``id`` is the member asked about)."""
    if isinstance(message, _CATALOG_TYPES):
        return None
    return message.source


# -- limits of the wire form -----------------------------------------------------------------

_U64_MAX: Final = 2**64 - 1
_MAX_ID: Final = 64
_MAX_NAME: Final = 63
_MAX_ADDRESS: Final = 256
#: Fields of a member on the wire (later versions may append more).
_MEMBER_FIELDS: Final = 8
_STATUSES: Final = tuple(Status)
#: Addresses already found valid, so a Sync of 1,000 members runs the regex once per new
#: address (~1 us each) instead of once per member; cleared when it grows past this.
_ADDRESS_CACHE_SIZE: Final = 4096

#: Members already checked, by identity for sending and by value for receiving (a node
#: sends and hears the same members again and again); cleared when one grows past this.
_MEMBER_CACHE_SIZE: Final = 16384

_new_tuple = tuple.__new__
_identity = id


def _is_address(value: str) -> bool:
    match = SEED_ADDRESS.fullmatch(value)
    return match is not None and 1 <= int(match["port"]) <= 65535


# -- field readers: each checks one field and names it in the error --------------------------


def _u64(where: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= _U64_MAX:
        fail(where, "an integer 0..2**64-1", value)
    return value


def _id(where: str, value: object) -> str:
    if type(value) is not str or not 0 < len(value) <= _MAX_ID:
        fail(where, f"a node id of 1 to {_MAX_ID} characters", value)
    return value


def _text(where: str, value: object, most: int) -> str:
    if type(value) is not str or len(value) > most:
        fail(where, f"a string of at most {most} characters", value)
    return value


def _address(where: str, value: object) -> str:
    if type(value) is not str or len(value) > _MAX_ADDRESS or not _is_address(value):
        fail(where, f"an address tcp://host:port[#KEY] of at most {_MAX_ADDRESS} characters", value)
    return value


def _status(where: str, value: object) -> Status:
    if not (type(value) is int or type(value) is Status) or not 0 <= value <= 3:
        fail(where, "a status 0..3 (alive, suspect, dead, left)", value)
    return _STATUSES[value]


def _member_error(where: str, value: object, decoding: bool) -> NoReturn:
    """Raise the error that names what is wrong with ``value`` as a member."""
    if decoding:
        if type(value) is not list:
            fail(where, f"a member array of {_MEMBER_FIELDS} items", value)
        if len(value) < _MEMBER_FIELDS:
            raise ProtocolError(f"{where}: expected {_MEMBER_FIELDS} items, got {len(value)}")
    elif type(value) is not Member:
        fail(where, "a Member", value)
    id, name, address, incarnation, status, by, record, stats = value[:_MEMBER_FIELDS]
    _id(f"{where}.id", id)
    _text(f"{where}.name", name, _MAX_NAME)
    _address(f"{where}.address", address)
    _u64(f"{where}.incarnation", incarnation)
    _status(f"{where}.status", status)
    _text(f"{where}.by", by, _MAX_ID)
    _u64(f"{where}.record", record)
    _u64(f"{where}.stats", stats)
    raise ProtocolError(f"{where}: invalid member {show(value)}")  # pragma: no cover


# -- the codec ------------------------------------------------------------------------------

_Encoder = Callable[[Any], list[Any]]
_Decoder = Callable[[list[Any]], Any]


class GossipCodec:
    """Encodes and decodes gossip messages within ``limits``. Not thread-safe; one per node."""

    __slots__ = (
        "_addresses",
        "_decoders",
        "_encoders",
        "_limits",
        "_packer",
        "_received",
        "_sent",
        "_unpack_options",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits or Limits()
        self._packer = msgpack.Packer(use_bin_type=True)
        size = self._limits.max_message_size
        self._unpack_options: dict[str, Any] = dict(
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_ext_len=size,
            max_array_len=self._limits.max_collection,
            max_map_len=self._limits.max_collection,
        )
        self._addresses: set[str] = set()
        self._sent: dict[int, Member] = {}
        self._received: dict[tuple[Any, ...], Member] = {}
        self._encoders: dict[type[Any], _Encoder] = {
            Ping: self._encode_ping,
            PingReq: self._encode_ping_req,
            Ack: self._encode_ack,
            Nack: self._encode_nack,
            Gossip: self._encode_gossip,
            Sync: self._encode_sync,
            RecordPull: self._encode_catalog,
            RecordReply: self._encode_catalog,
            StatsPull: self._encode_catalog,
            StatsReply: self._encode_catalog,
        }
        self._decoders: dict[int, _Decoder] = {
            16: self._decode_ping,
            17: self._decode_ping_req,
            18: self._decode_ack,
            19: self._decode_nack,
            20: self._decode_gossip,
            21: self._decode_sync,
            22: _catalog_decoder(GossipKind.RECORD_PULL, RecordPull.from_wire),
            23: _catalog_decoder(GossipKind.RECORD_REPLY, RecordReply.from_wire),
            24: _catalog_decoder(GossipKind.STATS_PULL, StatsPull.from_wire),
            25: _catalog_decoder(GossipKind.STATS_REPLY, StatsReply.from_wire),
        }

    @property
    def limits(self) -> Limits:
        return self._limits

    # encoding

    def encode(self, message: GossipMessage) -> bytes:
        """One frame for ``message``; raises ProtocolError for what a peer would refuse."""
        encoder = self._encoders.get(type(message))
        if encoder is None:
            raise ProtocolError(f"not a gossip message: {show(message)}")
        frame = encoder(message)
        try:
            data: bytes = self._packer.pack(frame)
        except (OverflowError, ValueError, TypeError) as exc:
            self._packer.reset()  # drop whatever the failed pack left behind
            name = GossipKind(frame[1]).name
            raise ProtocolError(f"{name}: cannot encode: {exc}") from exc
        if len(data) > self._limits.max_message_size:
            raise ProtocolError(
                f"{GossipKind(frame[1]).name} message of {len(data)} bytes exceeds the limit "
                f"of {self._limits.max_message_size} bytes (limits.max_message_size)"
            )
        if frame[1] >= GossipKind.RECORD_PULL:
            # Catalog values are checked by the rules a peer applies: decode them back.
            # (Their size is bounded by the budget, and pulls are rare next to probes.)
            self.decode(data)
        return data

    def _members(self, where: str, members: object) -> object:
        """Check ``members`` (a tuple or list of Member) for sending; returns it as is."""
        if type(members) is not tuple and type(members) is not list:
            fail(where, "a tuple of members", members)
        if len(members) > self._limits.max_collection:
            raise ProtocolError(
                f"{where}: {len(members)} members exceeds {self._limits.max_collection} "
                "(limits.max_collection)"
            )
        known = self._addresses
        sent = self._sent
        for member in members:
            if sent.get(_identity(member)) is member:
                continue  # checked before: members are immutable, and shared between messages
            # The checks of _member_error, inlined: every member of every message passes here.
            if type(member) is Member:
                node, name, address, incarnation, status, by, record, stats = member
                if (
                    type(node) is str
                    and 0 < len(node) <= _MAX_ID
                    and type(name) is str
                    and len(name) <= _MAX_NAME
                    and type(incarnation) is int
                    and 0 <= incarnation <= _U64_MAX
                    and (type(status) is Status or type(status) is int)
                    and 0 <= status <= 3
                    and type(by) is str
                    and len(by) <= _MAX_ID
                    and type(record) is int
                    and 0 <= record <= _U64_MAX
                    and type(stats) is int
                    and 0 <= stats <= _U64_MAX
                    and type(address) is str
                    and (address in known or self._new_address(address))
                ):
                    if len(sent) >= _MEMBER_CACHE_SIZE:
                        sent.clear()
                    sent[_identity(member)] = member  # held here, so the id is not reused
                    continue
            index = next(i for i, m in enumerate(members) if m is member)
            _member_error(f"{where}[{index}]", member, decoding=False)
        return members

    def _new_address(self, address: str) -> bool:
        if len(address) > _MAX_ADDRESS or not _is_address(address):
            return False
        if len(self._addresses) >= _ADDRESS_CACHE_SIZE:
            self._addresses.clear()
        self._addresses.add(address)
        return True

    def _sender(self, kind: str, source: object, reply_to: object) -> None:
        _id(f"{kind}.source", source)
        if type(reply_to) is not str or not (
            reply_to in self._addresses or self._new_address(reply_to)
        ):
            _address(f"{kind}.reply_to", reply_to)

    def _encode_ping(self, m: Ping) -> list[Any]:
        _u64("PING.seq", m.seq)
        self._sender("PING", m.source, m.reply_to)
        _id("PING.target", m.target)
        updates = self._members("PING.updates", m.updates)
        return [PROTOCOL_MAX, 16, m.seq, m.source, m.reply_to, m.target, updates]

    def _encode_ping_req(self, m: PingReq) -> list[Any]:
        _u64("PING_REQ.seq", m.seq)
        self._sender("PING_REQ", m.source, m.reply_to)
        _id("PING_REQ.target", m.target)
        _address("PING_REQ.target_address", m.target_address)
        updates = self._members("PING_REQ.updates", m.updates)
        return [
            PROTOCOL_MAX, 17, m.seq, m.source, m.reply_to, m.target, m.target_address, updates,
        ]  # fmt: skip

    def _encode_ack(self, m: Ack) -> list[Any]:
        _u64("ACK.seq", m.seq)
        _id("ACK.source", m.source)
        return [PROTOCOL_MAX, 18, m.seq, m.source, self._members("ACK.updates", m.updates)]

    def _encode_nack(self, m: Nack) -> list[Any]:
        _u64("NACK.seq", m.seq)
        _id("NACK.source", m.source)
        return [PROTOCOL_MAX, 19, m.seq, m.source]

    def _encode_gossip(self, m: Gossip) -> list[Any]:
        _id("GOSSIP.source", m.source)
        return [PROTOCOL_MAX, 20, m.source, self._members("GOSSIP.updates", m.updates)]

    def _encode_sync(self, m: Sync) -> list[Any]:
        self._sender("SYNC", m.source, m.reply_to)
        members = self._members("SYNC.members", m.members)
        flag("SYNC.reply", m.reply)
        return [PROTOCOL_MAX, 21, m.source, m.reply_to, members, m.reply]

    def _encode_catalog(self, m: RecordPull | RecordReply | StatsPull | StatsReply) -> list[Any]:
        kind = _CATALOG_KIND[type(m)]
        try:
            fields = m.to_wire()
        except Exception as exc:  # a value built with the wrong types
            raise ProtocolError(f"{kind.name}: cannot encode: {exc}") from exc
        return [PROTOCOL_MAX, int(kind), *fields]

    # decoding

    def decode(self, frame: bytes) -> GossipMessage:
        """The message in ``frame``, or ProtocolError. Never raises anything else."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise ProtocolError(f"a frame is bytes, got {type(frame).__name__}")
        if len(frame) > self._limits.max_message_size:
            raise ProtocolError(
                f"message of {len(frame)} bytes exceeds the limit of "
                f"{self._limits.max_message_size} bytes (limits.max_message_size)"
            )
        try:
            raw = msgpack.unpackb(frame, **self._unpack_options)
        except Exception as exc:  # msgpack raises many types for bad bytes
            detail = str(exc) or type(exc).__name__
            raise ProtocolError(f"not a valid msgpack frame ({detail})") from exc
        if type(raw) is not list or len(raw) < 2:
            raise ProtocolError("a message is an array [version, kind, ...]")
        version, kind = raw[0], raw[1]
        if type(version) is not int or not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
            raise ProtocolError(
                f"gossip message in protocol version {show(version)}; "
                f"this node speaks {PROTOCOL_MIN}..{PROTOCOL_MAX}"
            )
        decoder = self._decoders.get(kind) if type(kind) is int else None
        if decoder is None:
            raise ProtocolError(f"unknown gossip message kind {show(kind)}")
        return decoder(raw)  # type: ignore[no-any-return]

    def _fields(self, raw: list[Any], kind: GossipKind, names: tuple[str, ...]) -> list[Any]:
        if len(raw) < 2 + len(names):
            raise ProtocolError(f"{kind.name}: missing field {names[len(raw) - 2]}")
        return raw[2 : 2 + len(names)]

    def _decode_members(self, where: str, value: object) -> tuple[Member, ...]:
        if type(value) is not list:
            fail(where, "an array of members", value)
        if len(value) > self._limits.max_collection:  # pragma: no cover - msgpack refuses first
            raise ProtocolError(f"{where}: {len(value)} members exceeds limits.max_collection")
        known = self._addresses
        received = self._received
        members: list[Member] = []
        append = members.append
        for index, item in enumerate(value):
            if type(item) is list and len(item) >= _MEMBER_FIELDS:
                # trailing fields of a later version are ignored
                key = tuple(item) if len(item) == _MEMBER_FIELDS else tuple(item[:_MEMBER_FIELDS])
                try:
                    member = received.get(key)
                except TypeError:  # an unhashable field (an array or a map): refused below
                    member = None
                node, name, address, incarnation, status, by, record, stats = key
                if member is not None:
                    # Equal to a member decoded before; equal is not enough for the numbers
                    # (True == 1 == 1.0), so their types are checked again.
                    if (
                        type(incarnation) is int
                        and type(status) is int
                        and type(record) is int
                        and type(stats) is int
                    ):
                        append(member)
                        continue
                # The checks of _member_error, inlined: every new member passes here.
                elif (
                    type(node) is str
                    and 0 < len(node) <= _MAX_ID
                    and type(name) is str
                    and len(name) <= _MAX_NAME
                    and type(incarnation) is int
                    and 0 <= incarnation <= _U64_MAX
                    and type(status) is int
                    and 0 <= status <= 3
                    and type(by) is str
                    and len(by) <= _MAX_ID
                    and type(record) is int
                    and 0 <= record <= _U64_MAX
                    and type(stats) is int
                    and 0 <= stats <= _U64_MAX
                    and type(address) is str
                    and (address in known or self._new_address(address))
                ):
                    member = _new_tuple(
                        Member,
                        (node, name, address, incarnation, _STATUSES[status], by, record, stats),
                    )
                    if len(received) >= _MEMBER_CACHE_SIZE:
                        received.clear()
                    received[key] = member
                    append(member)
                    continue
            _member_error(f"{where}[{index}]", item, decoding=True)
        return tuple(members)

    def _decode_ping(self, raw: list[Any]) -> Ping:
        seq, source, reply_to, target, updates = self._fields(raw, GossipKind.PING, _PING)
        return Ping(
            _u64("PING.seq", seq),
            _id("PING.source", source),
            self._decode_address("PING.reply_to", reply_to),
            _id("PING.target", target),
            self._decode_members("PING.updates", updates),
        )

    def _decode_ping_req(self, raw: list[Any]) -> PingReq:
        seq, source, reply_to, target, target_address, updates = self._fields(
            raw, GossipKind.PING_REQ, _PING_REQ
        )
        return PingReq(
            _u64("PING_REQ.seq", seq),
            _id("PING_REQ.source", source),
            self._decode_address("PING_REQ.reply_to", reply_to),
            _id("PING_REQ.target", target),
            self._decode_address("PING_REQ.target_address", target_address),
            self._decode_members("PING_REQ.updates", updates),
        )

    def _decode_ack(self, raw: list[Any]) -> Ack:
        seq, source, updates = self._fields(raw, GossipKind.ACK, _ACK)
        return Ack(
            _u64("ACK.seq", seq),
            _id("ACK.source", source),
            self._decode_members("ACK.updates", updates),
        )

    def _decode_nack(self, raw: list[Any]) -> Nack:
        seq, source = self._fields(raw, GossipKind.NACK, _NACK)
        return Nack(_u64("NACK.seq", seq), _id("NACK.source", source))

    def _decode_gossip(self, raw: list[Any]) -> Gossip:
        source, updates = self._fields(raw, GossipKind.GOSSIP, _GOSSIP)
        return Gossip(_id("GOSSIP.source", source), self._decode_members("GOSSIP.updates", updates))

    def _decode_sync(self, raw: list[Any]) -> Sync:
        source, reply_to, members, reply = self._fields(raw, GossipKind.SYNC, _SYNC)
        return Sync(
            _id("SYNC.source", source),
            self._decode_address("SYNC.reply_to", reply_to),
            self._decode_members("SYNC.members", members),
            flag("SYNC.reply", reply),
        )

    def _decode_address(self, where: str, value: object) -> str:
        if type(value) is str and (value in self._addresses or self._new_address(value)):
            return value
        return _address(where, value)


_PING: Final = ("seq", "source", "reply_to", "target", "updates")
_PING_REQ: Final = ("seq", "source", "reply_to", "target", "target_address", "updates")
_ACK: Final = ("seq", "source", "updates")
_NACK: Final = ("seq", "source")
_GOSSIP: Final = ("source", "updates")
_SYNC: Final = ("source", "reply_to", "members", "reply")

_CATALOG_KIND: Final[dict[type[Any], GossipKind]] = {
    RecordPull: GossipKind.RECORD_PULL,
    RecordReply: GossipKind.RECORD_REPLY,
    StatsPull: GossipKind.STATS_PULL,
    StatsReply: GossipKind.STATS_REPLY,
}


def _catalog_decoder(kind: GossipKind, from_wire: Callable[[object], Any]) -> _Decoder:
    """A decoder for a catalog kind: its ``from_wire`` reads the fields after the kind
    (and ignores trailing ones itself); its errors get the kind's name in front."""
    name = kind.name

    def decode(raw: list[Any]) -> Any:
        try:
            return from_wire(raw[2:])
        except ProtocolError as exc:
            raise ProtocolError(f"{name}: {exc}") from exc
        except RecursionError as exc:  # repr() of a value nested ~1,000 deep, in an error
            raise ProtocolError(f"{name}: a value nested too deep") from exc

    return decode
