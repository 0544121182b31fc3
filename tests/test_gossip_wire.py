"""The gossip codec: every kind survives the wire, every malformed frame is refused with a
ProtocolError naming what is wrong, and any bytes decode or raise ProtocolError only.

The examples of the "Gossip messages" section of docs/protocol.md are checked here too.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mesh._core.catalog as catalog
import mesh._core.membership as membership
import mesh._wire.gossip as gossip_wire
from mesh._config import Limits
from mesh._core.catalog import (
    MethodInfo,
    NodeLoad,
    Record,
    RecordPull,
    RecordReply,
    ServiceInfo,
    Stats,
    StatsPull,
    StatsReply,
)
from mesh._core.membership import Ack, Gossip, Member, Nack, Ping, PingReq, Status, Sync
from mesh._errors import ProtocolError
from mesh._wire.codec import Call, Kind
from mesh._wire.gossip import GossipCodec, GossipKind, GossipMessage, source_of
from tests.test_catalog import records, stats_values

A = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
B = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
ADDRESS_A = "tcp://10.0.0.1:7946"
ADDRESS_B = "tcp://10.0.0.2:7946"
MEMBER = Member(B, "node-b", ADDRESS_B, 3, Status.SUSPECT, A, 2, 5)
WIRE_MEMBER: list[Any] = [B, "node-b", ADDRESS_B, 3, 1, A, 2, 5]

codec = GossipCodec()


def frame(kind: int, *fields: Any, version: int = 1) -> bytes:
    return msgpack.packb([version, kind, *fields], use_bin_type=True)


def ping_frame(*members: Any, version: int = 1, **changes: Any) -> bytes:
    """A PING frame; ``changes`` replaces fields by name."""
    fields = {"seq": 7, "source": A, "reply_to": ADDRESS_A, "target": B, "updates": list(members)}
    fields.update(changes)
    return frame(GossipKind.PING, *fields.values(), version=version)


def member_with(**changes: Any) -> list[Any]:
    names = ["id", "name", "address", "incarnation", "status", "by", "record", "stats"]
    return [changes.get(name, value) for name, value in zip(names, WIRE_MEMBER, strict=True)]


# -- strategies -----------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
ids = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64),
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
)
u64 = st.integers(0, 2**64 - 1)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
addresses = st.builds(
    lambda host, port, key: f"tcp://{host}:{port}" + (f"#{key}" if key else ""),
    hosts,
    st.integers(1, 65535),
    st.one_of(st.none(), st.from_regex(r"[!-~]{40}", fullmatch=True)),
)
members = st.builds(
    Member,
    ids,
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=63),
    addresses,
    u64,
    st.sampled_from(Status),
    st.one_of(st.just(""), ids),
    u64,
    u64,
)
updates = st.lists(members, max_size=8).map(tuple)
catalog_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)
messages: st.SearchStrategy[GossipMessage] = st.one_of(
    st.builds(Ping, u64, ids, addresses, ids, updates),
    st.builds(PingReq, u64, ids, addresses, ids, addresses, updates),
    st.builds(Ack, u64, ids, updates),
    st.builds(Nack, u64, ids),
    st.builds(Gossip, ids, updates),
    st.builds(Sync, ids, addresses, st.lists(members, max_size=30).map(tuple), st.booleans()),
    st.builds(RecordPull, catalog_ids, u64),
    records.map(lambda r: RecordReply(r.id, r)),
    st.builds(RecordReply, catalog_ids, st.none(), st.booleans()),
    st.builds(StatsPull, catalog_ids, u64, st.booleans()),
    stats_values.map(lambda s: StatsReply(s.id, s)),
    st.builds(StatsReply, catalog_ids, st.none(), st.booleans()),
)


def kind_of(message: GossipMessage) -> GossipKind:
    return GossipKind(msgpack.unpackb(codec.encode(message))[1])


# -- round trips ----------------------------------------------------------------------------


@given(messages)
def test_every_message_survives_the_wire(message: GossipMessage) -> None:
    data = codec.encode(message)
    decoded = codec.decode(data)
    assert decoded == message
    assert type(decoded) is type(message)
    assert codec.encode(decoded) == data


@given(members)
def test_a_member_survives_the_wire_with_its_types(member: Member) -> None:
    (decoded,) = codec.decode(codec.encode(Gossip(A, (member,)))).updates  # type: ignore[union-attr]
    assert decoded == member
    assert type(decoded) is Member
    assert type(decoded.status) is Status


def test_every_kind_is_covered_by_the_round_trip_strategy() -> None:
    examples = [
        Ping(1, A, ADDRESS_A, B),
        PingReq(1, A, ADDRESS_A, B, ADDRESS_B),
        Ack(1, A),
        Nack(1, A),
        Gossip(A, (MEMBER,)),
        Sync(A, ADDRESS_A, (MEMBER,), True),
        RecordPull(B),
        RecordReply(B, unchanged=True),
        StatsPull(B, 3, True),
        StatsReply(B),
    ]
    assert [kind_of(m) for m in examples] == list(GossipKind)
    for message in examples:
        assert codec.decode(codec.encode(message)) == message


def test_the_frame_is_version_kind_then_the_fields_in_order() -> None:
    ping = Ping(7, A, ADDRESS_A, B, (MEMBER,))
    assert msgpack.unpackb(codec.encode(ping)) == [1, 16, 7, A, ADDRESS_A, B, [WIRE_MEMBER]]
    pull = RecordPull(B, 4)
    assert msgpack.unpackb(codec.encode(pull)) == [1, 22, *pull.to_wire()]


def test_a_plain_int_status_is_sent_as_its_status() -> None:
    member = MEMBER._replace(status=2)
    (decoded,) = codec.decode(codec.encode(Gossip(A, (member,)))).updates  # type: ignore[union-attr]
    assert decoded.status is Status.DEAD


def test_source_of_names_the_claimed_sender() -> None:
    assert source_of(Ping(1, A, ADDRESS_A, B)) == A
    assert source_of(PingReq(1, A, ADDRESS_A, B, ADDRESS_B)) == A
    assert source_of(Ack(1, B)) == B
    assert source_of(Nack(1, B)) == B
    assert source_of(Gossip(A, ())) == A
    assert source_of(Sync(B, ADDRESS_B, (), False)) == B
    for message in (RecordPull(B), RecordReply(B), StatsPull(B), StatsReply(B)):
        assert source_of(message) is None


# -- what later versions may add --------------------------------------------------------------


def test_trailing_fields_of_a_later_version_are_ignored() -> None:
    longer_member = [*WIRE_MEMBER, "a later field", {"x": [1]}]
    data = frame(GossipKind.PING, 7, A, ADDRESS_A, B, [longer_member], "later", 42)
    assert codec.decode(data) == Ping(7, A, ADDRESS_A, B, (MEMBER,))
    assert codec.decode(frame(GossipKind.NACK, 7, A, None)) == Nack(7, A)
    assert codec.decode(frame(GossipKind.SYNC, A, ADDRESS_A, [], False, 1)) == Sync(
        A, ADDRESS_A, (), False
    )
    assert codec.decode(frame(GossipKind.RECORD_PULL, B, 4, "later")) == RecordPull(B, 4)
    assert codec.decode(frame(GossipKind.STATS_PULL, B, 4, True, 0)) == StatsPull(B, 4, True)


# -- refused on decoding ------------------------------------------------------------------------

FEW = GossipCodec(Limits(max_collection=8))  # the envelope of PING_REQ has 8 items
SMALL = GossipCodec(Limits(max_message_size=300))
VALID = ping_frame(WIRE_MEMBER)

DECODE_ERRORS = {
    "not a list": (msgpack.packb({"version": 1}), "array [version, kind"),
    "a bare int": (msgpack.packb(16), "array [version, kind"),
    "no kind": (msgpack.packb([1]), "array [version, kind"),
    "version 2": (ping_frame(version=2), "protocol version 2; this node speaks 1..1"),
    "version 0": (frame(GossipKind.NACK, 1, A, version=0), "protocol version 0"),
    "version as str": (msgpack.packb(["1", 19, 1, A]), "protocol version '1'"),
    "version as bool": (msgpack.packb([True, 19, 1, A]), "protocol version True"),
    "an rpc kind": (frame(Kind.CALL, 1, "a.b"), "unknown gossip message kind 3"),
    "kind 26": (frame(26, 1), "unknown gossip message kind 26"),
    "kind as str": (msgpack.packb([1, "16"]), "unknown gossip message kind '16'"),
    "kind as bool": (msgpack.packb([1, True]), "unknown gossip message kind True"),
    "truncated": (VALID[: len(VALID) // 2], "not a valid msgpack frame"),
    "trailing bytes": (VALID + b"\xc0", "not a valid msgpack frame"),
    "two objects": (VALID + VALID, "not a valid msgpack frame"),
    "empty": (b"", "not a valid msgpack frame"),
    "invalid utf-8": (VALID.replace(b"node-b", b"node-\xff"), "not a valid msgpack frame"),
    "int map key": (ping_frame([*WIRE_MEMBER, {1: 2}]), "not a valid msgpack frame"),
    "missing updates": (frame(GossipKind.PING, 7, A, ADDRESS_A, B), "PING: missing field updates"),
    "missing source": (frame(GossipKind.NACK, 7), "NACK: missing field source"),
    "missing reply": (frame(GossipKind.SYNC, A, ADDRESS_A, []), "SYNC: missing field reply"),
    "seq as str": (ping_frame(seq="7"), "PING.seq: expected an integer 0..2**64-1, got '7'"),
    "negative seq": (ping_frame(seq=-1), "PING.seq"),
    "seq as float": (ping_frame(seq=7.0), "PING.seq"),
    "seq as bool": (ping_frame(seq=True), "PING.seq"),
    "empty source": (ping_frame(source=""), "PING.source: expected a node id"),
    "long source": (ping_frame(source="x" * 65), "PING.source"),
    "source as bin": (ping_frame(source=A.encode()), "PING.source"),
    "target as nil": (ping_frame(target=None), "PING.target"),
    "reply_to no scheme": (ping_frame(reply_to="10.0.0.1:7946"), "PING.reply_to: expected an"),
    "reply_to udp": (ping_frame(reply_to="udp://10.0.0.1:7946"), "PING.reply_to"),
    "reply_to port 0": (ping_frame(reply_to="tcp://h:0"), "PING.reply_to"),
    "reply_to port 65536": (ping_frame(reply_to="tcp://h:65536"), "PING.reply_to"),
    "reply_to no port": (ping_frame(reply_to="tcp://h"), "PING.reply_to"),
    "reply_to space": (ping_frame(reply_to="tcp://a b:1"), "PING.reply_to"),
    "reply_to too long": (ping_frame(reply_to=f"tcp://{'h' * 250}:7946"), "PING.reply_to"),
    "target_address": (
        frame(GossipKind.PING_REQ, 7, A, ADDRESS_A, B, "tcp://:1", []),
        "PING_REQ.target_address",
    ),
    "updates a map": (ping_frame(updates={}), "PING.updates: expected an array of members"),
    "member a map": (ping_frame({"id": B}), r"PING.updates[0]: expected a member array"),
    "member short": (ping_frame(WIRE_MEMBER[:7]), r"PING.updates[0]: expected 8 items, got 7"),
    "empty id": (ping_frame(member_with(id="")), r"PING.updates[0].id"),
    "long id": (ping_frame(member_with(id="x" * 65)), r"PING.updates[0].id"),
    "id as int": (ping_frame(member_with(id=5)), r"PING.updates[0].id"),
    "long name": (ping_frame(member_with(name="x" * 64)), r"PING.updates[0].name"),
    "name as nil": (ping_frame(member_with(name=None)), r"PING.updates[0].name"),
    "bad address": (ping_frame(member_with(address="nowhere")), r"PING.updates[0].address"),
    "address key only": (ping_frame(member_with(address="tcp://h:1#")), r"updates[0].address"),
    "negative incarnation": (ping_frame(member_with(incarnation=-1)), ".incarnation"),
    "incarnation as float": (ping_frame(member_with(incarnation=3.0)), ".incarnation"),
    "incarnation as bool": (ping_frame(member_with(incarnation=True)), ".incarnation"),
    "incarnation as str": (ping_frame(member_with(incarnation="3")), ".incarnation"),
    "status 4": (ping_frame(member_with(status=4)), r"PING.updates[0].status: expected a status"),
    "status -1": (ping_frame(member_with(status=-1)), ".status"),
    "status as bool": (ping_frame(member_with(status=True)), ".status"),
    "status as name": (ping_frame(member_with(status="alive")), ".status"),
    "long by": (ping_frame(member_with(by="x" * 65)), r"PING.updates[0].by"),
    "by as nil": (ping_frame(member_with(by=None)), r"PING.updates[0].by"),
    "negative record": (ping_frame(member_with(record=-1)), r"PING.updates[0].record"),
    "stats as float": (ping_frame(member_with(stats=0.5)), r"PING.updates[0].stats"),
    "second member": (ping_frame(WIRE_MEMBER, member_with(status=9)), r"PING.updates[1].status"),
    "sync members": (frame(GossipKind.SYNC, A, ADDRESS_A, [5], True), r"SYNC.members[0]"),
    "sync reply as int": (frame(GossipKind.SYNC, A, ADDRESS_A, [], 1), "SYNC.reply: expected true"),
    "ack updates": (frame(GossipKind.ACK, 1, A, None), "ACK.updates"),
    "gossip updates": (frame(GossipKind.GOSSIP, A, [[]]), r"GOSSIP.updates[0]: expected 8 items"),
    "record pull have": (frame(GossipKind.RECORD_PULL, B, -1), "RECORD_PULL: record pull.have"),
    "record pull id": (frame(GossipKind.RECORD_PULL, "", 0), "RECORD_PULL: record pull.id"),
    "record pull short": (frame(GossipKind.RECORD_PULL, B), "RECORD_PULL: record pull: expected"),
    "record reply record": (
        frame(GossipKind.RECORD_REPLY, B, [B], False),
        "RECORD_REPLY: record reply.record",
    ),
    "record of another": (
        frame(GossipKind.RECORD_REPLY, B, Record(A, "a", "m").to_wire(), False),
        "RECORD_REPLY: record reply: a record must be of the member asked for",
    ),
    "stats pull fresh": (frame(GossipKind.STATS_PULL, B, 0, 1), "STATS_PULL: stats pull.fresh"),
    "stats reply stats": (frame(GossipKind.STATS_REPLY, B, 5, False), "STATS_REPLY: stats reply"),
}


@pytest.mark.parametrize(("data", "words"), DECODE_ERRORS.values(), ids=DECODE_ERRORS.keys())
def test_a_malformed_frame_is_refused_clearly(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(words)):
        codec.decode(data)


LIMIT_ERRORS = {
    "too many updates": (FEW, frame(GossipKind.GOSSIP, A, [WIRE_MEMBER] * 9), "max_array_len(8)"),
    "oversize frame": (
        SMALL,
        ping_frame(*[WIRE_MEMBER] * 4),
        "exceeds the limit of 300 bytes (limits.max_message_size)",
    ),
}


@pytest.mark.parametrize(
    ("limited", "data", "words"), LIMIT_ERRORS.values(), ids=LIMIT_ERRORS.keys()
)
def test_limits_are_applied_on_decoding(limited: GossipCodec, data: bytes, words: str) -> None:
    codec.decode(data)  # within the default limits
    with pytest.raises(ProtocolError, match=re.escape(words)):
        limited.decode(data)


@pytest.mark.parametrize("data", [None, "a string", 16, [1, 16]])
def test_a_frame_that_is_not_bytes_is_refused(data: Any) -> None:
    with pytest.raises(ProtocolError, match="a frame is bytes"):
        codec.decode(data)


def test_frames_may_be_bytearray_or_memoryview() -> None:
    assert codec.decode(bytearray(VALID)) == codec.decode(memoryview(VALID)) == codec.decode(VALID)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("incarnation", 3.0),
        ("incarnation", True),
        ("status", True),
        ("status", 1.0),
        ("stats", 5.0),
    ],
)
def test_a_member_equal_to_one_seen_before_is_still_checked_for_types(
    field: str, value: Any
) -> None:
    """Members already decoded are looked up by value, and True == 1 == 1.0."""
    fresh = GossipCodec()
    fresh.decode(VALID)
    assert fresh.decode(VALID).updates == (MEMBER,)  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match=f"updates\\[0\\].{field}"):
        fresh.decode(ping_frame(member_with(**{field: value})))


@pytest.mark.parametrize("kind", list(GossipKind))
@pytest.mark.parametrize("position", range(2, 8))
def test_a_value_nested_a_thousand_deep_is_refused(kind: GossipKind, position: int) -> None:
    """msgpack decodes ~1,000 levels; repr() of such a value (in an error) would recurse."""
    fields = [b"\xa1a"] * 6
    fields[position - 2] = b"\x91" * 1000 + b"\xc0"
    with pytest.raises(ProtocolError):
        codec.decode(bytes([0x98, 1, kind]) + b"".join(fields))


def test_a_member_with_an_unhashable_field_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"updates\[0\].name"):
        codec.decode(ping_frame(member_with(name=["node-b"])))


# -- refused on encoding -----------------------------------------------------------------------


def ping(*updates: Any, **changes: Any) -> Ping:
    fields: dict[str, Any] = {"seq": 7, "source": A, "reply_to": ADDRESS_A, "target": B}
    fields.update(changes)
    return Ping(**fields, updates=updates)


ENCODE_ERRORS: dict[str, tuple[Any, str]] = {
    "incarnation overflow": (
        ping(MEMBER._replace(incarnation=2**64)),
        "PING.updates[0].incarnation: expected an integer 0..2**64-1, got 18446744073709551616",
    ),
    "negative incarnation": (ping(MEMBER._replace(incarnation=-1)), "updates[0].incarnation"),
    "float incarnation": (ping(MEMBER._replace(incarnation=1.0)), "updates[0].incarnation"),
    "record overflow": (ping(MEMBER._replace(record=2**64)), "updates[0].record"),
    "stats overflow": (ping(MEMBER._replace(stats=2**70)), "updates[0].stats"),
    "status 4": (ping(MEMBER, MEMBER._replace(status=4)), "PING.updates[1].status"),
    "status as bool": (ping(MEMBER._replace(status=True)), "updates[0].status"),
    "bad address": (ping(MEMBER._replace(address="10.0.0.2:7946")), "updates[0].address"),
    "empty id": (ping(MEMBER._replace(id="")), "updates[0].id"),
    "long name": (ping(MEMBER._replace(name="n" * 64)), "updates[0].name"),
    "by as nil": (ping(MEMBER._replace(by=None)), "updates[0].by"),
    "a plain tuple": (ping(tuple(MEMBER)), "PING.updates[0]: expected a Member"),
    "updates a set": (Gossip(A, {MEMBER}), "GOSSIP.updates: expected a tuple"),  # type: ignore[arg-type]
    "seq overflow": (ping(seq=2**64), "PING.seq"),
    "seq as bool": (Nack(True, A), "NACK.seq"),
    "empty source": (Ack(1, ""), "ACK.source"),
    "bad reply_to": (ping(reply_to="tcp://h:0"), "PING.reply_to"),
    "bad target": (ping(target=None), "PING.target"),
    "bad target_address": (PingReq(1, A, ADDRESS_A, B, "tcp://b"), "PING_REQ.target_address"),
    "sync reply as int": (Sync(A, ADDRESS_A, (), 1), "SYNC.reply"),  # type: ignore[arg-type]
    "sync members": (Sync(A, ADDRESS_A, (MEMBER._replace(status=-1),), True), "SYNC.members[0]"),
    "a surrogate": (ping(MEMBER._replace(name="\udc80")), "PING: cannot encode"),
    "not a message": (Call(1, "a.b"), "not a gossip message"),
    "not even a dataclass": ("ping", "not a gossip message"),
    "record pull id": (RecordPull(""), "RECORD_PULL: record pull.id"),
    "record pull have": (RecordPull(B, -1), "RECORD_PULL"),
    "record reply record": (RecordReply(B, "record"), "RECORD_REPLY: cannot encode"),  # type: ignore[arg-type]
    "record of another": (RecordReply(B, Record(A, "a", "m")), "RECORD_REPLY: record reply"),
    "bad method kind": (
        RecordReply(
            B,
            Record(
                B,
                "b",
                "m",
                services=(ServiceInfo("s", "1", "up", (MethodInfo("m", "oneway", "()"),)),),
            ),
        ),
        "RECORD_REPLY: record reply.record.services[0].methods[0].kind",
    ),
    "stats nan": (
        StatsReply(B, Stats(B, 1, float("nan"))),
        "STATS_REPLY: stats reply.stats.taken_at",
    ),
    "stats pull fresh": (StatsPull(B, 0, 1), "STATS_PULL: stats pull.fresh"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize(("message", "words"), ENCODE_ERRORS.values(), ids=ENCODE_ERRORS.keys())
def test_what_a_peer_would_refuse_is_not_sent(message: Any, words: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(words)):
        codec.encode(message)


def test_too_many_updates_are_not_sent() -> None:
    with pytest.raises(
        ProtocolError, match=re.escape("9 members exceeds 8 (limits.max_collection)")
    ):
        FEW.encode(Gossip(A, (MEMBER,) * 9))
    assert FEW.decode(FEW.encode(Gossip(A, (MEMBER,) * 8))) == Gossip(A, (MEMBER,) * 8)


def test_an_oversize_message_is_not_sent() -> None:
    with pytest.raises(ProtocolError, match=re.escape("exceeds the limit of 300 bytes")):
        SMALL.encode(Sync(A, ADDRESS_A, (MEMBER,) * 4, True))
    too_big = StatsReply(
        B, Stats(B, 1, 0.0, NodeLoad(), {f"s.m{i}": catalog.MethodLoad() for i in range(30)})
    )
    with pytest.raises(ProtocolError, match=re.escape("limits.max_message_size")):
        SMALL.encode(too_big)


def test_a_catalog_map_over_max_collection_is_not_sent() -> None:
    """Catalog values are decoded back before sending, so a peer's limits apply."""
    stats = Stats(B, 1, 0.0, NodeLoad(), {f"s.m{i}": catalog.MethodLoad() for i in range(9)})
    with pytest.raises(ProtocolError, match=re.escape("9 exceeds max_map_len(8)")):
        FEW.encode(StatsReply(B, stats))


