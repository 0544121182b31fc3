"""The strict value readers of mesh/_util/values.py, and the messages of their two users.

The catalog shows a bad value with plain ``repr`` and the gossip codec with a bounded one;
the messages below were read from both before the readers moved into one module, and pin
them byte for byte.
"""

from __future__ import annotations

import msgpack
import pytest

from mesh._core.catalog import MethodInfo
from mesh._errors import ProtocolError
from mesh._util.values import SHOWN_MOST, fail, flag, show, show_repr
from mesh._wire.codec import PROTOCOL_MAX
from mesh._wire.gossip import GossipCodec

SEVEN = list(range(7))
LONG = "x" * 80

#: (bad value, the catalog's message end, the gossip codec's message end).
SHOWN = [
    (SEVEN, "[0, 1, 2, 3, 4, 5, 6]", "[0, 1, 2, 3, 4, 5, ...]"),
    (LONG, "'" + "x" * 56 + "...", "'" + "x" * 27 + "..." + "x" * 28 + "'"),
    ([[[[1]]]], "[[[[1]]]]", "[[[[...]]]]"),
    (1, "1", "1"),
]


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("value", "catalog", "gossip"), SHOWN)
def test_catalog_and_gossip_messages_are_unchanged(
    value: object, catalog: str, gossip: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        MethodInfo.from_wire(["m", "unary", "()", "", value])
    assert str(caught.value) == f"method.idempotent: expected true or false, got {catalog}"
    frame = msgpack.packb([PROTOCOL_MAX, 21, "a", "tcp://127.0.0.1:5000", [], value])
    with pytest.raises(ProtocolError) as caught:
        GossipCodec().decode(frame)
    assert str(caught.value) == f"SYNC.reply: expected true or false, got {gossip}"


def test_show_is_bounded_at_any_depth_and_show_repr_is_plain() -> None:
    deep = _nested(2000)  # repr() of this raises RecursionError
    assert show(deep) == "[[[[...]]]]"
    with pytest.raises(RecursionError):
        show_repr(deep)
    assert show_repr(SEVEN) == repr(SEVEN)
    assert len(show_repr(LONG)) == len(show(LONG)) == SHOWN_MOST


def test_fail_and_flag() -> None:
    with pytest.raises(
        ProtocolError, match=r"^here: expected a thing, got \[0, 1, 2, 3, 4, 5, \.\.\.\]$"
    ):
        fail("here", "a thing", SEVEN)
    with pytest.raises(
        ProtocolError, match=r"^here: expected a thing, got \[0, 1, 2, 3, 4, 5, 6\]$"
    ):
        fail("here", "a thing", SEVEN, show_repr)
    assert flag("f", True) is True
    assert flag("f", False) is False
    for bad in (0, 1, None, "true"):
        with pytest.raises(ProtocolError, match=r"^f: expected true or false, got "):
            flag("f", bad)
