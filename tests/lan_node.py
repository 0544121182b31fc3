"""A node program for the namespace LAN tests: ``python -m tests.lan_node``.

Runs one :class:`mesh.Node` configured from ``MESH_*`` (``Config.from_env()``); with
``LAN_NODE_SERVICE=calc`` it offers a small ``calc`` service (``add`` and ``where`` are
idempotent, ``slow`` is not). It prints JSON lines on stdout:

- ``{"event": "ready", "t", "id", "name", "address", "gossip_address"}`` once it serves;
- ``{"event": "view", "t", "members": {name: status}, "ids": [[name, id, status], ...],
  "services": {service: [provider names]}, "gossip_bytes_out", "gossip_messages_out",
  "gossip_bytes_in"}`` whenever its view changes and at least every 0.5 s (``members``
  keeps the best status when two members share a name: alive, suspect, dead, left);
- ``{"event": "result", "seq", "t", "target", "value", "elapsed"}`` or
  ``{"event": "error", "seq", "t", "target", "code", "type", "error"}`` for each call;
- ``{"event": "stats", "seq", ...}`` for the ``stats`` command;
- ``{"event": "published", "seq", "t", "topic", "n"}`` for ``publish`` (``n``: the
  event's sequence number), and ``{"event": "got", "t", "topic", "data", "publisher",
  "n"}`` for each event a ``subscribe`` command's subscription receives;
- ``{"event": "stopped"}`` after a clean close on SIGTERM or SIGINT.

SIGUSR1 writes the stacks of all threads to stderr (to see where a node hangs).

Commands, one per stdin line (``seq`` counts them from 1): ``call TARGET [ARG ...]``
(each ARG is JSON, or a plain string if it is not), ``stats``, ``publish TOPIC DATA``
(DATA as an ARG), ``subscribe PREFIX``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import json
import os
import signal
import sys
import time
from typing import Any

from mesh import Config, MeshError, Node, method, service

#: Statuses from best to worst, for names held by two members (a restart).
_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}
#: A view line goes out at least this often (seconds).
HEARTBEAT = 0.5


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


@service("calc", version="1.0.0")
class Calc:
    """Arithmetic that tells who answered."""

    def __init__(self, name: str) -> None:
        self._name = name

    @method(idempotent=True)
    async def add(self, a: float, b: float) -> float:
        """Return a + b."""
        return a + b

    @method(idempotent=True)
    async def where(self) -> str:
        """The name of the node that answered."""
        return self._name

    @method
    async def slow(self, seconds: float) -> str:
        """Sleep ``seconds``, then return the node's name (not idempotent)."""
        await asyncio.sleep(seconds)
        return self._name


def view_of(node: Node) -> dict[str, Any]:
    members: dict[str, str] = {}
    ids = []
    for m in node.members():
        ids.append([m.name, m.id, m.status])
        if m.name not in members or _RANK[m.status] < _RANK[members[m.name]]:
            members[m.name] = m.status
    services = {
        name: sorted(p.node_name for p in listing.providers)
        for name, listing in sorted(node.services().items())
    }
    return {"members": members, "ids": ids, "services": services}


async def report_views(node: Node) -> None:
    """Print the view when it changes, and at least every HEARTBEAT seconds."""
    changed = asyncio.Event()

    async def follow() -> None:
        async for _ in node.watch():
            changed.set()

    follower = asyncio.create_task(follow())
    changed.set()  # the first view at once
    last: dict[str, Any] | None = None
    last_at = 0.0
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), HEARTBEAT)
            changed.clear()
            view = view_of(node)
            now = time.monotonic()
            if view != last or now - last_at >= HEARTBEAT:
                assert node._gossiper is not None
                gossip = node._gossiper.statistics()
                emit(
                    {
                        "event": "view",
                        "t": time.time(),
                        **view,
                        "gossip_bytes_out": gossip.bytes_out,
                        "gossip_messages_out": gossip.messages_out,
                        "gossip_bytes_in": gossip.bytes_in,
                    }
                )
                last, last_at = view, now
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


def parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def call(node: Node, seq: int, target: str, args: list[Any]) -> None:
    start = time.monotonic()
    try:
        value = await node.call(target, *args)
    except MeshError as exc:
        emit(
            {
                "event": "error",
                "seq": seq,
                "t": time.time(),
                "target": target,
                "code": exc.code,
                "type": type(exc).__name__,
                "error": str(exc),
            }
        )
    else:
        emit(
            {
                "event": "result",
                "seq": seq,
                "t": time.time(),
                "target": target,
                "value": value,
                "elapsed": time.monotonic() - start,
            }
        )


async def print_events(node: Node, prefix: str) -> None:
    async for event in node.subscribe(prefix):
        emit(
            {
                "event": "got",
                "t": time.time(),
                "topic": event.topic,
                "data": event.data,
                "publisher": event.publisher,
                "n": event.seq,
            }
        )


def stats_of(node: Node, seq: int) -> dict[str, Any]:
    assert node._gossiper is not None
    return {
        "event": "stats",
        "seq": seq,
        "t": time.time(),
        "gossip": dataclasses.asdict(node._gossiper.statistics()),
        "membership": dataclasses.asdict(node._gossiper.membership.statistics),
    }


async def read_commands(node: Node, tasks: set[asyncio.Task[None]]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):  # no usable stdin (e.g. a regular file): no commands
        return
    seq = 0
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        seq += 1
        if words[0] == "call" and len(words) >= 2:
            task = asyncio.create_task(call(node, seq, words[1], [parse_arg(w) for w in words[2:]]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif words[0] == "stats":
            emit(stats_of(node, seq))
        elif words[0] == "publish" and len(words) == 3:
            event = await node.publish(words[1], parse_arg(words[2]))
            emit({"event": "published", "seq": seq, "t": time.time(), "topic": words[1],
                  "n": event.seq})  # fmt: skip
        elif words[0] == "subscribe" and len(words) <= 2:
            task = asyncio.create_task(print_events(node, words[1] if len(words) == 2 else ""))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            emit({"event": "subscribed", "seq": seq, "t": time.time()})
        else:
            emit({"event": "error", "seq": seq, "code": "command", "error": line.decode()})


async def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks to stderr, for a hang
    config = Config.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Node(config) as node:
        if os.environ.get("LAN_NODE_SERVICE") == "calc":
            node.add_service(Calc(node.name))
        emit(
            {
                "event": "ready",
                "t": time.time(),
                "id": node.id,
                "name": node.name,
                "address": node.address,
                "gossip_address": node.gossip_address,
            }
        )
        calls: set[asyncio.Task[None]] = set()
        workers = [
            asyncio.create_task(report_views(node)),
            asyncio.create_task(read_commands(node, calls)),
        ]
        await stop.wait()
        for task in [*workers, *calls]:
            task.cancel()
        await asyncio.gather(*workers, *calls, return_exceptions=True)
    emit({"event": "stopped"})


if __name__ == "__main__":
    asyncio.run(main())
