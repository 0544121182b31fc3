"""Join attempts to addresses that are not members yet: pure bookkeeping, explicit ``now``.

A zeroconf sighting or a seed's gossip address makes the node sync with an address it
has never heard from. Anyone on the LAN can announce any address, so each attempt is
bounded: at most ``max_pending`` in flight at once; one that is refused, fails its
socket handshake or is not answered within ``timeout`` ends, and that address is not
tried again for a backoff that doubles with each failure (``initial`` to ``most``
seconds). The backoff table keeps at most ``max_backoffs`` addresses, oldest forgotten
first. An attempt ends well when the address turns out to be a live member's.

No sockets here: the gossip runtime (mesh/_node/gossiper.py) asks :meth:`JoinAttempts.begin`
before it opens a DEALER for a join, reports what the DEALER's monitor saw, and closes
the DEALER of each attempt that failed or expired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["JoinAttempts", "JoinStatistics"]

#: The first backoff after a failed attempt, and the most it grows to (seconds).
BACKOFF_INITIAL: Final = 1.0
BACKOFF_MOST: Final = 300.0
#: How long an attempt may go unanswered (seconds): the DEALER's connect timeout and a
#: CURVE handshake with room to spare.
JOIN_TIMEOUT: Final = 5.0


@dataclass(slots=True)
class JoinStatistics:
    """Counters of join attempts to non-members."""

    #: Attempts begun (a Sync sent to the address).
    started: int = 0
    #: Attempts that ended with the address a live member's.
    confirmed: int = 0
    #: Attempts refused, failed (socket handshake, disconnect) or not answered in time.
    failed: int = 0
    #: Joins skipped: the address was backing off after a failure.
    backing_off: int = 0
    #: Joins skipped: ``max_pending`` attempts were in flight already.
    too_many: int = 0


class JoinAttempts:
    """Which non-member addresses may be tried now; see the module docstring."""

    def __init__(
        self,
        max_pending: int,
        *,
        timeout: float = JOIN_TIMEOUT,
        initial: float = BACKOFF_INITIAL,
        most: float = BACKOFF_MOST,
        max_backoffs: int | None = None,
    ) -> None:
        self.max_pending = max_pending
        self.timeout = timeout
        self.initial = initial
        self.most = most
        self.max_backoffs = max_backoffs if max_backoffs is not None else 16 * max_pending
        #: address -> when its attempt expires, oldest first.
        self._pending: dict[str, float] = {}
        #: address -> (failures in a row, not before), oldest failure first.
        self._backoff: dict[str, tuple[int, float]] = {}
        self.statistics = JoinStatistics()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, address: object) -> bool:
        return address in self._pending

    def begin(self, address: str, now: float) -> bool:
        """May an attempt to ``address`` start now? If so it is in flight from now."""
        if address in self._pending:
            return True  # the same attempt, again: nothing more is opened for it
        backoff = self._backoff.get(address)
        if backoff is not None and now < backoff[1]:
            self.statistics.backing_off += 1
            return False
        if len(self._pending) >= self.max_pending:
            self.statistics.too_many += 1
            return False
        self._pending[address] = now + self.timeout
        self.statistics.started += 1
        return True

    def confirmed(self, address: str) -> bool:
        """``address`` is a live member's: its attempt ended well. True if one was pending."""
        self._backoff.pop(address, None)
        if self._pending.pop(address, None) is None:
            return False
        self.statistics.confirmed += 1
        return True

    def failed(self, address: str, now: float) -> bool:
        """The attempt to ``address`` was refused or failed: back off. True if one was
        pending (only then is there anything to close)."""
        if self._pending.pop(address, None) is None:
            return False
        self.statistics.failed += 1
        failures = self._backoff.pop(address, (0, 0.0))[0] + 1
        wait = min(self.most, self.initial * 2 ** min(failures - 1, 62))
        self._backoff[address] = (failures, now + wait)
        while len(self._backoff) > self.max_backoffs:
            del self._backoff[next(iter(self._backoff))]
        return True

    def expired(self, now: float) -> list[str]:
        """Attempts not answered in time, in the order they began; the caller confirms
        those that became members and fails the others."""
        late = []
        for address, deadline in self._pending.items():
            if deadline > now:
                break  # begun in order, all with the same timeout
            late.append(address)
        return late

    def next_deadline(self) -> float:
        """When the oldest attempt expires (inf with none in flight)."""
        return next(iter(self._pending.values()), math.inf)

    @property
    def backing_off(self) -> int:
        """Addresses in the backoff table."""
        return len(self._backoff)
