"""asyncio helpers that keep cancellation on Python 3.11.

Use them instead of ``asyncio.wait_for``, which on Python 3.11 loses a cancellation that
arrives in the loop turn in which the awaited thing completes (CPython gh-86296): a loop
that waits that way and is stopped by ``task.cancel()`` carries on, and whoever awaits
the task waits forever. ``asyncio.timeout`` tells its own expiry from a cancellation by
the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable`` for at most ``timeout`` seconds (``None``: no limit);
    TimeoutError after that, as ``asyncio.wait_for`` raises."""
    async with asyncio.timeout(timeout):
        return await awaitable


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False)."""
    try:
        await within(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
