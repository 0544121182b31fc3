"""A long-running node keeps no file descriptors for members that are gone: peers
(real processes) join, are called, are SIGKILLed, come back under the same name and
leave, cycle after cycle; once the departed are purged (``dead_ttl``, 3 s on the
``test`` profile) the survivor holds as many sockets and eventfds as before.

Every zmq socket holds an eventfd (its mailbox), and a DEALER with a monitor three (the
DEALER, the monitor's PAIR and libzmq's own end of it), so a connection that is never
closed shows here even when its TCP connection is gone."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from mesh import Node
from mesh.testing import fresh_config
from tests.leaks import snapshot
from tests.programs import node_env, node_program, read_line, stop

CYCLES = 3


def _fd_kinds() -> collections.Counter[str]:
    """This process's open fds by kind: socket, eventfd, pipe, eventpoll, file."""
    kinds: collections.Counter[str] = collections.Counter()
    for target in snapshot(False).fds.values():
        if target.startswith("anon_inode:"):
            kinds[target.removeprefix("anon_inode:").strip("[]")] += 1
        else:
            kinds[target.split(":")[0] if ":" in target else "file"] += 1
    return kinds


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_a_survivor_keeps_no_fds_for_departed_members() -> None:
    config = fresh_config(name="survivor")
    async with Node(config) as node, node.subscribe("x."):  # follows each peer's PUB
        env = node_env(
            MESH_NAME=config.mesh,
            MESH_HOST="127.0.0.1",
            MESH_SEEDS=node.address,
            MESH_NODE_NAME="peer",
            LAN_NODE_SERVICE="calc",
        )

        def alive_peers() -> set[str]:
            return {m.id for m in node.members() if m.name == "peer" and m.status == "alive"}

        async def serve_once(peer: subprocess.Popen[bytes]) -> str:
            """Start the peer, wait until it alone is listed alive, call it; its id."""
            ready = await asyncio.to_thread(read_line, peer, 20.0)
            await _until(lambda: alive_peers() == {ready["id"]}, 10.0, "the peer listed")
            assert await node.call("calc.add", 1, 2, timeout=5.0) == 3
            return str(ready["id"])

        await asyncio.sleep(0.2)
        before = _fd_kinds()
        for _ in range(CYCLES):
            with node_program("tests.lan_node", env) as peer:
                gone = await serve_once(peer)
                os.kill(peer.pid, signal.SIGKILL)
            await _until(lambda g=gone: g not in alive_peers(), 10.0, "the killed peer declared")
            with node_program("tests.lan_node", env) as peer:  # the same name, a new id
                await serve_once(peer)
                assert stop(peer) == 0  # it leaves
        # Past dead_ttl every departed member is purged and nothing of it stays open.
        wanted = ("socket", "eventfd", "pipe")
        try:
            await _until(lambda: all(_fd_kinds()[k] <= before[k] for k in wanted), 10.0, "fds back")
        except AssertionError:
            after = _fd_kinds()
            raise AssertionError(
                f"after {CYCLES} cycles: {dict(after)}, before: {dict(before)}"
            ) from None
