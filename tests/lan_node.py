"""A node program for the namespace LAN tests: ``python -m tests.lan_node``.

Runs one :class:`mesh.Node` configured from ``MESH_*`` (``Config.from_env()``); with
``LAN_NODE_SERVICE=calc`` it offers a small ``calc`` service (``add`` and ``where`` are
idempotent, ``slow`` is not). ``LAN_NODE_SERVICE`` is a comma-separated list of names
of :data:`SERVICES` (a program may pass more to :func:`main`, as tests/chaos/node.py
does). ``LAN_NODE_HEARTBEAT`` sets the heartbeat of view lines (default 0.5 s). It
prints JSON lines on stdout:

- ``{"event": "ready", "t", "id", "name", "address", "gossip_address"}`` once it serves;
- ``{"event": "view", "t", "members": {name: status}, "ids": [[name, id, status], ...],
  "services": {service: [provider names]}, "gossip_bytes_out", "gossip_messages_out",
  "gossip_bytes_in", "rss", "fds"}`` whenever its view changes and at least every 0.5 s
  (``members`` keeps the best status when two members share a name: alive, suspect,
  dead, left; ``rss``: resident memory in bytes, ``fds``: open file descriptors);
- ``{"event": "result", "seq", "t", "target", "value", "elapsed"}`` or
  ``{"event": "error", "seq", "t", "target", "code", "type", "error", "elapsed"}`` for
  each call;
- ``{"event": "enqueued", "seq", "t", "key", "id"}`` (or an error line) for ``enqueue``;
- ``{"event": "stats", "seq", ...}`` for the ``stats`` command;
- ``{"event": "published", "seq", "t", "topic", "n"}`` for ``publish`` (``n``: the
  event's sequence number), and ``{"event": "got", "t", "topic", "data", "publisher",
  "n"}`` for each event a ``subscribe`` command's subscription receives;
- ``{"event": "stopped"}`` after a clean close on SIGTERM or SIGINT.

SIGUSR1 writes the stacks of all threads to stderr (to see where a node hangs).

Commands, one per stdin line (``seq`` counts them from 1): ``call [--timeout=S] TARGET
[ARG ...]`` (each ARG is JSON, or a plain string if it is not), ``stats``, ``publish
TOPIC DATA`` (DATA as an ARG), ``subscribe PREFIX [GROUP]`` (GROUP: a queue group),
``enqueue TARGET KEY [ARG ...]`` (a durable job with idempotency key KEY and retries
0.2 s apart; needs ``MESH_JOBS_DB``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from mesh import Config, MeshError, Node, method, service
from mesh._io.process import process_statistics
from mesh._util.aio import wait_set

#: Statuses from best to worst, for names held by two members (a restart).
_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}
#: A view line goes out at least this often (seconds).
HEARTBEAT = float(os.environ.get("LAN_NODE_HEARTBEAT", "0.5"))
#: Retries of the jobs that ``enqueue`` puts in the outbox (seconds apart).
JOB_RETRIES = (0.2, 0.2)


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
            # not asyncio.wait_for: on 3.11 it may lose the cancellation that stops this
            # loop (mesh._util.aio), and the node would never exit on SIGTERM
            await wait_set(changed, HEARTBEAT)
            changed.clear()
            view = view_of(node)
            now = time.monotonic()
            if view != last or now - last_at >= HEARTBEAT:
                assert node._gossiper is not None
                gossip = node._gossiper.statistics()
                process = process_statistics()
                emit(
                    {
                        "event": "view",
                        "t": time.time(),
                        **view,
                        "gossip_bytes_out": gossip.bytes_out,
                        "gossip_messages_out": gossip.messages_out,
                        "gossip_bytes_in": gossip.bytes_in,
                        "rss": process.rss_bytes,
                        "fds": process.open_fds,
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


def error_line(seq: int, target: str, exc: MeshError, start: float) -> dict[str, Any]:
    return {
        "event": "error",
        "seq": seq,
        "t": time.time(),
        "target": target,
        "code": exc.code,
        "type": type(exc).__name__,
        "error": str(exc),
        "elapsed": time.monotonic() - start,
    }


async def call(
    node: Node, seq: int, target: str, args: list[Any], timeout: float | None = None
) -> None:
    start = time.monotonic()
    try:
        value = await node.call(target, *args, timeout=timeout)
    except MeshError as exc:
        emit(error_line(seq, target, exc, start))
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


async def enqueue(node: Node, seq: int, target: str, key: str, args: list[Any]) -> None:
    start = time.monotonic()
    try:
        job_id = await node.enqueue(target, *args, key=key, retries=JOB_RETRIES)
    except MeshError as exc:
        emit(error_line(seq, target, exc, start))
    else:
        emit({"event": "enqueued", "seq": seq, "t": time.time(), "key": key, "id": job_id})


async def print_events(node: Node, prefix: str, group: str | None = None) -> None:
    async for event in node.subscribe(prefix, group=group):
        emit(
            {
                "event": "got",
                "t": time.time(),
                "topic": event.topic,
                "data": event.data,
                "publisher": event.publisher,
                "n": event.seq,
                "group": group,
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


def start_task(tasks: set[asyncio.Task[None]], coroutine: Any) -> None:
    task = asyncio.create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def read_commands(node: Node, tasks: set[asyncio.Task[None]]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
            return  # a file or /dev/null (which epoll refuses, logging a traceback)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):  # no usable stdin: no commands
        return
    seq = 0
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        seq += 1
        timeout = None
        if words[0] == "call" and len(words) >= 2 and words[1].startswith("--timeout="):
            timeout = float(words.pop(1).partition("=")[2])
        if words[0] == "call" and len(words) >= 2:
            args = [parse_arg(w) for w in words[2:]]
            start_task(tasks, call(node, seq, words[1], args, timeout))
        elif words[0] == "enqueue" and len(words) >= 3:
            args = [parse_arg(w) for w in words[3:]]
            start_task(tasks, enqueue(node, seq, words[1], words[2], args))
        elif words[0] == "stats":
            emit(stats_of(node, seq))
        elif words[0] == "publish" and len(words) == 3:
            event = await node.publish(words[1], parse_arg(words[2]))
            emit({"event": "published", "seq": seq, "t": time.time(), "topic": words[1],
                  "n": event.seq})  # fmt: skip
        elif words[0] == "subscribe" and len(words) <= 3:
            prefix = words[1] if len(words) >= 2 else ""
            start_task(tasks, print_events(node, prefix, words[2] if len(words) == 3 else None))
            emit({"event": "subscribed", "seq": seq, "t": time.time()})
        else:
            emit({"event": "error", "seq": seq, "code": "command", "error": line.decode()})


#: Services a node offers by name (``LAN_NODE_SERVICE=calc,...``): name -> factory.
ServiceFactory = Callable[[Node], object]
SERVICES: Mapping[str, ServiceFactory] = {"calc": lambda node: Calc(node.name)}


async def main(services: Mapping[str, ServiceFactory] = SERVICES) -> None:
    """Serve until SIGTERM or SIGINT, offering the ``services`` that LAN_NODE_SERVICE names."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks to stderr, for a hang
    config = Config.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Node(config) as node:
        for name in os.environ.get("LAN_NODE_SERVICE", "").split(","):
            if name.strip():
                node.add_service(services[name.strip()](node))
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
