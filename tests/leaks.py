"""A pytest plugin that fails a test which leaks sockets, threads, child processes or
network namespaces, in that test (not in the next one, where an unclosed socket
would otherwise surface).

What is compared before and after each test, allowing a short settling time:
- open file descriptors of this process (sockets, eventfds, pipes, epoll fds);
- native threads (``/proc/self/task``: zmq I/O threads are not in ``threading``);
- child processes, zombies included (a Popen that nobody waited for);
- network namespaces whose name starts with ``zmesh-``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Snapshot:
    fds: dict[int, str]
    threads: int
    children: frozenset[int]
    namespaces: frozenset[str]


def _fds() -> dict[int, str]:
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listing itself, closed meanwhile
            continue
    return found


def _children() -> frozenset[int]:
    me = str(os.getpid())
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces: the fields we want follow the last ')'
        if stat[stat.rfind(")") + 2 :].split()[1] == me:
            kids.add(int(entry))
    return frozenset(kids)


def _namespaces() -> frozenset[str]:
    try:
        out = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(line.split()[0] for line in out.splitlines() if line.startswith("zmesh-"))


def snapshot(namespaces: bool) -> Snapshot:
    return Snapshot(
        fds=_fds(),
        threads=len(os.listdir("/proc/self/task")),
        children=_children(),
        namespaces=_namespaces() if namespaces else frozenset(),
    )


def leaks(before: Snapshot, after: Snapshot) -> list[str]:
    """What ``after`` holds that ``before`` did not, in plain words."""
    found = []
    new_fds = {fd: target for fd, target in after.fds.items() if before.fds.get(fd) != target}
    if new_fds:
        found.append(f"file descriptors left open: {sorted(new_fds.items())}")
    if after.threads > before.threads:
        found.append(f"threads left running: {before.threads} before, {after.threads} after")
    if after.children - before.children:
        found.append(f"child processes left: {sorted(after.children - before.children)}")
    if after.namespaces - before.namespaces:
        found.append(f"network namespaces left: {sorted(after.namespaces - before.namespaces)}")
    return found


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves sockets, threads, processes or namespaces behind."""
    if request.node.get_closest_marker("leaks_allowed"):
        yield
        return
    check_namespaces = (
        request.node.get_closest_marker("lan") is not None or "lan_factory" in request.fixturenames
    )
    before = snapshot(check_namespaces)
    yield
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = leaks(before, snapshot(check_namespaces))
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if found:
        pytest.fail("resource leak: " + "; ".join(found), pytrace=False)
