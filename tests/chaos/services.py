"""The services of the chaos campaign's nodes, by name (``LAN_NODE_SERVICE``).

- ``calc`` (tests/lan_node.py): ``add`` and ``where`` idempotent, ``slow`` not;
- ``db``: ``get(key)``, idempotent, a plain service;
- ``api``: supervised (``start``/``run``/``stop``), depends on ``db@1``; ``read(key)``
  (idempotent) calls ``db.get``;
- ``work``: a durable-job handler ``do(n)`` that appends ``start N PID``, then ``done N
  PID`` or ``reject N PID`` (every tenth job, ``n % 10 == 9``, raises ``mesh.Reject``:
  a dead letter) to the file ``LAN_NODE_JOB_LOG`` (O_APPEND, one write a line).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from mesh import Node, Reject, method, service
from tests.lan_node import SERVICES as BASE
from tests.lan_node import ServiceFactory

#: How long a job takes (seconds).
JOB_PAUSE = 0.05


def log_job(what: str, n: int) -> None:
    """Append ``what N PID`` to the job log, one write (lines of all providers interleave)."""
    fd = os.open(os.environ["LAN_NODE_JOB_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {n} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@service("db", version="1.0.0")
class Db:
    """What ``api`` depends on."""

    def __init__(self, name: str) -> None:
        self._name = name

    @method(idempotent=True)
    async def get(self, key: str) -> str:
        """``key@node``."""
        return f"{key}@{self._name}"


@service("api", version="1.0.0", depends_on=["db@1"])
class Api:
    """A supervised service: up only while some node offers ``db``."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def start(self) -> None:
        """Nothing to open."""

    async def run(self) -> None:
        """A background loop that lives as long as the service."""
        await asyncio.Event().wait()

    async def stop(self) -> None:
        """Nothing to close."""

    @method(idempotent=True)
    async def read(self, key: str) -> str:
        """``db.get(key)`` through whichever node offers ``db``."""
        value: str = await self._node.call("db.get", key)
        return value


@service("work")
class Work:
    """Durable jobs that log each run."""

    @method
    async def do(self, n: int) -> int:
        """Log ``start``, pause, then log ``done`` (or ``reject`` and raise Reject)."""
        log_job("start", n)
        await asyncio.sleep(JOB_PAUSE)
        if n % 10 == 9:
            log_job("reject", n)
            raise Reject(f"job {n} is refused (every tenth is)")
        log_job("done", n)
        return n


SERVICES: Mapping[str, ServiceFactory] = {
    **BASE,
    "db": lambda node: Db(node.name),
    "api": Api,
    "work": lambda node: Work(),
}
