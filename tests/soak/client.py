"""The calling and subscribing node of the soak: ``python -m tests.soak.client``.

Settings from MESH_* (``MESH_SEEDS`` names the serving node, ``tests.soak.server``).
It subscribes to ``soak.`` at once, then runs one command per stdin line and answers
each with one JSON line on stdout:

- ``prepare``: wait until ``echo`` and ``soak`` are listed and an event of the server
  has arrived (the SUB socket follows it); ``{"event": "prepared"}``.
- ``calls N C``: N calls of ``echo.say`` with 100 bytes, C at a time; ``{"event":
  "calls", "calls", "ok", "wrong", "errors", "first_error", "seconds"}`` (``wrong``:
  answered with something else than what was sent).
- ``events N R``: N events from the server, asked for R at a time with
  ``soak.publish(R)``, each round awaited until its last event arrived (a subscriber
  that keeps up: the queue never holds more than R); ``{"event": "events", "events",
  "received", "gaps", "node_dropped", "queue_dropped", "late_rounds", "seconds"}``.
  ``gaps``: missing sequence numbers seen here; ``node_dropped``: what the node's own
  statistics counted as dropped for the topic meanwhile; ``queue_dropped``: what the
  subscription dropped (queue full); ``late_rounds``: rounds whose last event did not
  come within ROUND_TIMEOUT.
- ``collect``: a garbage collection here and on the server; ``{"event": "collected"}``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

from mesh import MeshError, Node, Subscription
from mesh._util.aio import within
from nodes._program import run
from tests.soak.server import TOPIC

PAYLOAD = b"p" * 100
#: How long a round of events may take to arrive in full before it is given up.
ROUND_TIMEOUT = 5.0
#: A deadline for calls that must not be what fails (a round publishes up to R events).
CALL_TIMEOUT = 30.0


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Tracker:
    """Counts the events of ``soak.e`` as they come, and the gaps in their numbering."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.received = 0
        self.gaps = 0
        self.last = 0
        self._waiting: tuple[int, asyncio.Future[None]] | None = None

    async def follow(self) -> None:
        async for event in self.subscription:
            if event.topic != TOPIC:
                continue
            self.received += 1
            if event.seq > self.last + 1 and self.last:
                self.gaps += event.seq - self.last - 1
            self.last = max(self.last, event.seq)
            waiting = self._waiting
            if waiting is not None and self.last >= waiting[0] and not waiting[1].done():
                waiting[1].set_result(None)

    async def reach(self, seq: int, timeout: float) -> bool:
        """Wait until the event numbered ``seq`` (or a later one) arrived; False on timeout."""
        if self.last >= seq:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting = (seq, future)
        try:
            await within(future, timeout)
        except TimeoutError:
            return False
        finally:
            self._waiting = None
        return True


async def calls(node: Node, count: int, concurrency: int) -> dict[str, Any]:
    ok = wrong = errors = 0
    first_error = None

    async def worker(n: int) -> None:
        nonlocal ok, wrong, errors, first_error
        for _ in range(n):
            try:
                answer = await node.call("echo.say", PAYLOAD, timeout=CALL_TIMEOUT)
            except MeshError as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            else:
                if answer == PAYLOAD:
                    ok += 1
                else:
                    wrong += 1

    share, extra = divmod(count, concurrency)
    start = time.monotonic()
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
    return {
        "event": "calls",
        "calls": count,
        "ok": ok,
        "wrong": wrong,
        "errors": errors,
        "first_error": first_error,
        "seconds": time.monotonic() - start,
    }


def _topic_dropped(node: Node) -> int:
    topic = node.statistics().events.topics.get(TOPIC)
    return 0 if topic is None else topic.dropped


async def events(node: Node, tracker: Tracker, count: int, per_round: int) -> dict[str, Any]:
    received, gaps = tracker.received, tracker.gaps
    node_dropped, queue_dropped = _topic_dropped(node), tracker.subscription.dropped
    late = 0
    start = time.monotonic()
    left = count
    while left:
        n = min(per_round, left)
        last = await node.call("soak.publish", n, timeout=CALL_TIMEOUT)
        if not await tracker.reach(last, ROUND_TIMEOUT):
            late += 1
        left -= n
    return {
        "event": "events",
        "events": count,
        "received": tracker.received - received,
        "gaps": tracker.gaps - gaps,
        "node_dropped": _topic_dropped(node) - node_dropped,
        "queue_dropped": tracker.subscription.dropped - queue_dropped,
        "late_rounds": late,
        "seconds": time.monotonic() - start,
    }


async def prepare(node: Node, tracker: Tracker) -> dict[str, Any]:
    for service in ("echo", "soak"):
        await node.wait_for_service(service, timeout=CALL_TIMEOUT)
    # At-most-once: events sent before the SUB socket follows the server are lost. Ask
    # for one event at a time until one arrives.
    while True:
        last = await node.call("soak.publish", 1, timeout=CALL_TIMEOUT)
        if await tracker.reach(last, 0.1):
            return {"event": "prepared"}


async def commands(node: Node, tracker: Tracker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            await command(node, tracker, line.decode())
        except Exception as exc:  # said on stdout, so the soak stops at once saying why
            emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})


async def command(node: Node, tracker: Tracker, line: str) -> None:
    """Run one command line and print its answer."""
    words = line.split()
    if words == ["prepare"]:
        emit(await prepare(node, tracker))
    elif len(words) == 3 and words[0] == "calls":
        emit(await calls(node, int(words[1]), int(words[2])))
    elif len(words) == 3 and words[0] == "events":
        emit(await events(node, tracker, int(words[1]), int(words[2])))
    elif words == ["collect"]:
        await node.call("soak.collect", timeout=CALL_TIMEOUT)
        gc.collect()
        emit({"event": "collected"})
    else:
        emit({"event": "error", "error": f"unknown command {line!r}"})


async def setup(node: Node) -> None:
    tracker = Tracker(node.subscribe("soak."))
    node._spawn(tracker.follow(), "soak: follow events")
    node._spawn(commands(node, tracker), "soak: commands")


if __name__ == "__main__":
    run(setup)
