"""Durable queues, the pure part: jobs, their wire form, retry schedules, the
idempotency window and the choice of a provider (no I/O, no clock: ``now`` is passed).

A job's life (docs/architecture.md, "Durable queues"): the sender's outbox holds it
until a provider has stored it in its inbox (the hand-off) and, after that, until the
provider reports it done or dead; the provider runs it from its inbox by the retry
schedule; the dead letters keep what failed for good.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ProtocolError

__all__ = [
    "DEFAULT_RETRIES",
    "DedupWindow",
    "Job",
    "check_retries",
    "choose_store",
    "is_last",
    "next_delay",
]

#: The retry schedule of a job that gives none: seconds to wait before the 2nd, 3rd,
#: ... attempt (so 4 attempts in all).
DEFAULT_RETRIES: tuple[float, ...] = (1.0, 10.0, 60.0)
#: Longest idempotency key (characters) and most delays in a schedule.
MAX_KEY = 256
MAX_RETRIES = 100


def check_retries(retries: Iterable[float]) -> tuple[float, ...]:
    """A retry schedule: at most :data:`MAX_RETRIES` finite delays >= 0 (seconds)."""
    delays = tuple(retries)
    if len(delays) > MAX_RETRIES:
        raise ValueError(f"retries: at most {MAX_RETRIES} delays, got {len(delays)}")
    for delay in delays:
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
            or delay < 0
        ):
            raise ValueError(f"retries: expected seconds >= 0, got {delay!r}")
    return tuple(float(d) for d in delays)


def is_last(retries: Sequence[float], attempt: int) -> bool:
    """Whether ``attempt`` (1 for the first) is the last the schedule allows."""
    return attempt >= len(retries) + 1


def next_delay(retries: Sequence[float], attempt: int) -> float | None:
    """Seconds to wait after failed ``attempt`` before the next one; None: it was the last."""
    if is_last(retries, attempt):
        return None
    return retries[attempt - 1]


@dataclass(slots=True)
class Job:
    """One job: call ``target`` with ``args``/``kwargs`` until it succeeds or its
    schedule ends. ``attempt`` counts the attempts begun (0: none yet)."""

    id: str
    target: str
    args: list[Any]
    kwargs: dict[str, Any]
    key: str | None = None
    retries: tuple[float, ...] = DEFAULT_RETRIES
    #: Wall-clock second the job was enqueued.
    created: float = 0.0
    #: The node id and job store id of the sender ("" for a mesh.Client: nobody to tell).
    sender: str = ""
    sender_store: str = ""
    attempt: int = 0
    #: When the next attempt may begin (wall clock); the last error's text.
    not_before: float = 0.0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.target.rpartition(".")[0].partition("@")[0]

    def to_wire(self) -> dict[str, Any]:
        """The map that ``$mesh.job.take`` carries (docs/protocol.md, section 11)."""
        return {
            "id": self.id,
            "target": self.target,
            "args": self.args,
            "kwargs": self.kwargs,
            "key": self.key,
            "retries": list(self.retries),
            "created": self.created,
            "sender": self.sender,
            "sender_store": self.sender_store,
        }

    @classmethod
    def from_wire(cls, wire: object) -> Job:
        """A job from its map; :class:`ProtocolError` when it is not one."""
        if not isinstance(wire, dict):
            raise ProtocolError(f"a job is a map, got {type(wire).__name__}")
        try:
            job = cls(
                id=wire["id"],
                target=wire["target"],
                args=wire.get("args", []),
                kwargs=wire.get("kwargs", {}),
                key=wire.get("key"),
                retries=check_retries(wire.get("retries", DEFAULT_RETRIES)),
                created=float(wire.get("created", 0.0)),
                sender=wire.get("sender", ""),
                sender_store=wire.get("sender_store", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a job: {exc}") from None
        if not (isinstance(job.id, str) and 1 <= len(job.id) <= 64):
            raise ProtocolError("a job id is 1 to 64 characters")
        if not isinstance(job.target, str) or "." not in job.target.strip("."):
            raise ProtocolError(f"a job's target is service.method, got {job.target!r:.80}")
        if not isinstance(job.args, list) or not isinstance(job.kwargs, dict):
            raise ProtocolError("a job's args are a list and its kwargs a map")
        if job.key is not None and not (isinstance(job.key, str) and len(job.key) <= MAX_KEY):
            raise ProtocolError(f"a job's key is text of at most {MAX_KEY} characters")
        if not isinstance(job.sender, str) or not isinstance(job.sender_store, str):
            raise ProtocolError("a job's sender and sender_store are text")
        return job


class DedupWindow:
    """Job ids and idempotency keys seen (done or dead) within a bounded window: the
    last ``most`` entries and none older than ``max_age`` seconds."""

    def __init__(self, most: int, max_age: float) -> None:
        self.most = most
        self.max_age = max_age
        # id -> (key, state, at), oldest first
        self._ids: OrderedDict[str, tuple[str | None, str, float]] = OrderedDict()
        self._keys: dict[str, str] = {}  # key -> id

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, job_id: str, key: str | None, state: str, at: float) -> None:
        old = self._ids.pop(job_id, None)
        if old is not None and old[0] is not None:
            self._keys.pop(old[0], None)
        self._ids[job_id] = (key, state, at)
        if key is not None:
            self._keys[key] = job_id

    def discard(self, job_id: str) -> None:
        entry = self._ids.pop(job_id, None)
        if entry is not None and entry[0] is not None and self._keys.get(entry[0]) == job_id:
            del self._keys[entry[0]]

    def state_of(self, job_id: str | None, key: str | None, now: float) -> str | None:
        """``done``/``dead`` if the id, or else the key, was seen within the window."""
        self.prune(now)
        if job_id is not None and (entry := self._ids.get(job_id)) is not None:
            return entry[1]
        if key is not None and (other := self._keys.get(key)) is not None:
            return self._ids[other][1]
        return None

    def prune(self, now: float) -> list[str]:
        """Forget what fell out of the window; returns the ids forgotten."""
        gone = []
        while self._ids:
            job_id, (key, _, at) = next(iter(self._ids.items()))
            if len(self._ids) <= self.most and now - at <= self.max_age:
                break
            del self._ids[job_id]
            if key is not None and self._keys.get(key) == job_id:
                del self._keys[key]
            gone.append(job_id)
        return gone


def choose_store(
    candidates: Sequence[str], key: str | None, rng: random.Random, prefer: str | None = None
) -> str | None:
    """Which provider (node id) gets a job: with a key, the same one for the same key
    while the candidates stay the same (rendezvous hashing), so the receiving side's
    idempotency window sees every repeat; without one, ``prefer`` (this node) if it is
    a candidate, else one at random."""
    if not candidates:
        return None
    if key is not None:
        return max(
            candidates,
            key=lambda c: hashlib.blake2b(f"{c}\0{key}".encode(), digest_size=8).digest(),
        )
    if prefer is not None and prefer in candidates:
        return prefer
    return rng.choice(list(candidates))
