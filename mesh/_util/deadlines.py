"""One loop timer for the deadlines of many calls: those a node sends and those it serves.

Calls mostly share one timeout, so their deadlines come in the order they are set, and
a single timer, set for the first of them, serves them all: a timer per call costs a
handle and heap operations in Python (~2 us a call, measured on each side).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Final, Generic, TypeVar

__all__ = ["DeadlineQueue"]

#: What asyncio's loop allows a timer to fire early by (it uses the same figure).
_CLOCK_RESOLUTION: Final = time.get_clock_info("monotonic").resolution

K = TypeVar("K")


class DeadlineQueue(Generic[K]):
    """Deadlines in the order they were set, each with a key, and one timer for the first.

    ``expire(key)`` runs when a key's deadline passes while ``pending(key)`` still holds;
    the owner calls :meth:`finished` when a queued key stops pending, and the keys no
    longer pending leave from the front. A deadline earlier than the last queued is
    refused (the caller gives it a timer of its own), so the queue stays sorted without
    a heap. Keys stuck behind a slow one are swept out when they outnumber the pending
    ones (as asyncio does with its cancelled timers). Callbacks are given once, not per
    deadline: nothing is allocated per call but the queue's entry.
    """

    __slots__ = ("_at", "_expire", "_live", "_pending", "_queue", "_timer")

    def __init__(self, expire: Callable[[K], None], pending: Callable[[K], bool]) -> None:
        self._expire = expire
        self._pending = pending
        self._queue: collections.deque[tuple[float, K]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0
        #: Queued keys not yet finished.
        self._live = 0

    def add(self, loop: asyncio.AbstractEventLoop, when: float, key: K) -> bool:
        """Queue ``key`` to expire at ``when`` (loop time); False if it comes before the
        last queued: not queued, the caller times it itself."""
        queue = self._queue
        if queue and when < queue[-1][0]:
            return False
        queue.append((when, key))
        self._live += 1
        if self._timer is None or when < self._at:
            self._arm(loop, when)
        elif len(queue) > 2 * self._live + 64:
            pending = self._pending
            self._queue = collections.deque(q for q in queue if pending(q[1]))
        return True

    def finished(self) -> None:
        """A queued key is no longer pending (settled, done, expired)."""
        self._live -= 1
        queue, pending = self._queue, self._pending
        while queue and not pending(queue[0][1]):
            queue.popleft()

    def close(self) -> None:
        """Cancel the timer and forget every deadline (nothing expires)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire, loop)
        self._at = when

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Expire what is due (as call_at would: within the clock's resolution)."""
        self._timer = None
        queue, pending, expire = self._queue, self._pending, self._expire
        due = loop.time() + _CLOCK_RESOLUTION
        while queue and queue[0][0] < due:
            key = queue.popleft()[1]
            if pending(key):
                expire(key)
        while queue and not pending(queue[0][1]):
            queue.popleft()
        if queue:
            self._arm(loop, queue[0][0])
