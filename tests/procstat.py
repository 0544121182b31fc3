"""What another process uses, read from /proc by PID: resident memory, open file
descriptors, threads and CPU time (its threads included, zmq's I/O thread among them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """One sample of a process."""

    rss_bytes: int
    fds: int
    threads: int
    cpu_seconds: float


def usage(pid: int) -> Usage:
    """Sample process ``pid`` now (Linux); OSError if it is gone."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        rss = int(f.read().split()[1]) * _PAGE
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # the command name may hold spaces and parentheses: the fields follow the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    utime, stime, threads = int(fields[11]), int(fields[12]), int(fields[17])
    return Usage(
        rss_bytes=rss,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=threads,
        cpu_seconds=(utime + stime) / _TICKS,
    )