def test_a_refused_member_does_not_poison_the_next_encoding() -> None:
    fresh = GossipCodec()
    with pytest.raises(ProtocolError):
        fresh.encode(ping(MEMBER._replace(name="\udc80")))
    assert fresh.decode(fresh.encode(ping(MEMBER))) == ping(MEMBER)


def test_the_caches_stay_bounded() -> None:
    fresh = GossipCodec()
    for i in range(gossip_wire._MEMBER_CACHE_SIZE + 10):
        member = MEMBER._replace(
            id=f"{i:032x}", address=f"tcp://10.{i // 65000}.0.1:{i % 65000 + 1}"
        )
        fresh.decode(fresh.encode(Gossip(A, (member,))))
    assert len(fresh._sent) <= gossip_wire._MEMBER_CACHE_SIZE
    assert len(fresh._received) <= gossip_wire._MEMBER_CACHE_SIZE
    assert len(fresh._addresses) <= gossip_wire._ADDRESS_CACHE_SIZE


# -- fuzz: any bytes decode or raise ProtocolError ---------------------------------------------

# 10,000 examples in CI (CI=true), 1,000 on a developer's machine, and what
# MESH_FUZZ_EXAMPLES says when set (as in tests/test_wire_fuzz.py).
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXAMPLES = int(os.environ.get("MESH_FUZZ_EXAMPLES") or (10_000 if _CI else 1_000))

