"""CPU use, from /proc: the machine's (all processes) and the campaign's own (its node
processes and itself), each as a percent of the machine's capacity (100 = every CPU busy).

The machine is shared: other work on it shows in the machine's figure, not in ours."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from tests.procstat import cpu_ticks, stat_fields

_TICKS = os.sysconf("SC_CLK_TCK")


def machine_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def process_jiffies(pid: int) -> int:
    """utime + stime of ``pid`` (0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return cpu_ticks(stat_fields(pid))
    return 0


def busy_percent(busy: int, total: int) -> float:
    return 100.0 * busy / total if total > 0 else 0.0


class CpuMeter:
    """``tick(now, pids)`` now and then (at least ~1 s apart counts); then ``mean`` and
    ``peak`` of the machine's and the campaign's share over a time range."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        self._last = machine_times()
        self._jiffies: dict[int, int] = {}
        self._own = self._self_jiffies()
        #: (time, machine percent, campaign percent) since the previous sample
        self.samples: list[tuple[float, float, float]] = []

    @staticmethod
    def _self_jiffies() -> int:
        times = os.times()
        return round((times.user + times.system) * _TICKS)

    def tick(self, now: float, pids: Iterable[int]) -> None:
        current = machine_times()
        total = current[1] - self._last[1]
        if total < _TICKS * self.cpus:  # less than a second: wait for more
            return
        used = 0
        for pid in pids:
            jiffies = process_jiffies(pid)
            used += max(0, jiffies - self._jiffies.get(pid, jiffies))
            self._jiffies[pid] = jiffies
        own = self._self_jiffies()
        used += own - self._own
        self._own = own
        self.samples.append((now, busy_percent(current[0] - self._last[0], total),
                             busy_percent(used, total)))  # fmt: skip
        self._last = current

    def mean(self, start: float, end: float) -> tuple[float, float] | None:
        """(machine, campaign) mean percent over the samples in [start, end]."""
        chosen = [(m, c) for t, m, c in self.samples if start <= t <= end]
        if not chosen:
            return None
        return sum(m for m, _ in chosen) / len(chosen), sum(c for _, c in chosen) / len(chosen)

    def peak(self, start: float, end: float) -> tuple[float, float] | None:
        """(machine, campaign) highest sample in [start, end]."""
        chosen = [(m, c) for t, m, c in self.samples if start <= t <= end]
        if not chosen:
            return None
        return max(m for m, _ in chosen), max(c for _, c in chosen)
