"""The one-frame msgpack codec of mesh messages (pure: no sockets, no clock); the
messages themselves are in mesh/_wire/messages.py.

Every ROUTER/DEALER message is one msgpack array ``[version, kind, field, ...]``.
Fields are positional; a receiver ignores trailing fields it does not know, and
fields added later always have defaults, so old and new nodes understand each
other. HELLO, WELCOME and ERROR keep their layout in every protocol version, so
two nodes can always tell each other which versions they speak. Events on PUB
sockets are two frames, ``[topic, msgpack array]``, so ZeroMQ filters on the
topic at the publisher. ``docs/protocol.md`` is the byte-level specification.

The decoding rule: :meth:`Codec.decode` returns a message or raises
:class:`ProtocolError`, whatever the bytes. Encoding applies the same limits, so
a node never sends what its peer would refuse.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgpack

from .._config import Limits
from .._core.events import Event
from .._errors import ProtocolError
from .messages import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Call,
    Cancel,
    Credit,
    Error,
    EventBatch,
    Goodbye,
    Hello,
    Kind,
    Message,
    Reply,
    StreamEnd,
    StreamItem,
    Welcome,
)

__all__ = [
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "Call",
    "Cancel",
    "Codec",
    "Credit",
    "Error",
    "Event",
    "EventBatch",
    "Goodbye",
    "Hello",
    "Kind",
    "Message",
    "Reply",
    "StreamEnd",
    "StreamItem",
    "TypeRegistry",
    "Welcome",
    "default_types",
    "negotiate",
    "register_type",
]


_U64_MAX: Final = 2**64 - 1


# Plain ints for the codec's fast paths (comparing with an IntEnum member is slower).
_CALL: Final = int(Kind.CALL)
_REPLY: Final = int(Kind.REPLY)
_EVENT_BATCH: Final = int(Kind.EVENT_BATCH)
#: Bytes of an EVENT_BATCH beyond its topic, publisher and packed items, at most: the
#: array headers, version, kind, str headers, first_seq and timestamp.
_BATCH_OVERHEAD: Final = 64

#: Kinds whose layout is the same in every protocol version (the handshake).
_VERSIONLESS: Final = frozenset({Kind.HELLO, Kind.WELCOME, Kind.ERROR})


# -- field checks ---------------------------------------------------------------------------

_Check = Callable[[Any], bool]
_REQUIRED: Final = object()


def _is_u64(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _U64_MAX


def _is_version(v: Any) -> bool:
    return type(v) is int and 1 <= v <= 0xFFFF


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_opt_bytes(v: Any) -> bool:
    return v is None or type(v) is bytes


def _is_opt_u64(v: Any) -> bool:
    return v is None or _is_u64(v)


def _is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def _is_list(v: Any) -> bool:
    return type(v) is list


def _is_nonempty_list(v: Any) -> bool:
    return type(v) is list and len(v) > 0


def _is_map(v: Any) -> bool:
    return type(v) is dict


def _is_str_map(v: Any) -> bool:
    return type(v) is dict and all(type(x) is str for x in v.values())


def _is_any(v: Any) -> bool:
    return True


_Spec = tuple[tuple[str, _Check, Any], ...]

_SPECS: dict[int, tuple[type[Any], _Spec]] = {
    Kind.HELLO: (
        Hello,
        (
            ("ref", _is_u64, _REQUIRED),
            ("node_id", _is_str, _REQUIRED),
            ("name", _is_str, _REQUIRED),
            ("mesh", _is_str, _REQUIRED),
            ("min_version", _is_version, _REQUIRED),
            ("max_version", _is_version, _REQUIRED),
            ("services", _is_str_map, {}),
            ("public_key", _is_opt_bytes, None),
        ),
    ),
    Kind.WELCOME: (
        Welcome,
        (
            ("ref", _is_u64, _REQUIRED),
            ("node_id", _is_str, _REQUIRED),
            ("name", _is_str, _REQUIRED),
            ("mesh", _is_str, _REQUIRED),
            ("min_version", _is_version, _REQUIRED),
            ("max_version", _is_version, _REQUIRED),
            ("version", _is_version, _REQUIRED),
            ("services", _is_str_map, {}),
            ("public_key", _is_opt_bytes, None),
        ),
    ),
    Kind.CALL: (
        Call,
        (
            ("call_id", _is_u64, _REQUIRED),
            ("target", _is_str, _REQUIRED),
            ("args", _is_list, []),
            ("kwargs", _is_map, {}),
            ("deadline_ms", _is_opt_u64, None),
            ("credit", _is_u64, 0),
            ("trace_id", _is_str, ""),
            ("attempt", _is_version, 1),
        ),
    ),
    Kind.REPLY: (Reply, (("call_id", _is_u64, _REQUIRED), ("result", _is_any, None))),
    Kind.ERROR: (
        Error,
        (
            ("ref", _is_u64, _REQUIRED),
            ("code", _is_str, _REQUIRED),
            ("message", _is_str, _REQUIRED),
            ("type", _is_str, ""),
            ("traceback", _is_str, ""),
        ),
    ),
    Kind.STREAM_ITEM: (StreamItem, (("call_id", _is_u64, _REQUIRED), ("item", _is_any, None))),
    Kind.STREAM_END: (StreamEnd, (("call_id", _is_u64, _REQUIRED),)),
    Kind.CREDIT: (Credit, (("call_id", _is_u64, _REQUIRED), ("n", _is_u64, _REQUIRED))),
    Kind.CANCEL: (Cancel, (("call_id", _is_u64, _REQUIRED),)),
    Kind.GOODBYE: (Goodbye, (("node_id", _is_str, _REQUIRED),)),
    Kind.EVENT: (
        Event,
        (
            ("topic", _is_str, _REQUIRED),
            ("publisher", _is_str, _REQUIRED),
            ("seq", _is_u64, _REQUIRED),
            ("timestamp", _is_number, _REQUIRED),
            ("data", _is_any, None),
        ),
    ),
    Kind.EVENT_BATCH: (
        EventBatch,
        (
            ("topic", _is_str, _REQUIRED),
            ("publisher", _is_str, _REQUIRED),
            ("first_seq", _is_u64, _REQUIRED),
            ("timestamp", _is_number, _REQUIRED),
            ("items", _is_nonempty_list, _REQUIRED),
        ),
    ),
}

_KIND_OF: dict[type[Any], Kind] = {cls: Kind(kind) for kind, (cls, _) in _SPECS.items()}

#: Fields that carry user values: their content is walked for depth and key types.
_PAYLOAD_FIELDS: Final = frozenset(
    {"args", "kwargs", "result", "item", "data", "services", "items"}
)


#: Per kind, for encoding: (field, check, carries user values).
_ENCODE: dict[int, tuple[tuple[str, _Check, bool], ...]] = {
    kind: tuple((name, check, name in _PAYLOAD_FIELDS) for name, check, _ in spec)
    for kind, (_, spec) in _SPECS.items()
}
#: Per kind, for decoding: (class, (field, check, carries user values, default), required).
_DECODE: dict[int, tuple[type[Any], tuple[tuple[str, _Check, bool, Any], ...], int]] = {
    kind: (
        cls,
        tuple((name, check, name in _PAYLOAD_FIELDS, default) for name, check, default in spec),
        sum(1 for _, _, default in spec if default is _REQUIRED),
    )
    for kind, (cls, spec) in _SPECS.items()
}

# -- extension types ------------------------------------------------------------------------

T = TypeVar("T")

_EXT_UUID: Final = 1
_RESERVED_EXT_CODES: Final = range(0, 16)


@dataclass(frozen=True, slots=True)
class _ExtType:
    cls: type[Any]
    code: int
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


class TypeRegistry:
    """Extra Python types carried as msgpack ext values. Both sides must register them.

    ``datetime`` (timezone-aware, as the msgpack timestamp, decoded in UTC) and
    ``UUID`` are built in. Codes 0-15 are reserved for mesh; use 16-127.
    """

    def __init__(self) -> None:
        self._by_type: dict[type[Any], _ExtType] = {}
        self._by_code: dict[int, _ExtType] = {}

    def register(
        self,
        cls: type[T],
        code: int,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
    ) -> None:
        """Carry instances of ``cls`` as ext ``code``, using ``encode``/``decode``."""
        if type(code) is not int or not 16 <= code <= 127:
            raise ValueError(f"ext code must be 16..127 (0-15 are mesh's own), got {code!r}")
        if code in self._by_code and self._by_code[code].cls is not cls:
            raise ValueError(f"ext code {code} is already used by {self._by_code[code].cls!r}")
        entry = _ExtType(cls, code, encode, decode)
        self._by_type[cls] = entry
        self._by_code[code] = entry

    def knows(self, value: Any) -> bool:
        return type(value) in self._by_type

    def pack(self, value: Any) -> msgpack.ExtType | msgpack.Timestamp:
        if isinstance(value, uuid.UUID):
            return msgpack.ExtType(_EXT_UUID, value.bytes)
        if isinstance(value, _dt.datetime):
            if value.tzinfo is not None:  # a subclass (e.g. pandas Timestamp): msgpack packs
                return msgpack.Timestamp.from_datetime(value)  # only exact datetimes itself
            raise ProtocolError(
                "cannot send a naive datetime (no tzinfo): its meaning differs between "
                "hosts; use an aware one, e.g. datetime.now(timezone.utc)"
            )
        entry = self._by_type.get(type(value))
        if entry is None:
            raise ProtocolError(f"cannot send a value of type {type(value).__name__}")
        data = entry.encode(value)
        if not isinstance(data, bytes):
            raise ProtocolError(f"encoder for {entry.cls.__name__} returned {type(data).__name__}")
        return msgpack.ExtType(entry.code, data)

    def unpack(self, code: int, data: bytes) -> Any:
        if code == _EXT_UUID:
            if len(data) != 16:
                raise ProtocolError(f"UUID ext value of {len(data)} bytes (expected 16)")
            return uuid.UUID(bytes=data)
        entry = self._by_code.get(code)
        if entry is None:
            raise ProtocolError(f"unknown ext type {code} (register it with mesh.register_type)")
        try:
            return entry.decode(data)
        except Exception as exc:
            raise ProtocolError(f"ext type {code} ({entry.cls.__name__}): {exc}") from exc


#: The registry that codecs use unless given another.
default_types = TypeRegistry()


def register_type(
    cls: type[T], code: int, encode: Callable[[T], bytes], decode: Callable[[bytes], T]
) -> None:
    """Register an extra type in :data:`default_types` (see :class:`TypeRegistry`)."""
    default_types.register(cls, code, encode, decode)


# -- the codec ------------------------------------------------------------------------------

_SCALARS: Final = frozenset({str, int, float, bool, type(None), bytes})
#: Frames up to this size are decoded by a reused msgpack.Unpacker (see Codec).
SMALL_FRAME: Final = 64 * 1024
_BINARY: Final = (bytes, bytearray, memoryview)
_SCALAR_CLASSES: Final = (str, int, float, type(None), *_BINARY)


class Codec:
    """Encodes and decodes messages within ``limits``. Not thread-safe; one per node."""

    __slots__ = ("_limits", "_packer", "_types", "_unpack_options", "_unpacked", "_unpacker")

    def __init__(self, limits: Limits | None = None, types: TypeRegistry | None = None) -> None:
        self._limits = limits or Limits()
        self._types = types or default_types
        self._packer = msgpack.Packer(use_bin_type=True, datetime=True, default=self._types.pack)
        size = self._limits.max_message_size
        self._unpack_options: dict[str, Any] = dict(
            raw=False,
            use_list=True,
            strict_map_key=True,
            timestamp=3,
            ext_hook=self._types.unpack,
            max_str_len=size,
            max_bin_len=size,
            max_ext_len=size,
            max_array_len=self._limits.max_collection,
            max_map_len=self._limits.max_collection,
        )
        # Small frames (every call's) go through one reused Unpacker: unpackb parses its
        # ten options on every call (0.34 against 0.16 us for a REPLY). Large frames
        # take unpackb, so the Unpacker's buffer never grows past SMALL_FRAME.
        self._unpacker = self._new_unpacker()

    def _new_unpacker(self) -> msgpack.Unpacker:
        """A fresh Unpacker; ``_unpacked`` counts what it consumed (its ``tell()``)."""
        self._unpacked = 0
        return msgpack.Unpacker(max_buffer_size=SMALL_FRAME, **self._unpack_options)

    @property
    def limits(self) -> Limits:
        return self._limits

    # encoding

    def encode(self, message: Message, version: int = PROTOCOL_MAX) -> bytes:
        """One frame for ``message``; raises ProtocolError for what a peer would refuse."""
        if type(message) is Reply:
            # The answer to every call: _pack's checks written out (see encode_call).
            call_id, result = message.call_id, message.result
            if type(call_id) is int and 0 <= call_id <= _U64_MAX:
                if type(result) not in _SCALARS:
                    self._check_value(result, "result")
                return self._finish(Kind.REPLY, [version, _REPLY, call_id, result])
        kind = _KIND_OF.get(type(message))
        if kind is None or kind is Kind.EVENT or kind is Kind.EVENT_BATCH:
            raise ProtocolError(f"not a message: {message!r}")
        return self._pack(kind, message, version)

    def encode_call(
        self,
        call_id: int,
        target: str,
        args: list[Any],
        kwargs: dict[str, Any],
        deadline_ms: int | None,
        credit: int,
        trace_id: str,
        attempt: int = 1,
        version: int = PROTOCOL_MAX,
    ) -> bytes:
        """The frame of ``Call(call_id, target, ...)``, without making the Call (the hot
        path of every call). Same checks and errors as :meth:`encode`."""
        # The checks of the CALL fields (_SPECS), of _check_value's flat list and of
        # _finish, written out: every call comes here, and each function called costs
        # ~0.5 us on a busy machine (measured; 0.05 us in a loop). Anything unusual
        # takes the general path and its precise errors.
        if (
            type(call_id) is int
            and 0 <= call_id <= _U64_MAX
            and type(target) is str
            and type(args) is list
            and len(args) <= self._limits.max_collection
            and type(kwargs) is dict
            and (deadline_ms is None or (type(deadline_ms) is int and 0 <= deadline_ms <= _U64_MAX))
            and type(credit) is int
            and 0 <= credit <= _U64_MAX
            and type(trace_id) is str
            and type(attempt) is int
            and 1 <= attempt <= 0xFFFF
        ):
            for value in args:
                if type(value) not in _SCALARS:
                    self._check_value(args, "args")
                    break
            if kwargs:
                self._check_value(kwargs, "kwargs")
            frame = [
                version, _CALL, call_id, target, args, kwargs,
                deadline_ms, credit, trace_id, attempt,
            ]  # fmt: skip
            try:
                data: bytes = self._packer.pack(frame)
            except (OverflowError, ValueError, TypeError):
                self._packer.reset()
            else:
                if len(data) <= self._limits.max_message_size:
                    return data
        call = Call(call_id, target, args, kwargs, deadline_ms, credit, trace_id, attempt)
        return self._pack_fields(Kind.CALL, call, version)

    def encode_event(self, event: Event, version: int = PROTOCOL_MAX) -> list[bytes]:
        """The two PUB frames for ``event``: the topic, then the payload."""
        topic = event.topic.encode()
        return [topic, self._pack(Kind.EVENT, event, version)]

    def pack_event_data(self, data: Any) -> bytes:
        """``data`` of an event, packed alone: what :meth:`encode_event_batch` joins.
        Raises ProtocolError for what a peer would refuse (as :meth:`encode` does)."""
        if type(data) not in _SCALARS:
            self._check_value(data, "data")
        try:
            packed: bytes = self._packer.pack(data)
        except (OverflowError, ValueError, TypeError) as exc:
            self._packer.reset()
            raise ProtocolError(f"EVENT: cannot encode: {exc}") from exc
        if len(packed) + _BATCH_OVERHEAD > self._limits.max_message_size:
            raise ProtocolError(
                f"event data of {len(packed)} bytes exceeds the limit of "
                f"{self._limits.max_message_size} bytes (limits.max_message_size)"
            )
        return packed

    def encode_event_batch(
        self,
        topic: str,
        publisher: str,
        first_seq: int,
        timestamp: float,
        packed: list[bytes],
        version: int = PROTOCOL_MAX,
    ) -> bytes:
        """The EVENT_BATCH payload of events whose data :meth:`pack_event_data` packed:
        the header is packed as a 6-item array, its first byte made a 7-item array, and
        the items array (its header, then the packed items) appended, byte for byte
        what packing the whole message would give. The caller keeps it under
        ``max_message_size`` (:meth:`batch_room`)."""
        head: bytes = self._packer.pack(
            [version, _EVENT_BATCH, topic, publisher, first_seq, timestamp]
        )
        n = len(packed)
        count = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        return b"\x97" + head[1:] + count + b"".join(packed)

    def encode_batch(self, batch: EventBatch, version: int = PROTOCOL_MAX) -> bytes:
        """The EVENT_BATCH payload of ``batch`` (the PUB message is ``[topic, payload]``)."""
        if not batch.items:
            raise ProtocolError("EVENT_BATCH.items: a batch has at least one event")
        packed = [self.pack_event_data(item) for item in batch.items]
        payload = self.encode_event_batch(
            batch.topic, batch.publisher, batch.first_seq, batch.timestamp, packed, version
        )
        if len(payload) > self._limits.max_message_size:
            raise ProtocolError(
                f"EVENT_BATCH message of {len(payload)} bytes exceeds the limit of "
                f"{self._limits.max_message_size} bytes (limits.max_message_size)"
            )
        return payload

    def batch_room(self, topic: str, publisher: str) -> int:
        """Bytes of packed items an EVENT_BATCH of this topic and publisher may carry."""
        return (
            self._limits.max_message_size
            - _BATCH_OVERHEAD
            - len(topic.encode())
            - len(publisher.encode())
        )

    def _pack(self, kind: Kind, message: Any, version: int) -> bytes:
        if kind is Kind.CALL:  # every call: see encode_call
            return self.encode_call(
                message.call_id, message.target, message.args, message.kwargs,
                message.deadline_ms, message.credit, message.trace_id, message.attempt,
                version,
            )  # fmt: skip
        return self._pack_fields(kind, message, version)

    def _pack_fields(self, kind: Kind, message: Any, version: int) -> bytes:
        """Check each field of ``message`` by its kind's spec, in order, then pack."""
        frame: list[Any] = [version, int(kind)]
        append = frame.append
        for name, check, payload in _ENCODE[kind]:
            value = getattr(message, name)
            if not check(value):
                raise ProtocolError(f"{kind.name}.{name}: invalid value {value!r:.80}")
            if payload and type(value) not in _SCALARS:
                self._check_value(value, name)
            append(value)
        return self._finish(kind, frame)

    def _finish(self, kind: Kind, frame: list[Any]) -> bytes:
        """Pack ``frame``, the fields of a ``kind`` message, and check its size."""
        try:
            data: bytes = self._packer.pack(frame)
        except ProtocolError:
            raise
        except (OverflowError, ValueError, TypeError) as exc:
            self._packer.reset()  # drop whatever the failed pack left behind
            raise ProtocolError(f"{kind.name}: cannot encode: {exc}") from exc
        if len(data) > self._limits.max_message_size:
            raise ProtocolError(
                f"{kind.name} message of {len(data)} bytes exceeds the limit of "
                f"{self._limits.max_message_size} bytes (limits.max_message_size)"
            )
        return data

    def _check_value(self, value: Any, where: str) -> None:
        """Refuse what a peer would refuse: depth, sizes, key and value types."""
        kind = type(value)
        if kind in _SCALARS or (kind is dict and not value):
            return
        if (kind is list or kind is tuple) and len(value) <= self._limits.max_collection:
            for child in value:  # the common case: a flat list of plain values
                if type(child) not in _SCALARS:
                    break
            else:
                return
        max_depth = self._limits.max_depth
        max_items = self._limits.max_collection
        types = self._types
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, _SCALAR_CLASSES):
                if isinstance(item, _BINARY) and len(item) > self._limits.max_message_size:
                    raise ProtocolError(f"{where}: binary value too large")
                continue
            if isinstance(item, list | tuple | dict):
                if depth > max_depth:
                    raise ProtocolError(
                        f"{where}: nesting deeper than {max_depth} (limits.max_depth)"
                    )
                if len(item) > max_items:
                    raise ProtocolError(
                        f"{where}: {len(item)} items in one collection exceeds "
                        f"{max_items} (limits.max_collection)"
                    )
                if isinstance(item, dict):
                    for key, child in item.items():
                        if not isinstance(key, str):
                            raise ProtocolError(
                                f"{where}: map keys must be strings, got {type(key).__name__}"
                            )
                        if type(child) not in _SCALARS:
                            stack.append((child, depth + 1))
                else:
                    stack.extend(
                        (child, depth + 1) for child in item if type(child) not in _SCALARS
                    )
                continue
            if isinstance(item, uuid.UUID) or types.knows(item):
                continue
            if isinstance(item, _dt.datetime):
                if item.tzinfo is None:
                    types.pack(item)  # raises the clear naive-datetime error
                continue
            raise ProtocolError(f"{where}: cannot send a value of type {type(item).__name__}")

    # decoding

    def decode(self, frame: bytes) -> Message:
        """The message in ``frame``, or ProtocolError. Never raises anything else."""
        raw = self._unpack_raw(frame)
        version, kind = raw[0], raw[1]
        # The two messages of every call, complete and well-formed: built here, with the
        # checks of _build's loop written out (see encode_call). Anything else (a
        # missing or extra field, a bad value) takes _build_checked and its errors.
        if PROTOCOL_MIN <= version <= PROTOCOL_MAX:  # an int: _unpack_raw checked
            n = len(raw)
            if kind == _REPLY and n == 4:
                call_id, result = raw[2], raw[3]
                if type(call_id) is int and 0 <= call_id <= _U64_MAX:
                    if type(result) not in _SCALARS:
                        self._check_payload(result, "result", call_id)
                    return Reply(call_id, result)
            elif kind == _CALL and n == 10:
                _, _, call_id, target, args, kwargs, deadline_ms, credit, trace_id, attempt = raw
                if (
                    type(call_id) is int
                    and 0 <= call_id <= _U64_MAX
                    and type(target) is str
                    and type(args) is list
                    and type(kwargs) is dict
                    and (
                        deadline_ms is None
                        or (type(deadline_ms) is int and 0 <= deadline_ms <= _U64_MAX)
                    )
                    and type(credit) is int
                    and 0 <= credit <= _U64_MAX
                    and type(trace_id) is str
                    and type(attempt) is int
                    and 1 <= attempt <= 0xFFFF
                ):
                    for value in args:
                        if type(value) is list or type(value) is dict:
                            self._check_payload(args, "args", call_id)
                            break
                    if kwargs:
                        self._check_payload(kwargs, "kwargs", call_id)
                    return Call(
                        call_id, target, args, kwargs, deadline_ms, credit, trace_id, attempt
                    )
        message = self._build_checked(raw)
        if type(message) is Event or type(message) is EventBatch:
            raise ProtocolError("EVENT messages belong on PUB sockets, not RPC sockets")
        return message  # type: ignore[no-any-return]

    def decode_event(self, frames: list[bytes]) -> Event:
        """The one event in PUB ``frames`` ``[topic, EVENT payload]``, or ProtocolError."""
        events = self.decode_events(frames)
        if len(events) != 1:
            raise ProtocolError(f"expected one event, got a batch of {len(events)}")
        return events[0]

    def decode_events(self, frames: list[bytes]) -> list[Event]:
        """The events in PUB ``frames`` ``[topic, payload]``: one for an EVENT payload,
        each of a batch for EVENT_BATCH, in order; or ProtocolError."""
        if len(frames) != 2:
            raise ProtocolError(f"an event message has 2 frames, got {len(frames)}")
        topic, frame = frames
        raw = self._unpack_raw(frame)
        if (
            raw[1] == _EVENT_BATCH
            and len(raw) >= 7
            and raw[0] == PROTOCOL_MAX
            and type(raw[2]) is str
            and type(raw[3]) is str
            and type(raw[4]) is int
            and 0 <= raw[4] <= _U64_MAX - len(raw[6])
            and type(raw[5]) in (float, int)
            and type(raw[6]) is list
            and raw[6]
        ):
            # Every batch: the checks of _build inlined (see the CALL fast path there).
            items = raw[6]
            self._check_decoded(items, "items")
            message: Any = EventBatch(raw[2], raw[3], raw[4], float(raw[5]), items)
        else:
            message = self._build_checked(raw)
        if type(message) is Event:
            events = [message]
        elif type(message) is EventBatch:
            events = message.events()
        else:
            raise ProtocolError("expected an EVENT or EVENT_BATCH message on a PUB socket")
        if events[0].topic.encode() != topic:
            raise ProtocolError("event topic frame does not match the payload topic")
        return events

    def _unpack_raw(self, frame: bytes) -> list[Any]:
        """The msgpack array of ``frame``, checked for size, shape and kind."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise ProtocolError(f"a frame is bytes, got {type(frame).__name__}")
        if len(frame) > self._limits.max_message_size:
            raise ProtocolError(
                f"message of {len(frame)} bytes exceeds the limit of "
                f"{self._limits.max_message_size} bytes (limits.max_message_size)"
            )
        try:
            if len(frame) > SMALL_FRAME:
                raw = msgpack.unpackb(frame, **self._unpack_options)
            else:
                unpacker = self._unpacker
                unpacker.feed(frame)
                raw = unpacker.unpack()
                consumed = unpacker.tell()
                if consumed - self._unpacked != len(frame):
                    raise ValueError("extra data after the message")
                self._unpacked = consumed
        except Exception as exc:  # msgpack raises many types for bad bytes
            if len(frame) <= SMALL_FRAME:  # what it holds of this frame is garbage
                self._unpacker = self._new_unpacker()
            if isinstance(exc, ProtocolError):
                raise
            detail = str(exc) or type(exc).__name__
            raise ProtocolError(f"not a valid msgpack frame ({detail})") from exc
        if type(raw) is not list or len(raw) < 2:
            raise ProtocolError("a message is an array [version, kind, ...]")
        version, kind = raw[0], raw[1]
        if type(version) is not int or not 1 <= version <= 0xFFFF:
            raise ProtocolError(f"invalid protocol version {version!r:.40}")
        if type(kind) is not int or kind not in _SPECS:
            raise ProtocolError(f"unknown message kind {kind!r:.40}")
        return raw

    def _build_checked(self, raw: list[Any]) -> Any:
        version, kind = raw[0], raw[1]
        if kind not in _VERSIONLESS and not PROTOCOL_MIN <= version <= PROTOCOL_MAX:
            error = ProtocolError(
                f"message in protocol version {version}; "
                f"this node speaks {PROTOCOL_MIN}..{PROTOCOL_MAX}"
            )
            if len(raw) > 2 and _is_u64(raw[2]) and kind != Kind.GOODBYE:
                error.ref = raw[2]
            raise error
        try:
            return self._build(kind, raw[2:])
        except ProtocolError as exc:
            # Tell the sender which request failed, when its first field says so.
            if len(raw) > 2 and _is_u64(raw[2]) and kind != Kind.GOODBYE:
                exc.ref = raw[2]
            raise

    def _build(self, kind: int, values: list[Any]) -> Any:
        cls, spec, required = _DECODE[kind]
        if len(values) < required:
            raise ProtocolError(f"{Kind(kind).name}: missing field {spec[len(values)][0]}")
        # zip stops at the shorter: trailing fields a newer peer added are ignored
        for value, (name, check, payload, _) in zip(values, spec, strict=False):
            if not check(value):
                raise ProtocolError(
                    f"{Kind(kind).name}.{name}: invalid value of type {type(value).__name__}"
                )
            if payload and type(value) not in _SCALARS:
                self._check_decoded(value, name)
        args = values[: len(spec)]
        for _, _, _, default in spec[len(args) :]:  # fields an older peer did not send
            args.append(default.copy() if isinstance(default, dict | list) else default)
        return cls(*args)

    def _check_payload(self, value: Any, where: str, ref: int) -> None:
        """:meth:`_check_decoded`, its error telling the sender which request failed."""
        try:
            self._check_decoded(value, where)
        except ProtocolError as exc:
            exc.ref = ref
            raise

    def _check_decoded(self, value: Any, where: str) -> None:
        """Depth and key checks on a decoded value, without recursion."""
        kind = type(value)
        if kind in _SCALARS or (kind is dict and not value):
            return
        if kind is list:
            for child in value:  # the common case: a flat list of plain values
                if type(child) is list or type(child) is dict:
                    break
            else:
                return
        max_depth = self._limits.max_depth
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            kind = type(item)
            if kind is list:
                if depth > max_depth:
                    raise ProtocolError(f"{where}: nesting deeper than {max_depth}")
                stack.extend((c, depth + 1) for c in item if type(c) is list or type(c) is dict)
            elif kind is dict:
                if depth > max_depth:
                    raise ProtocolError(f"{where}: nesting deeper than {max_depth}")
                for key, child in item.items():
                    if type(key) is not str:
                        raise ProtocolError(f"{where}: map keys must be strings")
                    if type(child) is list or type(child) is dict:
                        stack.append((child, depth + 1))


def negotiate(ours: tuple[int, int], theirs: tuple[int, int]) -> int | None:
    """The highest protocol version in both ``(min, max)`` ranges, or None."""
    low, high = max(ours[0], theirs[0]), min(ours[1], theirs[1])
    return high if low <= high else None