fuzz_codec = GossipCodec(Limits(max_depth=16, max_collection=1000, max_message_size=64 * 1024))


def decode_or_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        fuzz_codec.decode(data)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    decode_or_protocol_error(data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from([A, "", ADDRESS_A, "tcp://h:0", 0, 3, 4, 2**64 - 1])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=9) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=16,
)
wire_members = st.lists(st.one_of(values, st.just(WIRE_MEMBER)), min_size=7, max_size=9)
envelopes = st.builds(
    lambda version, kind, fields: msgpack.packb([version, kind, *fields], use_bin_type=True),
    st.integers(min_value=-1, max_value=3),
    st.sampled_from([*map(int, GossipKind), 0, 3, 26, 99]),
    st.lists(
        st.one_of(
            values,
            u64,
            st.lists(st.one_of(wire_members, st.just(WIRE_MEMBER)), max_size=3),
            st.sampled_from([A, ADDRESS_A]),
        ),
        max_size=8,
    ),
)


@settings(max_examples=EXAMPLES // 10)  # structured values are slow to generate
@given(envelopes)
def test_plausible_envelopes_decode_or_raise_protocol_error(data: bytes) -> None:
    decode_or_protocol_error(data)


@settings(max_examples=EXAMPLES // 10)
@given(messages)
def test_real_fields_in_another_kind_decode_or_raise_protocol_error(
    message: GossipMessage,
) -> None:
    raw = msgpack.unpackb(codec.encode(message))
    for kind in GossipKind:
        with contextlib.suppress(ProtocolError):
            codec.decode(msgpack.packb([1, int(kind), *raw[2:]]))


VALID_FRAMES = [
    codec.encode(Sync(A, ADDRESS_A, (MEMBER, MEMBER._replace(id=A, address=ADDRESS_A)), True)),
    codec.encode(PingReq(9, A, ADDRESS_A, B, ADDRESS_B, (MEMBER,))),
    codec.encode(
        RecordReply(
            B,
            Record(
                B,
                "node-b",
                "mesh",
                3,
                {"rpc": ADDRESS_B},
                {"zone": "eu"},
                services=(ServiceInfo("calc", "1.0", "up", (MethodInfo("add", "unary", "()"),)),),
                topics=("calc.done",),
            ),
        )
    ),
    codec.encode(
        StatsReply(B, Stats(B, 2, 1.5, NodeLoad(), {"calc.add": catalog.MethodLoad(1, 0, 0)}))
    ),
]


@settings(max_examples=EXAMPLES // 2)
@given(
    st.sampled_from(VALID_FRAMES),
    st.binary(min_size=1, max_size=64),
    st.integers(min_value=0, max_value=1023),
)
def test_corrupted_valid_frames_decode_or_raise_protocol_error(
    valid: bytes, noise: bytes, at: int
) -> None:
    data = bytearray(valid)
    position = at % len(data)
    data[position : position + len(noise)] = noise
    decode_or_protocol_error(bytes(data))


@settings(max_examples=EXAMPLES // 2)
@given(st.sampled_from(VALID_FRAMES), st.integers(min_value=0, max_value=1023), u64)
def test_frames_with_one_byte_changed_decode_or_raise_protocol_error(
    valid: bytes, at: int, byte: int
) -> None:
    data = bytearray(valid)
    data[at % len(data)] = byte % 256
    decode_or_protocol_error(bytes(data))


# -- docs/protocol.md --------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_SECTION = re.compile(r"^## \d+\. Gossip messages$(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)
# Examples here are fenced ``py`` (not ``python``, which tests/test_protocol_doc.py reads
# with the names of mesh._wire.codec) and followed by a fenced ``hex`` block.
_PAIR = re.compile(
    r"^```py[ \t]*\n(?P<python>.*?)^```[ \t]*\n\s*^```hex[ \t]*\n(?P<hex>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def _doc_examples() -> list[tuple[str, str]]:
    section = _SECTION.search(DOC.read_text(encoding="utf-8"))
    if section is None:
        return []  # test_every_gossip_kind_has_a_doc_example fails
    return [
        (m["python"].strip(), "".join(m["hex"].split()).lower()) for m in _PAIR.finditer(section[1])
    ]


DOC_EXAMPLES = _doc_examples()


def _build(source: str) -> GossipMessage:
    names: dict[str, Any] = {}
    for module in (gossip_wire, membership, catalog):
        names.update({name: getattr(module, name) for name in module.__all__})
    return eval(compile(source, DOC.name, "eval"), names)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("source", "hex"), DOC_EXAMPLES, ids=[s.split("(")[0] for s, _ in DOC_EXAMPLES]
)
def test_doc_example_is_what_the_codec_encodes(source: str, hex: str) -> None:
    message = _build(source)
    assert codec.encode(message).hex() == hex
    assert codec.decode(bytes.fromhex(hex)) == message


def test_every_gossip_kind_has_a_doc_example() -> None:
    covered = {GossipKind(msgpack.unpackb(bytes.fromhex(h))[1]) for _, h in DOC_EXAMPLES}
    assert covered == set(GossipKind), f"kinds without an example: {set(GossipKind) - covered}"
