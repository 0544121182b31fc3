"""docs/protocol.md: every example's hex is exactly what the codec produces, and decodes back.

An example is a fenced ``python`` block holding one expression that builds a message
(with the names of ``mesh._wire.codec`` and the modules ``datetime`` and ``uuid`` in scope),
directly followed by a fenced ``hex`` block with the encoded bytes. For EVENT the hex
is the payload frame (the second of the two PUB frames).
"""

from __future__ import annotations

import datetime
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

import mesh._wire.codec as wire
from mesh._wire.codec import Codec, Event, EventBatch, Kind

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_PAIR = re.compile(
    r"^```python[ \t]*\n(?P<python>.*?)^```[ \t]*\n\s*^```hex[ \t]*\n(?P<hex>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Example:
    line: int
    source: str
    hex: str

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.source.split('(', 1)[0].strip()}"


def _examples(text: str) -> list[Example]:
    return [
        Example(
            line=text.count("\n", 0, match.start()) + 1,
            source=match["python"].strip(),
            hex="".join(match["hex"].split()).lower(),
        )
        for match in _PAIR.finditer(text)
    ]


TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = _examples(TEXT)


def _namespace() -> dict[str, Any]:
    names: dict[str, Any] = {name: getattr(wire, name) for name in wire.__all__}
    names.update(datetime=datetime, uuid=uuid)
    return names


def _build(example: Example) -> Any:
    return eval(compile(example.source, f"{DOC.name}:{example.line}", "eval"), _namespace())


def _payload(codec: Codec, message: Any) -> bytes:
    if isinstance(message, Event):
        topic, payload = codec.encode_event(message)
        assert topic == message.topic.encode()
        return payload
    if isinstance(message, EventBatch):
        return codec.encode_batch(message)
    return codec.encode(message)


def test_the_doc_has_examples() -> None:
    assert EXAMPLES, f"no ```python / ```hex pairs found in {DOC}"


def test_every_python_block_is_followed_by_a_hex_block() -> None:
    assert len(_PYTHON_BLOCK.findall(TEXT)) == len(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example_hex_is_what_the_codec_encodes(example: Example) -> None:
    message = _build(example)
    assert _payload(Codec(), message).hex() == example.hex


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example_hex_decodes_to_the_message(example: Example) -> None:
    message = _build(example)
    codec = Codec()
    data = bytes.fromhex(example.hex)
    if isinstance(message, Event):
        decoded: Any = codec.decode_event([message.topic.encode(), data])
    elif isinstance(message, EventBatch):
        decoded = codec.decode_events([message.topic.encode(), data])
        message = message.events()
    else:
        decoded = codec.decode(data)
    assert decoded == message


def test_every_kind_has_an_example() -> None:
    covered = {Kind(msgpack.unpackb(bytes.fromhex(e.hex))[1]) for e in EXAMPLES}
    assert covered == set(Kind), f"kinds without an example: {set(Kind) - covered}"
