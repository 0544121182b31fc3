"""A clock: publishes ``clock.tick`` events at a steady pace and tells the time.

MESH_NAME=demo CLOCK_INTERVAL=0.5 python -m nodes.clock

Every ``CLOCK_INTERVAL`` seconds (default 1.0) it publishes ``clock.tick`` with
``{"n": 1, 2, 3, ..., "time": time.time()}``; ``meshctl subscribe clock.`` shows them.
The ``clock`` service answers ``clock.now()`` with the same wall clock.
"""

from __future__ import annotations

import asyncio
import time

from mesh import MeshError, Node, method, service
from nodes._program import run, seconds_from_env

#: The topic of the ticks.
TOPIC = "clock.tick"
DEFAULT_INTERVAL = 1.0


@service("clock", version="1.0.0")
class Clock:
    """The time on this node, and a tick event every ``interval`` seconds."""

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        #: Ticks published so far.
        self.ticks = 0
        self._ticker: asyncio.Task[None] | None = None

    @method(idempotent=True)
    def now(self) -> float:
        """The node's wall clock, ``time.time()`` (seconds since 1970; not synchronised)."""
        return time.time()

    def start(self, node: Node) -> None:
        """Publish ticks through ``node`` until it closes (or :meth:`stop`)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(node), name="clock: ticks"
            )

    async def stop(self) -> None:
        """Stop publishing ticks."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _tick(self, node: Node) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.ticks += 1
            try:
                await node.publish(TOPIC, {"n": self.ticks, "time": time.time()})
            except MeshError:  # the node closed: nothing to tick for
                return
            # On schedule, without drift; ticks missed while the loop was busy are
            # skipped, not sent in a burst.
            due = max(due + self.interval, loop.time())


def interval_from_env() -> float:
    """``CLOCK_INTERVAL`` in seconds (default 1.0); :class:`mesh.ConfigError` if it is not a
    positive number."""
    return seconds_from_env("CLOCK_INTERVAL", DEFAULT_INTERVAL)


async def setup(node: Node) -> None:
    clock = Clock(interval_from_env())
    node.add_service(clock)
    clock.start(node)


if __name__ == "__main__":
    run(setup)
