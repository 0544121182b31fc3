"""nodes.clock and nodes.kv as real processes, with a node of this process as their peer.

Each program runs with the ``test`` profile on 127.0.0.1, discovery off, under a mesh name
of the test's own; the node here joins through it as its seed. Programs are ended by PID:
SIGTERM, and they must exit 0 (``tests.programs.node_program`` SIGKILLs what is left).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mesh import Event, Node, RemoteError, Subscription
from mesh.testing import call, fresh_config
from nodes.clock import Clock, interval_from_env
from nodes.kv import KV
from tests.programs import node_env, node_program, read_line, stop


@asynccontextmanager
async def program(
    module: str, **settings: str
) -> AsyncIterator[tuple[Node, subprocess.Popen[bytes]]]:
    """``python -m module`` in a mesh of its own, and a node here joined through it."""
    name = f"progs-{secrets.token_hex(4)}"
    env = node_env(MESH_NAME=name, MESH_HOST="127.0.0.1", MESH_NODE_NAME="program", **settings)
    with node_program(module, env) as proc:
        ready = read_line(proc)
        assert ready["event"] == "ready"
        config = fresh_config(mesh=name, name="here", seeds=(ready["address"],))
        async with Node(config) as node:
            yield node, proc
        assert stop(proc) == 0


async def next_event(sub: Subscription, timeout: float = 5.0) -> Event:
    return await asyncio.wait_for(anext(sub), timeout)


async def test_clock_publishes_ticks_that_a_subscriber_node_receives() -> None:
    async with program("nodes.clock", CLOCK_INTERVAL="0.05") as (node, _):
        await node.wait_for_service("clock", timeout=5.0)
        async with node.subscribe("clock.") as ticks:
            first = await next_event(ticks)
            later = [await next_event(ticks) for _ in range(3)]
        assert first.topic == "clock.tick"
        assert first.publisher != node.id
        assert set(first.data) == {"n", "time"}
        numbers = [first.data["n"], *(e.data["n"] for e in later)]
        assert numbers == list(range(numbers[0], numbers[0] + 4))  # one a tick, in order
        assert [e.seq for e in later] == numbers[1:]
        times = [first.data["time"], *(e.data["time"] for e in later)]
        assert times == sorted(times)
        assert abs(times[0] - time.time()) < 5
        assert 0.1 <= times[-1] - times[0] < 2.0  # three intervals of 0.05 s, on a busy box
        now = await call(node, "clock.now", timeout=5.0)
        assert isinstance(now, float)
        assert abs(now - time.time()) < 5


def test_clock_refuses_a_bad_interval() -> None:
    env = node_env(CLOCK_INTERVAL="soon", MESH_HOST="127.0.0.1")
    with node_program("nodes.clock", env) as proc:
        assert proc.wait(10) == 2
        assert proc.stderr is not None
        lines = proc.stderr.read().decode().splitlines()
    assert lines == ["error: CLOCK_INTERVAL: expected a positive number of seconds, got 'soon'"]


def test_clock_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOCK_INTERVAL", raising=False)
    assert interval_from_env() == 1.0
    monkeypatch.setenv("CLOCK_INTERVAL", "0.25")
    assert interval_from_env() == 0.25
    for bad in ("0", "-1", "nan", "inf", "x"):
        monkeypatch.setenv("CLOCK_INTERVAL", bad)
        with pytest.raises(ValueError, match="CLOCK_INTERVAL"):
            interval_from_env()


async def test_clock_ticks_in_process_and_stops() -> None:
    async with Node(fresh_config()) as node:
        clock = Clock(interval=0.02)
        node.add_service(clock)
        async with node.subscribe("clock.tick") as ticks:
            clock.start(node)
            assert [(await next_event(ticks)).data["n"] for _ in range(3)] == [1, 2, 3]
            await clock.stop()
        assert 3 <= clock.ticks <= 4


async def test_kv_sets_gets_deletes_lists_and_announces_changes() -> None:
    async with program("nodes.kv") as (node, _):
        await node.wait_for_service("kv", timeout=5.0)
        async with node.subscribe("kv.") as changes:
            await following(node, changes)
            assert await node.call("kv.set", "colour", "blue") is None
            assert await node.call("kv.set", "count", {"n": [1, 2]}) is None
            assert await node.call("kv.set", "colour", "green") is None
            assert await node.call("kv.get", "colour") == "green"
            assert await node.call("kv.get", "count") == {"n": [1, 2]}
            assert await node.call("kv.get", "missing") is None
            assert await node.call("kv.get", "missing", default=7) == 7
            assert await node.call("kv.keys") == ["colour", "count", "probe"]
            assert await node.call("kv.keys", prefix="co") == ["colour", "count"]
            assert await node.call("kv.delete", "count") is True
            assert await node.call("kv.delete", "count") is False  # gone: no event
            assert await node.call("kv.keys", "co") == ["colour"]
            seen = [(await next_event(changes)).data for _ in range(4)]
            assert changes.pending() == 0
        assert seen == [
            {"key": "colour", "op": "set", "value": "blue"},
            {"key": "count", "op": "set", "value": {"n": [1, 2]}},
            {"key": "colour", "op": "set", "value": "green"},
            {"key": "count", "op": "delete", "value": None},
        ]
        with pytest.raises(RemoteError, match="TypeError"):
            await node.call("kv.set", 17, "x")


async def following(node: Node, changes: Subscription) -> None:
    """Set a probe key until its change event arrives: from then on the SUB socket
    follows the kv node's PUB, and no event is lost on the way (docs/events.md)."""
    deadline = time.monotonic() + 10
    for i in range(1000):
        await node.call("kv.set", "probe", i)
        try:
            event = await asyncio.wait_for(anext(changes), 0.05)
        except TimeoutError:
            assert time.monotonic() < deadline, "the kv node's events never arrived"
            continue
        while event.data != {"key": "probe", "op": "set", "value": i}:  # earlier probes
            event = await next_event(changes)
        return


async def test_kv_in_process_without_a_node() -> None:
    published: list[tuple[str, Any]] = []

    async def publish(topic: str, data: Any) -> None:
        published.append((topic, data))

    kv = KV(publish)
    await kv.set("a", 1)
    assert await kv.get("a") == 1
    assert await kv.delete("a") is True
    assert await kv.delete("a") is False
    assert await kv.keys() == []
    assert published == [
        ("kv.changed", {"key": "a", "op": "set", "value": 1}),
        ("kv.changed", {"key": "a", "op": "delete", "value": None}),
    ]
    with pytest.raises(TypeError):
        await kv.keys(prefix=3)  # type: ignore[arg-type]
    quiet = KV()
    await quiet.set("b", 2)
    assert await quiet.keys() == ["b"]


def test_four_nodes_from_one_line_have_names_of_their_own() -> None:
    """The same command four times (no MESH_NODE_NAME): four names, host-program-pid."""
    env = node_env(MESH_NAME=f"names-{secrets.token_hex(4)}", MESH_HOST="127.0.0.1")
    host = socket.gethostname().split(".")[0][:24]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(node_program("nodes.plain", env)) for _ in range(4)]
        names = [read_line(proc)["name"] for proc in procs]
        print("default names:", names)
        assert names == [f"{host}-plain-{proc.pid}" for proc in procs]
        assert len(set(names)) == 4
        assert [stop(proc) for proc in procs] == [0] * 4
