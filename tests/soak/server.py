"""The serving node of the soak: ``python -m tests.soak.server`` (settings from MESH_*).

It offers what ``nodes.echo`` offers (``echo.say``, ``echo.shout``), plus the ``soak``
service: ``soak.publish(count)`` publishes ``count`` events of 100 bytes on
``soak.e`` as fast as it can (a yield to the loop every 100, so the bus batches them)
and returns the sequence number of the last one; ``soak.collect()`` runs the garbage
collector, so that memory is compared without garbage that is merely not collected yet.
"""

from __future__ import annotations

import asyncio
import gc

from mesh import Node, method, service
from nodes import echo
from nodes._program import run

TOPIC = "soak.e"
DATA = b"e" * 100
YIELD_EVERY = 100


@service("soak", version="1.0.0")
class Soak:
    """Events on demand, and a garbage collection."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @method
    async def publish(self, count: int) -> int:
        """Publish ``count`` events on ``soak.e``; the last one's sequence number."""
        seq = 0
        for i in range(1, count + 1):
            seq = (await self._node.publish(TOPIC, DATA)).seq
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return seq

    @method
    async def collect(self) -> int:
        """Run a full garbage collection; the objects it found unreachable."""
        return gc.collect()


async def setup(node: Node) -> None:
    await echo.setup(node)
    node.add_service(Soak(node))


if __name__ == "__main__":
    run(setup)
