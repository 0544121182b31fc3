"""A calculator service: arithmetic, a slow method, a blocking one, a failing one, streams.

MESH_NAME=demo python -m nodes.calc
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

from mesh import Node, current_call, method, service, stream
from nodes._program import run


@service("calc", version="1.0.0")
class Calc:
    """Arithmetic and a few methods that show how mesh behaves."""

    @method(idempotent=True)
    async def add(self, a: float, b: float) -> float:
        """Return a + b."""
        return a + b

    @method(idempotent=True)
    def mul(self, a: float, b: float) -> float:
        """Return a * b (a sync method: it runs on the worker pool)."""
        return a * b

    @method
    async def div(self, a: float, b: float) -> float:
        """Return a / b; dividing by zero raises ZeroDivisionError on the caller as RemoteError."""
        return a / b

    @method
    async def slow(self, seconds: float) -> float:
        """Sleep ``seconds`` on the loop (cancelled when the caller's deadline passes)."""
        await asyncio.sleep(seconds)
        return seconds

    @method
    def blocking(self, seconds: float) -> float:
        """Block a worker thread for ``seconds``, stopping early if the caller gives up."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if current_call().cancelled:
                return -1.0
            time.sleep(min(0.01, seconds))
        return seconds

    @method
    async def fail(self, message: str = "failed on purpose") -> None:
        """Raise ValueError(message)."""
        raise ValueError(message)

    @stream
    async def count(self, n: int, delay: float = 0.0) -> AsyncIterator[int]:
        """Yield 0, 1, ..., n-1 (pausing ``delay`` seconds between items)."""
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield i

    @stream
    def squares(self, n: int) -> Iterator[int]:
        """Yield i*i for i < n (a sync generator: runs on the worker pool)."""
        for i in range(n):
            yield i * i


async def setup(node: Node) -> None:
    node.add_service(Calc())


if __name__ == "__main__":
    run(setup)
