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
    fields = stat_fields(pid)
    return Usage(
        rss_bytes=rss,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields[17]),
        cpu_seconds=cpu_ticks(fields) / _TICKS,
    )


def stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (``fields[0]`` is the
    state); OSError if the process is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # the command name may hold spaces and parentheses: the fields follow the last ')'
    return stat[stat.rfind(b")") + 2 :].split()


def cpu_ticks(fields: list[bytes]) -> int:
    """utime + stime, in clock ticks, from :func:`stat_fields`."""
    return int(fields[11]) + int(fields[12])
