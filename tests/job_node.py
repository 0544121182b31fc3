"""A node program for durable-queue tests (settings from MESH_*, as every node program).

JOB_ROLE=provider: offers ``work.do(n, pause)``, which appends ``start N PID`` to the file
JOB_LOG, sleeps ``pause`` seconds, then appends ``done N PID`` (O_APPEND, one line a write).
JOB_ROLE=sender: enqueues JOB_COUNT jobs ``work.do(n, JOB_PAUSE)`` with keys ``job-N``
(the first JOB_FIRST of them, default 0), printing ``{"event": "enqueued", "n": N}`` after
each ``enqueue`` returns; then serves (its outbox hands them off).
"""

from __future__ import annotations

import asyncio
import json
import os

from mesh import Node, method, service
from nodes._program import run


def log_line(text: str) -> None:
    fd = os.open(os.environ["JOB_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


@service(name="work")
class Work:
    @method
    async def do(self, n: int, pause: float) -> int:
        log_line(f"start {n} {os.getpid()}")
        await asyncio.sleep(pause)
        log_line(f"done {n} {os.getpid()}")
        return n


async def setup(node: Node) -> None:
    role = os.environ.get("JOB_ROLE", "provider")
    if role == "provider":
        node.add_service(Work())
        return
    node._spawn(_send(node), "send jobs")


async def _send(node: Node) -> None:
    await asyncio.sleep(0.2)
    first = int(os.environ.get("JOB_FIRST", "0"))
    pause = float(os.environ.get("JOB_PAUSE", "0.1"))
    for n in range(first, int(os.environ.get("JOB_COUNT", "0"))):
        await node.enqueue("work.do", n, pause, key=f"job-{n}", retries=[0.2, 0.2])
        print(json.dumps({"event": "enqueued", "n": n}), flush=True)


if __name__ == "__main__":
    run(setup)
