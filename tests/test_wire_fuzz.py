"""The decoding rule, proven with Hypothesis: any bytes decode to a message or raise
ProtocolError, never anything else; and what the codec encodes, it decodes unchanged."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import Limits, ProtocolError
from mesh._wire.codec import Call, Codec, Error, Kind, Reply, StreamItem

# 10,000 examples in CI (CI=true), 1,000 on a developer's machine, and what
# MESH_FUZZ_EXAMPLES says when set (`just fuzz` runs 100,000).
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXAMPLES = int(os.environ.get("MESH_FUZZ_EXAMPLES") or (10_000 if _CI else 1_000))

codec = Codec(Limits(max_depth=16, max_collection=1000, max_message_size=64 * 1024))


def decode_or_protocol_error(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        codec.decode(frame)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_protocol_error(frame: bytes) -> None:
    decode_or_protocol_error(frame)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)
# Valid msgpack with a plausible envelope reaches the field checks, not just the parser.
envelopes = st.builds(
    lambda version, kind, fields: msgpack.packb([version, kind, *fields], use_bin_type=True),
    st.integers(min_value=-1, max_value=3),
    st.sampled_from([*map(int, Kind), 0, 11, 99]),
    st.lists(values | st.integers(min_value=0, max_value=2**64 - 1), max_size=10),
)


@settings(max_examples=EXAMPLES // 10)  # structured values are slow to generate
@given(envelopes)
def test_plausible_envelopes_decode_or_raise_protocol_error(frame: bytes) -> None:
    decode_or_protocol_error(frame)


@settings(max_examples=EXAMPLES // 2)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=63))
def test_corrupted_valid_frames_decode_or_raise_protocol_error(noise: bytes, at: int) -> None:
    frame = bytearray(codec.encode(Call(7, "calc.add", [1, "two", [3.0]], {"k": {"v": b"x"}}, 900)))
    position = at % len(frame)
    frame[position : position + len(noise)] = noise
    decode_or_protocol_error(bytes(frame))


def normalised(value: Any) -> Any:
    """What a value looks like after a round trip (msgpack has no tuples)."""
    if isinstance(value, tuple | list):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    return value


@settings(max_examples=EXAMPLES // 20)
@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    values,
    st.lists(values, max_size=4),
    st.dictionaries(st.text(max_size=8), values, max_size=4),
)
def test_what_encodes_decodes_unchanged(
    call_id: int, value: Any, args: list[Any], kwargs: dict[str, Any]
) -> None:
    for message in (
        Reply(call_id, value),
        StreamItem(call_id, value),
        Call(call_id, "svc.method", args, kwargs, None, 0),
        Error(call_id, "remote", "message", "ValueError", ""),
    ):
        try:
            frame = codec.encode(message)
        except ProtocolError:
            continue  # over a limit: refused before sending, which is the rule
        decoded = codec.decode(frame)
        assert type(decoded) is type(message)
        if isinstance(message, Reply | StreamItem):
            assert getattr(decoded, "result", getattr(decoded, "item", None)) == normalised(value)
        else:
            assert decoded == message
