"""Mesh messages: the kinds, the protocol versions, and one frozen dataclass per kind
(pure data; mesh/_wire/codec.py turns them into frames and back, docs/protocol.md is
the byte-level specification)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, TypeAlias

from .._core.events import Event

__all__ = [
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "Call",
    "Cancel",
    "Credit",
    "Error",
    "EventBatch",
    "Goodbye",
    "Hello",
    "Kind",
    "Message",
    "Reply",
    "StreamEnd",
    "StreamItem",
    "Welcome",
]

#: Protocol versions this implementation speaks.
PROTOCOL_MIN: Final = 1
PROTOCOL_MAX: Final = 1


class Kind(IntEnum):
    """Message kinds. 16-31 are reserved for membership, 32-47 for events."""

    HELLO = 1
    WELCOME = 2
    CALL = 3
    REPLY = 4
    ERROR = 5
    STREAM_ITEM = 6
    STREAM_END = 7
    CREDIT = 8
    CANCEL = 9
    GOODBYE = 10
    EVENT = 32
    EVENT_BATCH = 33


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on a new connection: who I am and which versions I speak."""

    ref: int
    node_id: str
    name: str
    mesh: str
    min_version: int
    max_version: int
    services: dict[str, str] = field(default_factory=dict)
    public_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Answer to HELLO: who I am, and the version both sides use from now on."""

    ref: int
    node_id: str
    name: str
    mesh: str
    min_version: int
    max_version: int
    version: int
    services: dict[str, str] = field(default_factory=dict)
    public_key: bytes | None = None


# Call and Reply are made once per call on the hot path, where a frozen dataclass's
# __init__ (one object.__setattr__ a field) costs 4x a plain one (0.87 against 0.20 us
# for Call): they are not frozen, and nothing may change one once made.
@dataclass(slots=True)
class Call:
    """Call ``target`` (``"service.method"``); ``credit`` > 0 asks for a stream."""

    call_id: int
    target: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Milliseconds the caller will still wait, or None for no deadline.
    deadline_ms: int | None = None
    credit: int = 0
    #: Identifies a tree of calls (a call made while handling one inherits it).
    trace_id: str = ""
    #: 1 for the first try; retries count up.
    attempt: int = 1


@dataclass(slots=True)
class Reply:
    """The result of a call."""

    call_id: int
    result: Any = None


@dataclass(frozen=True, slots=True)
class Error:
    """A request failed. ``ref`` is the call id (or HELLO ref, or 0 if unknown)."""

    ref: int
    code: str
    message: str
    type: str = ""
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One item of a streaming call."""

    call_id: int
    item: Any = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The stream is complete."""

    call_id: int


@dataclass(frozen=True, slots=True)
class Credit:
    """The caller can take ``n`` more stream items."""

    call_id: int
    n: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """The caller no longer wants the result."""

    call_id: int


@dataclass(frozen=True, slots=True)
class Goodbye:
    """The sender is leaving on purpose; forget its connection."""

    node_id: str


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Consecutive events of one topic from one publisher, in one PUB payload: numbered
    ``first_seq``, ``first_seq + 1``, ...; all with ``timestamp``."""

    topic: str
    publisher: str
    first_seq: int
    timestamp: float
    items: list[Any]

    def events(self) -> list[Event]:
        topic, publisher, seq, timestamp = (
            self.topic,
            self.publisher,
            self.first_seq,
            self.timestamp,
        )
        new = tuple.__new__
        return [
            new(Event, (topic, publisher, seq + i, timestamp, data))
            for i, data in enumerate(self.items)
        ]


Message: TypeAlias = (
    Hello | Welcome | Call | Reply | Error | StreamItem | StreamEnd | Credit | Cancel | Goodbye
)
