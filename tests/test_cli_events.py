"""meshctl publish and subscribe, and mesh.Client's events, against real nodes on 127.0.0.1.

The nodes run in the test's own loop (``test`` profile, discovery off, joined through the
first as their seed); meshctl runs as a user runs it, the installed entry point in a
subprocess, driven with asyncio so the nodes keep answering while it runs. A plain SUB
socket may miss what is published while it connects, so tests that wait for an event
publish until it arrives, within a bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import sys
import time
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from mesh import Client, Event, InvalidTopic, Node, Subscription

MESHCTL = str(Path(sys.executable).parent / "meshctl")
FIELDS = {"topic", "data", "publisher", "publisher_name", "seq", "time"}

pytestmark = pytest.mark.timeout(30)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}


def at(node: Node) -> list[str]:
    """The options that point meshctl at ``node``'s mesh through ``node``."""
    return ["--seed", node.address, "--mesh", node.mesh, "--profile", "test", "--no-discovery"]


@asynccontextmanager
async def started(*args: str) -> AsyncIterator[Process]:
    """meshctl running with ``args``; killed at the end if it has not exited."""
    proc = await asyncio.create_subprocess_exec(
        MESHCTL, *args, stdout=PIPE, stderr=PIPE, env=_env()
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def meshctl(*args: str, timeout: float = 15) -> tuple[int, str, str]:
    """Run meshctl to the end: (exit code, stdout, stderr)."""
    async with started(*args) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


async def subscribed(proc: Process) -> str:
    """The line meshctl subscribe says on stderr once its subscription is live."""
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
    assert line.startswith("subscribed to "), line
    return line


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@asynccontextmanager
async def mesh_of(*names: str) -> AsyncIterator[list[Node]]:
    """Nodes of a mesh of their own; the first is the seed of the others."""
    mesh = f"ev-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for name in names:
            seeds = (nodes[0].address,) if nodes else ()
            node = Node(name=name, mesh=mesh, profile="test", discovery=False, seeds=seeds)
            nodes.append(await stack.enter_async_context(node))
        await eventually(lambda: all(alive(n, set(names)) for n in nodes), 10, "mesh formed")
        yield nodes


def alive(node: Node, names: set[str]) -> bool:
    return names <= {m.name for m in node.members() if m.status == "alive" and m.record}


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def next_event(sub: Subscription, timeout: float) -> Event | None:
    try:
        return await asyncio.wait_for(anext(sub), timeout)
    except TimeoutError:
        return None


@asynccontextmanager
async def publishing(node: Node, topic: str, every: float = 0.1) -> AsyncIterator[None]:
    """``node`` publishes 0, 1, 2, ... on ``topic`` in the background (at most 15 s)."""

    async def run() -> None:
        for i in range(int(15 / every)):
            await node.publish(topic, {"i": i})
            await asyncio.sleep(every)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- meshctl publish -----------------------------------------------------------------------


async def test_publish_reaches_a_subscriber_node() -> None:
    async with mesh_of("p", "s") as (p, s), s.subscribe("orders.") as sub:

        def following() -> bool:
            stats = s.statistics().events
            return stats is not None and stats.following >= 1

        await eventually(following, 5, "s follows p")
        event = None
        for _ in range(10):  # the first may go out while s's SUB still connects
            code, out, err = await meshctl("publish", "orders.new", '{"id": 1}', "--json", *at(p))
            assert code == 0, err
            event = await next_event(sub, 1.0)
            if event is not None:
                break
        assert event is not None, "no event reached the subscriber"
        printed = json.loads(out)
        assert printed == {"topic": "orders.new", "seq": event.seq, "publisher": p.id}
        assert (event.topic, event.publisher, event.data) == ("orders.new", p.id, {"id": 1})

        code, out, err = await meshctl("publish", "orders.new", "-1", *at(p))
        assert code == 0, err
        match = re.fullmatch(r"published orders\.new seq (\d+) by p\n", out)
        assert match, out
        event = await next_event(sub, 5.0)
        assert event is not None
        assert (event.seq, event.data) == (int(match[1]), -1)

        code, out, err = await meshctl("publish", "orders.none", *at(p), "--json")
        assert code == 0, err
        event = await next_event(sub, 5.0)
        assert event is not None
        assert (event.topic, event.data) == ("orders.none", None)


async def test_publish_refuses_reserved_and_bad_topics_with_one_line() -> None:
    for args in (["$mesh.x", "1"], ["$mesh.node.joined"], [""]):
        code, out, err = await meshctl("publish", *args, "--no-discovery")
        assert code == 2, (args, err)
        assert out == ""
        line = one_error_line(err)
        if args[0]:
            assert "reserved" in line
    async with mesh_of("p") as (p,):
        # what only the node checks comes back as a usage error too
        code, out, err = await meshctl("publish", "x" * 300, *at(p))
        assert code == 2, err
        assert "255" in one_error_line(err)


# -- meshctl subscribe ---------------------------------------------------------------------


async def test_subscribe_json_prints_events_with_the_documented_fields() -> None:
    async with (
        mesh_of("p", "q") as (p, q),
        started("subscribe", "orders.", "--count", "3", "--json", *at(p)) as proc,
    ):
        assert p.address in await subscribed(proc)
        async with publishing(q, "orders.made"):
            out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err
        assert "received 3 events" in err.decode()
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert len(lines) == 3
        for line in lines:
            assert set(line) == FIELDS
            assert line["topic"] == "orders.made"
            assert line["publisher"] == q.id
            assert line["publisher_name"] == "q"
            assert isinstance(line["data"]["i"], int)
            assert abs(line["time"] - time.time()) < 30
        seqs = [line["seq"] for line in lines]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 3


async def test_subscribe_text_lines_and_timeout_in_all() -> None:
    async with (
        mesh_of("p", "q") as (p, q),
        started("subscribe", "orders.", "--count", "1", *at(p)) as proc,
    ):
        await subscribed(proc)
        async with publishing(q, "orders.made"):
            out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err
        pattern = r"\d\d:\d\d:\d\d\.\d{3} orders\.made q \{\"i\": \d+\}\n"
        assert re.fullmatch(pattern, out.decode()), out
        assert "received 1 event\n" in err.decode()

        # --timeout after the command: the whole run, not how long to wait for a node
        began = time.monotonic()
        code, out_text, err_text = await meshctl("subscribe", "nothing.", "--timeout", "1", *at(p))
        assert code == 0, err_text
        assert out_text == ""
        assert err_text.splitlines()[-1] == "received 0 events"
        assert 1.0 <= time.monotonic() - began < 10


async def test_subscribe_sees_a_node_join_as_a_system_event() -> None:
    async with (
        mesh_of("p") as (p,),
        started("subscribe", "$mesh.", "--json", "--count", "1", *at(p)) as proc,
    ):
        await subscribed(proc)
        late = Node(name="late", mesh=p.mesh, profile="test", discovery=False, seeds=(p.address,))
        async with late:
            out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err
        (line,) = [json.loads(text) for text in out.decode().splitlines()]
        assert set(line) == FIELDS
        assert line["topic"] == "$mesh.node.joined"
        assert line["data"]["node"] == "late"
        assert line["data"]["node_id"] == late.id
        assert line["data"]["status"] == "alive"
        # derived by meshctl's own node, which is not a member
        assert line["publisher_name"] == f"meshctl-sub-{proc.pid}"
        assert line["seq"] == 1


async def test_subscribe_usage_errors_exit_2_with_one_line() -> None:
    for args in (
        ["--group", "g", "--history", "1"],
        ["$mesh.", "--group", "g"],
        ["--group", ""],
        ["--count", "0"],
        ["--timeout", "0"],
        ["--history", "-1"],
    ):
        code, out, err = await meshctl("subscribe", *args, "--no-discovery")
        assert code == 2, (args, err)
        assert out == ""
        one_error_line(err)


async def test_subscribe_in_a_group_shares_events_with_a_member_and_leaves_cleanly() -> None:
    async with (
        mesh_of("p", "g") as (p, g),
        g.subscribe("orders.", group="workers") as member,
        started("subscribe", "orders.", "--group", "workers", "--json", *at(p)) as proc,
    ):
        assert "group 'workers'" in await subscribed(proc)
        name = f"meshctl-sub-{proc.pid}"

        def listed() -> bool:
            return any(
                m.name == name and m.record and ("workers", "orders.") in m.record.groups
                for m in p.members()
            )

        await eventually(listed, 10, "meshctl listed in the group")
        for i in range(20):
            await p.publish("orders.made", i)
        assert proc.stdout is not None
        to_meshctl: list[dict[str, Any]] = []
        to_member: list[Any] = []
        deadline = time.monotonic() + 10
        while len(to_meshctl) + len(to_member) < 20:
            assert time.monotonic() < deadline, (to_meshctl, to_member)
            while (event := await next_event(member, 0.01)) is not None:
                to_member.append(event.data)
            with suppress(TimeoutError):
                line = await asyncio.wait_for(proc.stdout.readline(), 0.05)
                to_meshctl.append(json.loads(line))
        await asyncio.sleep(0.5)  # nothing more comes: each event went to one member
        assert (await next_event(member, 0.01)) is None
        from_meshctl = [line["data"] for line in to_meshctl]
        assert sorted(from_meshctl + to_member) == list(range(20))
        assert from_meshctl
        assert to_member
        assert {line["publisher_name"] for line in to_meshctl} == {"p"}

        proc.send_signal(signal.SIGINT)  # Ctrl-C: the member leaves, not fails
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert out == b""
        assert proc.returncode == 130, err
        assert f"received {len(from_meshctl)} events" in err.decode()
        await eventually(
            lambda: {m.name: m.status for m in p.members()}.get(name) == "left", 5, "left"
        )


# -- mesh.Client ---------------------------------------------------------------------------


async def test_a_client_publishes_through_its_node_and_refuses_reserved_topics() -> None:
    async with (
        mesh_of("a", "b") as (a, b),
        b.subscribe("t.") as sub,
        Client(mesh=a.mesh, profile="test", discovery=False, seeds=(a.address,)) as client,
    ):
        with pytest.raises(InvalidTopic, match="reserved"):
            await client.publish("$mesh.x", 1)
        event = None
        for _ in range(20):
            seq, publisher = await client.publish("t.x", [1, 2])
            assert publisher == a.id
            event = await next_event(sub, 0.5)
            if event is not None:
                break
        assert event is not None
        assert (event.seq, event.publisher, event.data) == (seq, a.id, [1, 2])


async def test_a_client_follows_new_publishers_and_another_node_when_its_node_leaves() -> None:
    async with mesh_of("a", "b") as (a, b):
        client = Client(mesh=a.mesh, profile="test", discovery=False, seeds=(a.address,))
        async with client, await client.subscribe("t.") as sub:
            system = await client.subscribe("$mesh.node.")
            async with Node(
                name="c", mesh=a.mesh, profile="test", discovery=False, seeds=(a.address,)
            ) as c:
                joined = await next_event(system, 10)
                assert joined is not None
                assert (joined.topic, joined.data["node"]) == ("$mesh.node.joined", "c")
                async with publishing(c, "t.c"):  # a publisher that came after subscribing
                    event = await next_event(sub, 10)
                assert event is not None
                assert event.publisher == c.id

                await a.aclose()  # the node the client talks to leaves
                left = await next_event(system, 10)
                assert left is not None
                assert (left.topic, left.data["node"]) == ("$mesh.node.left", "a")
                assert client.via in {b.address, c.address}
                while sub.pending():
                    await anext(sub)
                async with publishing(b, "t.b"):
                    event = await next_event(sub, 10)
                assert event is not None
                assert event.publisher == b.id
            system.close()
