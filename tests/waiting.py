"""Waiting, in a test, for what has no event to await (statistics, counters, lists a
handler appends to)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(condition: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll ``condition`` every 10 ms until it is true; AssertionError after ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        await asyncio.sleep(0.01)
