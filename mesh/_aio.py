"""asyncio helpers that keep cancellation on Python 3.11."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False; ``None``:
    no limit).

    Instead of ``asyncio.wait_for(event.wait(), timeout)``, which on Python 3.11 loses a
    cancellation that arrives in the loop turn in which the event is set (CPython
    gh-86296): a loop that waits this way and is stopped by ``task.cancel()`` would
    carry on, and whoever awaits the task would wait forever. ``asyncio.timeout``
    tells its own expiry from a cancellation by the caller."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
