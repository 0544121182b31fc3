"""The wire codec: every kind round-trips, limits hold both ways, bad bytes are ProtocolError."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgpack
import pytest

from mesh import Limits, ProtocolError, TypeRegistry
from mesh._wire.codec import (
    PROTOCOL_MAX,
    SMALL_FRAME,
    Call,
    Cancel,
    Codec,
    Credit,
    Error,
    Event,
    EventBatch,
    Goodbye,
    Hello,
    Kind,
    Reply,
    StreamEnd,
    StreamItem,
    Welcome,
    negotiate,
)

codec = Codec()

EXAMPLES = [
    Hello(1, "a" * 32, "node-a", "mesh", 1, 1, {"calc": "1.2.0"}, b"k" * 32),
    Welcome(1, "b" * 32, "node-b", "mesh", 1, 3, 1, {}, None),
    Call(7, "calc.add", [1, 2.5, "x", b"\x00", None, True], {"k": [1, {"n": []}]}, 1500, 0),
    Call(2**64 - 1, "calc.count", [], {}, None, 16),
    Reply(7, {"sum": 3}),
    Error(7, "remote", "boom", "ValueError", "Traceback ..."),
    StreamItem(9, [1, 2]),
    StreamEnd(9),
    Credit(9, 32),
    Cancel(9),
    Goodbye("c" * 32),
]


def raw(*fields: Any, version: int = PROTOCOL_MAX) -> bytes:
    return msgpack.packb([version, *fields], use_bin_type=True)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips(message: Any) -> None:
    assert codec.decode(codec.encode(message)) == message


def test_event_travels_as_topic_then_payload() -> None:
    event = Event("orders.created", "d" * 32, 5, 1_700_000_000.5, {"id": 17})
    frames = codec.encode_event(event)
    assert frames[0] == b"orders.created"
    assert codec.decode_event(frames) == event
    with pytest.raises(ProtocolError, match="topic frame"):
        codec.decode_event([b"orders.other", frames[1]])
    with pytest.raises(ProtocolError, match="PUB"):
        codec.decode(frames[1])


def test_frame_starts_with_version_and_kind() -> None:
    frame = codec.encode(Cancel(9))
    assert msgpack.unpackb(frame) == [PROTOCOL_MAX, Kind.CANCEL, 9]


def test_unknown_trailing_fields_are_ignored() -> None:
    # A newer peer appends fields; this node reads what it knows.
    assert codec.decode(raw(Kind.CANCEL, 9, "future", {"x": 1})) == Cancel(9)


def test_missing_optional_fields_take_defaults() -> None:
    assert codec.decode(raw(Kind.CALL, 3, "echo.say")) == Call(3, "echo.say", [], {}, None, 0)


def test_missing_required_field_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="missing field n"):
        codec.decode(raw(Kind.CREDIT, 9))


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (raw(Kind.CALL, -1, "x.y"), "call_id"),
        (raw(Kind.CALL, 1, 5), "target"),
        (raw(Kind.CALL, 1, "x.y", "notalist"), "args"),
        (raw(Kind.CALL, True, "x.y"), "call_id"),  # a bool is not an int on the wire
        (raw(Kind.HELLO, 1, "id", "n", "m", 0, 1), "min_version"),
        (raw(Kind.HELLO, 1, "id", "n", "m", 1, 1, {"calc": 1}), "services"),
        (raw(99, 1), "unknown message kind 99"),
        (raw("CALL", 1), "unknown message kind"),
        (msgpack.packb({"version": 1}), r"array \[version, kind"),
        (msgpack.packb([1]), r"array \[version, kind"),
        (raw(Kind.CANCEL, 1, version=0), "invalid protocol version"),
        (b"", "not a valid msgpack frame"),
        (b"\xc1", "not a valid msgpack frame"),
        (b"\x92\x01\x09\x00", "not a valid msgpack frame"),  # extra data after the message
        (b"\xa2\xff\xfe", "not a valid msgpack frame"),  # invalid UTF-8
    ],
)
def test_invalid_frames_are_protocol_errors(frame: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        codec.decode(frame)


@pytest.mark.parametrize("size", [100, SMALL_FRAME + 1], ids=["small", "large"])
@pytest.mark.parametrize(
    "damage",
    [
        lambda good: good[: len(good) // 2],  # truncated
        lambda good: good + b"\x00",  # extra data
        lambda good: good + good,  # two messages in one frame
        lambda good: b"\xc1" + good,  # a byte msgpack never uses
        lambda good: b"",
    ],
    ids=["truncated", "extra byte", "two messages", "invalid byte", "empty"],
)
def test_a_bad_frame_leaves_the_codec_decoding_the_next(
    size: int, damage: Callable[[bytes], bytes]
) -> None:
    """Small frames share one streaming unpacker: what a bad frame, small or large, left
    in it must not spill into the next (small) frame."""
    fresh = Codec()
    good = fresh.encode(Reply(7, b"x" * size))
    small = fresh.encode(Reply(8, b"small"))
    for _ in range(3):
        with pytest.raises(ProtocolError, match="not a valid msgpack frame"):
            fresh.decode(damage(good))
        assert fresh.decode(small) == Reply(8, b"small")
        assert fresh.decode(good) == Reply(7, b"x" * size)


def test_future_version_is_refused_except_for_the_handshake() -> None:
    with pytest.raises(ProtocolError, match="protocol version 7"):
        codec.decode(raw(Kind.CANCEL, 1, version=7))
    # HELLO keeps its layout in every version, so a newer node can still say hello.
    hello = codec.decode(raw(Kind.HELLO, 1, "id", "n", "m", 5, 7, {}, None, "new", version=7))
    assert hello == Hello(1, "id", "n", "m", 5, 7)


def test_non_string_map_keys_are_refused_both_ways() -> None:
    with pytest.raises(ProtocolError, match="map keys must be strings"):
        codec.encode(Reply(1, {1: "x"}))
    with pytest.raises(ProtocolError, match="map key"):
        codec.decode(raw(Kind.REPLY, 1, {1: "x"}))
    with pytest.raises(ProtocolError, match="map keys must be strings"):
        codec.decode(raw(Kind.REPLY, 1, [{b"bin": 1}]))


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit_both_ways() -> None:
    small = Codec(Limits(max_depth=8))
    assert small.decode(small.encode(Reply(1, nested(8)))) == Reply(1, nested(8))
    with pytest.raises(ProtocolError, match="nesting deeper than 8"):
        small.encode(Reply(1, nested(9)))
    with pytest.raises(ProtocolError, match="nesting deeper than 8"):
        small.decode(raw(Kind.REPLY, 1, nested(9)))


@pytest.mark.parametrize("depth", [200, 1000, 5000, 100_000])
def test_very_deep_input_is_a_protocol_error_not_a_recursion_error(depth: int) -> None:
    frame = b"\x94\x01\x04\x01" + b"\x91" * depth + b"\x00"
    with pytest.raises(ProtocolError):
        codec.decode(frame)


def test_very_deep_value_is_refused_on_encode() -> None:
    with pytest.raises(ProtocolError, match="nesting"):
        codec.encode(Reply(1, nested(10_000)))


def test_collection_limit_both_ways() -> None:
    small = Codec(Limits(max_collection=10))
    small.encode(Reply(1, list(range(10))))
    with pytest.raises(ProtocolError, match="max_collection"):
        small.encode(Reply(1, list(range(11))))
    with pytest.raises(ProtocolError, match="max_collection"):
        small.encode(Call(1, "x.y", [], {str(i): i for i in range(11)}))
    with pytest.raises(ProtocolError):
        small.decode(raw(Kind.REPLY, 1, list(range(11))))
    # a header claiming 2**32-1 items in a few bytes does not allocate them
    with pytest.raises(ProtocolError):
        small.decode(b"\x93\x01\x04\x01\xdd\xff\xff\xff\xff")


def test_message_size_limit_both_ways() -> None:
    small = Codec(Limits(max_message_size=1000))
    small.encode(Reply(1, b"x" * 900))
    with pytest.raises(ProtocolError, match="exceeds the limit of 1000 bytes"):
        small.encode(Reply(1, b"x" * 1000))
    with pytest.raises(ProtocolError, match="exceeds the limit of 1000 bytes"):
        small.decode(raw(Kind.REPLY, 1, b"x" * 1000))


def test_unsupported_values_are_refused_on_encode() -> None:
    for value in ({1, 2}, Decimal("1.5"), object(), 2**64, -(2**63) - 1):
        with pytest.raises(ProtocolError):
            codec.encode(Reply(1, [value]))


def test_tuples_travel_as_lists() -> None:
    assert codec.decode(codec.encode(Reply(1, (1, (2, 3))))) == Reply(1, [1, [2, 3]])


def test_datetime_and_uuid_are_built_in() -> None:
    when = dt.datetime(2026, 11, 23, 19, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    ident = uuid.uuid4()
    decoded = codec.decode(codec.encode(Reply(1, {"when": when, "id": ident})))
    assert isinstance(decoded, Reply)
    assert decoded.result == {"when": when, "id": ident}
    assert decoded.result["when"].tzinfo == dt.UTC


def test_aware_datetime_subclasses_travel_as_timestamps() -> None:
    class Stamp(dt.datetime):
        pass

    when = Stamp(2026, 1, 1, 12, tzinfo=dt.UTC)
    decoded = codec.decode(codec.encode(Reply(1, when)))
    assert isinstance(decoded, Reply)
    assert decoded.result == when


def test_naive_datetime_is_refused_with_advice() -> None:
    with pytest.raises(ProtocolError, match="naive datetime"):
        codec.encode(Reply(1, dt.datetime(2026, 1, 1)))


def test_registered_types_round_trip() -> None:
    types = TypeRegistry()
    types.register(Decimal, 16, lambda d: str(d).encode(), lambda b: Decimal(b.decode()))
    money = Codec(types=types)
    assert money.decode(money.encode(Reply(1, [Decimal("9.99")]))) == Reply(1, [Decimal("9.99")])
    # a node without the registration refuses it clearly
    with pytest.raises(ProtocolError, match="unknown ext type 16"):
        codec.decode(money.encode(Reply(1, Decimal("1"))))
    # a decoder that fails is a ProtocolError too
    with pytest.raises(ProtocolError, match="ext type 16"):
        money.decode(raw(Kind.REPLY, 1, msgpack.ExtType(16, b"not a number")))


def test_type_registry_guards_codes() -> None:
    types = TypeRegistry()
    with pytest.raises(ValueError, match=r"16\.\.127"):
        types.register(Decimal, 1, bytes, Decimal)
    types.register(Decimal, 20, lambda d: str(d).encode(), lambda b: Decimal(b.decode()))
    with pytest.raises(ValueError, match="already used"):
        types.register(complex, 20, lambda c: b"", lambda b: 0j)


def test_bad_uuid_ext_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="UUID"):
        codec.decode(raw(Kind.REPLY, 1, msgpack.ExtType(1, b"short")))


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        ((1, 1), (1, 1), 1),
        ((1, 3), (1, 1), 1),  # new node, old peer: the old version
        ((1, 1), (1, 3), 1),  # old node, new peer
        ((2, 5), (1, 4), 4),  # the highest common
        ((2, 3), (1, 1), None),  # nothing in common
    ],
)
def test_negotiate_picks_the_highest_common_version(
    ours: tuple[int, int], theirs: tuple[int, int], expected: int | None
) -> None:
    assert negotiate(ours, theirs) == expected
    assert negotiate(theirs, ours) == expected


def test_an_event_batch_is_one_payload_of_consecutive_events() -> None:
    batch = EventBatch("t.x", "p" * 32, 7, 1.5, [1, {"a": [2]}, b"\x00"])
    payload = codec.encode_batch(batch)
    # byte for byte what packing the whole message gives
    assert payload == msgpack.packb(
        [PROTOCOL_MAX, Kind.EVENT_BATCH, "t.x", "p" * 32, 7, 1.5, batch.items], use_bin_type=True
    )
    events = codec.decode_events([b"t.x", payload])
    assert events == [Event("t.x", "p" * 32, 7 + i, 1.5, d) for i, d in enumerate(batch.items)]
    many = EventBatch("t.x", "p" * 32, 1, 0.0, list(range(300)))  # an array 16 header
    assert [e.seq for e in codec.decode_events([b"t.x", codec.encode_batch(many)])] == list(
        range(1, 301)
    )
    with pytest.raises(ProtocolError, match="topic frame"):
        codec.decode_events([b"t.y", payload])
    with pytest.raises(ProtocolError, match="PUB"):
        codec.decode(payload)
    for bad in (
        [PROTOCOL_MAX, Kind.EVENT_BATCH, "t.x", "p", 1, 0.0, []],  # no events
        [PROTOCOL_MAX, Kind.EVENT_BATCH, "t.x", "p", 0, 0.0, "x"],  # items not a list
        [PROTOCOL_MAX, Kind.EVENT_BATCH, "t.x", "p", -1, 0.0, [1]],  # a negative number
        [PROTOCOL_MAX, Kind.EVENT_BATCH, "t.x", "p", 1, 0.0, [{1: 2}]],  # a non-str key
    ):
        with pytest.raises(ProtocolError):
            codec.decode_events([b"t.x", msgpack.packb(bad)])
    with pytest.raises(ProtocolError, match="at least one"):
        codec.encode_batch(EventBatch("t.x", "p", 1, 0.0, []))
