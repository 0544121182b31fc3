"""Resource use of this process: CPU time, resident memory, threads, open descriptors.

The one place that reads the process (``/proc``, ``os``, ``resource``); the pure counters
and histograms live in mesh/_core/stats.py.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ["ProcessStatistics", "process_statistics"]


@dataclass(frozen=True, slots=True)
class ProcessStatistics:
    """Resource use of this process; a count is -1 where the platform does not tell."""

    #: User plus system CPU time of all threads.
    cpu_seconds: float
    #: Resident memory now (peak resident memory where /proc is missing).
    rss_bytes: int
    #: Native threads, including those of C libraries such as zmq's I/O threads.
    threads: int
    open_fds: int


def process_statistics() -> ProcessStatistics:
    """Resource use of this process now (reads /proc where there is one)."""
    return ProcessStatistics(
        cpu_seconds=time.process_time(),
        rss_bytes=_rss_bytes(),
        threads=_threads(),
        open_fds=_open_fds(),
    )


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return -1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _open_fds() -> int:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            # the listing's own descriptor shows up in it
            return len(os.listdir(directory)) - 1
        except OSError:
            continue
    return -1
