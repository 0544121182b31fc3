"""The mesh in one process on 127.0.0.1: gossip over sockets, listings, routing, failover.

Every node uses the ``test`` profile (probes every 50 ms); the namespace-LAN and
process tests (SIGKILL, SIGSTOP, partitions, zeroconf on a LAN) are in test_mesh_lan.py.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from mesh import (
    CallError,
    Client,
    Node,
    NoMeshFound,
    NoProvider,
    ProviderLost,
    Unavailable,
    method,
    service,
)


@service("calc", version="1.2.0")
class Calc:
    @method
    async def add(self, a: int, b: int) -> int:
        return a + b

    @method(idempotent=True)
    async def slow_add(self, a: int, b: int, delay: float = 0.5) -> int:
        await asyncio.sleep(delay)
        return a + b

    @method
    async def slow(self, delay: float) -> str:
        await asyncio.sleep(delay)
        return "done"


@service("calc", version="2.0.1")
class CalcTwo:
    @method
    async def add(self, a: int, b: int) -> int:
        return 2000 + a + b


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until ``check()`` holds; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def statuses(node: Node) -> dict[str, str]:
    return {m.name: m.status for m in node.members()}


def listed_by_all(nodes: list[Node], names: set[str]) -> bool:
    return all(
        {m.name for m in n.members() if m.status == "alive" and m.record is not None} == names
        for n in nodes
    )


@asynccontextmanager
async def mesh_of(count: int, **settings: Any) -> AsyncIterator[list[Node]]:
    """``count`` nodes; the first is the seed of the others (discovery off)."""
    mesh = f"t-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            Node(name="n0", mesh=mesh, profile="test", **settings)
        )
        nodes = [first]
        for i in range(1, count):
            node = Node(name=f"n{i}", mesh=mesh, profile="test", seeds=(first.address,), **settings)
            nodes.append(await stack.enter_async_context(node))
        yield nodes


async def test_nodes_joined_through_a_seed_list_every_node_and_service_with_stats() -> None:
    async with mesh_of(4) as nodes:
        nodes[2].add_service(Calc())
        names = {n.name for n in nodes}
        took = await eventually(lambda: listed_by_all(nodes, names), 5.0, "all listed by all")
        print(f"listed by all in {took:.3f} s")
        await eventually(
            lambda: all("calc" in n.services() for n in nodes), 5.0, "calc listed everywhere"
        )
        for node in nodes:
            members = {m.name: m for m in node.members()}
            assert members["n2"].services == ("calc",)
            assert members["n2"].address == nodes[2].address
            listing = node.services()["calc"]
            assert [p.node_name for p in listing.providers] == ["n2"]
            assert listing.versions == ("1.2.0",)
            assert {m.name for m in listing.methods} == {"add", "slow_add", "slow"}
        # every node's stats reach the others (pulled from each member in turn)
        await eventually(
            lambda: all(m.stats is not None for n in nodes for m in n.members()),
            10.0,
            "stats of every member everywhere",
        )
        json_form = nodes[0].members()[0].to_json()
        assert {"name", "id", "address", "status", "services", "stats"} <= set(json_form)


async def test_a_call_reaches_a_provider_found_by_gossip_alone() -> None:
    async with mesh_of(3) as nodes:
        nodes[1].add_service(Calc())
        await nodes[2].wait_for_service("calc", timeout=5.0)
        assert await nodes[2].call("calc.add", 2, 3) == 5
        assert await nodes[2].proxy("calc").add(4, 5) == 9
        # the peer was connected on demand, by its listed address
        assert nodes[1].id in nodes[2].peers


async def test_versions_constrain_and_node_pins_the_provider() -> None:
    async with mesh_of(3) as nodes:
        nodes[1].add_service(Calc())
        nodes[2].add_service(CalcTwo())
        caller = nodes[0]
        await eventually(
            lambda: (
                len(caller.services().get("calc", ()) and caller.services()["calc"].providers) == 2
            ),
            5.0,
            "two providers of calc",
        )
        assert await caller.call("calc@1.add", 1, 1) == 2
        assert await caller.call("calc@1.2.add", 1, 1) == 2
        assert await caller.call("calc@2.add", 1, 1) == 2002
        assert await caller.call("calc.add", 1, 1, node="n2") == 2002
        assert await caller.call("calc.add", 1, 1, node=nodes[1].id) == 2
        with pytest.raises(NoProvider, match=r"version 1\.3"):
            await caller.call("calc@1.3.add", 1, 1)
        with pytest.raises(NoProvider, match="on node 'n0'"):
            await caller.call("calc.add", 1, 1, node="n0")
        with pytest.raises(NoProvider):
            await caller.call("calc@3.add", 1, 1)


async def test_wait_for_service_times_out_with_no_provider() -> None:
    async with mesh_of(2) as nodes:
        started = time.monotonic()
        with pytest.raises(NoProvider, match=r"within 0\.2 s"):
            await nodes[0].wait_for_service("nothing", timeout=0.2)
        assert time.monotonic() - started < 1.0


async def test_watch_sees_joins_updates_leaves_and_purges() -> None:
    async with mesh_of(2) as nodes:
        watcher = nodes[0]
        await eventually(lambda: listed_by_all(nodes, {"n0", "n1"}), 5.0, "two listed")
        seen: list[tuple[str, str]] = []
        updates: list[tuple[str, ...]] = []

        async def watch() -> None:
            async for change in watcher.watch():
                seen.append((change.kind, change.member.name))
                if change.kind == "updated":
                    updates.append(change.member.services)

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.05)
        late = Node(name="late", mesh=watcher.mesh, profile="test", seeds=(watcher.address,))
        async with late:
            await eventually(lambda: ("joined", "late") in seen, 5.0, "join seen")
            late.add_service(Calc())
            await eventually(lambda: ("updated", "late") in seen, 5.0, "new record seen")
            assert "calc" in watcher.services()  # listed when the update is seen
            await asyncio.sleep(0.3)
            assert updates == [("calc",)]  # once, with the new record
        await eventually(lambda: ("left", "late") in seen, 5.0, "leave seen")
        assert statuses(watcher)["late"] == "left"
        assert "calc" not in watcher.services()
        # a departed member is purged after dead_ttl (3 s in the test profile)
        await eventually(lambda: ("forgotten", "late") in seen, 6.0, "purge seen")
        assert "late" not in statuses(watcher)
        task.cancel()


async def test_a_graceful_leave_finishes_calls_and_is_not_a_failure() -> None:
    async with mesh_of(2) as nodes:
        provider = Node(name="p", mesh=nodes[0].mesh, profile="test", seeds=(nodes[0].address,))
        await provider.start()
        provider.add_service(Calc())
        await nodes[1].wait_for_service("calc", timeout=5.0)
        call = asyncio.create_task(nodes[1].call("calc.slow", 0.3))
        await asyncio.sleep(0.1)
        await provider.aclose()
        assert await call == "done"
        await eventually(lambda: statuses(nodes[1]).get("p") == "left", 5.0, "left")
        await eventually(lambda: statuses(nodes[0]).get("p") == "left", 5.0, "left")


async def test_a_replaced_provider_fails_calls_at_once_and_idempotent_ones_move() -> None:
    """A node that stops answering (its gossip socket closed, as in a crash) becomes
    suspect: calls in flight on it fail with ProviderLost at once, not at their
    deadline, and an idempotent call goes on to another provider."""
    async with mesh_of(3) as nodes:
        caller = nodes[0]
        nodes[1].add_service(Calc())
        nodes[2].add_service(Calc())
        await eventually(
            lambda: (
                len(caller.services().get("calc", ()) and caller.services()["calc"].providers) == 2
            ),
            5.0,
            "two providers",
        )
        victim = nodes[1]
        first = asyncio.create_task(caller.call("calc.slow", 5.0, node=victim.name, timeout=10))
        moved = asyncio.create_task(caller.call("calc.slow_add", 1, 2, 1.0, node=None, timeout=10))
        await asyncio.sleep(0.1)
        chosen_victim = victim.statistics().calls_in_flight == 2
        await _silence_gossip(victim)
        started = time.monotonic()
        with pytest.raises(ProviderLost, match=r"suspect|dead"):
            await first
        lost_after = time.monotonic() - started
        print(f"ProviderLost {lost_after:.3f} s after the provider went silent")
        assert lost_after < 3.0
        assert await moved == 3
        if chosen_victim:  # both went to the victim: the idempotent one was retried
            assert nodes[2].statistics().services["calc"].methods["slow_add"].requests >= 1


async def test_a_burst_of_calls_spreads_over_providers_not_yet_connected() -> None:
    async with mesh_of(3) as nodes:
        caller = nodes[0]
        nodes[1].add_service(Calc())
        nodes[2].add_service(Calc())
        await eventually(
            lambda: len(getattr(caller.services().get("calc"), "providers", ())) == 2,
            5.0,
            "two providers",
        )
        assert await asyncio.gather(*(caller.call("calc.add", i, 1) for i in range(10))) == [
            i + 1 for i in range(10)
        ]
        served = [n.statistics().services["calc"].methods["add"].requests for n in nodes[1:]]
        assert sum(served) == 10
        assert min(served) >= 3  # 5 and 5 when nothing connects in between


async def test_routing_follows_services_added_and_removed() -> None:
    async with mesh_of(3) as nodes:
        caller, first, second = nodes
        first.add_service(Calc())
        await caller.wait_for_service("calc", timeout=5.0)
        assert await caller.call("calc.add", 1, 1) == 2
        second.add_service(CalcTwo())
        await caller.wait_for_service("calc@2", timeout=5.0)
        assert await caller.call("calc@2.add", 1, 1) == 2002
        first.remove_service("calc")
        await eventually(
            lambda: [p.node_name for p in caller.services()["calc"].providers] == ["n2"],
            5.0,
            "the removal listed",
        )
        assert await caller.call("calc.add", 1, 1) == 2002  # only the other is left
        with pytest.raises(NoProvider):
            await caller.call("calc@1.add", 1, 1)


async def test_an_idempotent_call_whose_only_provider_is_lost_says_so() -> None:
    """With no other provider to move to, the caller sees ProviderLost, not NoProvider."""
    async with mesh_of(2) as nodes:
        nodes[1].add_service(Calc())
        await nodes[0].wait_for_service("calc", timeout=5.0)
        call = asyncio.create_task(nodes[0].call("calc.slow_add", 1, 2, 5.0, timeout=10))
        await asyncio.sleep(0.1)
        await _silence_gossip(nodes[1])
        with pytest.raises(ProviderLost, match=r"suspect|dead"):
            await call


async def test_a_provider_lost_by_a_handler_reaches_its_caller_as_unavailable() -> None:
    """The handler's node is alive: its caller must not take it for lost."""

    @service("front")
    class Front:
        @method
        async def work(self) -> None:
            raise ProviderLost("back.work: provider 'b' is dead")

    async with mesh_of(2) as nodes:
        nodes[1].add_service(Front())
        await nodes[0].wait_for_service("front", timeout=5.0)
        with pytest.raises(Unavailable) as info:
            await nodes[0].call("front.work")
        assert type(info.value) is Unavailable
        assert "provider 'b' is dead" in str(info.value)
        assert statuses(nodes[0])["n1"] == "alive"


async def test_calls_of_a_caller_declared_dead_are_abandoned() -> None:
    """A caller that crashes (no GOODBYE) is dropped from ``peers`` once the membership
    declares it dead, and the handlers running for it are cancelled."""
    cancelled = asyncio.Event()

    @service("work")
    class Work:
        @method
        async def long(self) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with mesh_of(3) as nodes:
        provider, caller = nodes[1], nodes[2]
        provider.add_service(Work())
        await caller.wait_for_service("work", timeout=5.0)
        call = asyncio.create_task(caller.call("work.long", timeout=60))
        await eventually(lambda: provider.statistics().calls_in_flight == 1, 5.0, "running")
        assert caller.id in provider.peers
        await _silence_gossip(caller)  # a crash, as the mesh sees it
        await eventually(
            lambda: statuses(provider).get("n2") == "dead",
            10.0,  # ~1 s in the test profile; a loaded machine may take several
            "declared dead",
        )
        await asyncio.wait_for(cancelled.wait(), 1.0)
        assert provider.statistics().calls_in_flight == 0
        assert caller.id not in provider.peers
        call.cancel()


async def test_a_node_restarted_on_the_same_address_is_listed_at_once() -> None:
    """A crashed node started again under the same name and ports replaces its old
    entry at once, with its record: nothing sent to it is lost to the old connection."""
    async with mesh_of(3) as nodes:
        old = nodes[2]
        await eventually(lambda: listed_by_all(nodes[:2], {"n0", "n1", "n2"}), 5.0, "formed")
        seen: list[tuple[str, str]] = []

        async def watch() -> None:
            async for change in nodes[0].watch():
                seen.append((change.kind, change.member.id))

        task = asyncio.create_task(watch())
        ports = {"port": old._port, "gossip_port": old._gossip_port}
        address = old.address
        await _silence_gossip(old)  # a crash, as the mesh sees it
        await old.aclose(grace=0)
        new = Node(name="n2", mesh=old.mesh, profile="test", seeds=(nodes[0].address,), **ports)
        async with new:
            assert new.address == address
            took = await eventually(
                lambda: all(
                    [(m.id, m.status, m.record is not None) for m in n.members() if m.name == "n2"]
                    == [(new.id, "alive", True)]
                    for n in nodes[:2]
                ),
                5.0,
                "the new n2 listed alone, with its record",
            )
            print(f"restarted node listed by all {took:.3f} s after its start")
            assert took < 1.0
            assert ("replaced", old.id) in seen
            assert ("joined", new.id) in seen
        task.cancel()


async def _silence_gossip(node: Node) -> None:
    """Make ``node`` look crashed to the mesh: its gossip stops, its RPC keeps going."""
    gossiper = node._gossiper
    assert gossiper is not None
    await gossiper.aclose(leave=False)


async def test_a_node_that_sees_no_seed_keeps_trying() -> None:
    """A seed that is down at start is tried again until it answers."""
    mesh = f"t-{secrets.token_hex(4)}"
    async with Node(name="a", mesh=mesh, profile="test") as a:
        seed = a.address
    # the address is free again; a node is started with it as its seed, then a node binds it
    port = int(seed.rsplit(":", 1)[1])
    async with Node(name="b", mesh=mesh, profile="test", seeds=(seed,)) as b:
        await asyncio.sleep(0.2)
        async with Node(name="a2", mesh=mesh, profile="test", port=port) as a2:
            took = await eventually(
                lambda: listed_by_all([a2, b], {"a2", "b"}), 10.0, "joined once the seed is up"
            )
            print(f"joined {took:.2f} s after the seed came up")


async def test_discovery_on_loopback_alone_builds_the_mesh() -> None:
    mesh = f"t-{secrets.token_hex(4)}"
    settings: dict[str, Any] = dict(
        mesh=mesh, profile="test", discovery=True, interfaces=("127.0.0.1",)
    )
    async with AsyncExitStack() as stack:
        started = time.monotonic()
        nodes = [await stack.enter_async_context(Node(name=f"d{i}", **settings)) for i in range(3)]
        took = await eventually(
            lambda: listed_by_all(nodes, {"d0", "d1", "d2"}), 10.0, "found by zeroconf"
        )
        print(f"3 nodes listed by all {took:.3f} s after the last start "
              f"({time.monotonic() - started:.3f} s after the first)")  # fmt: skip
        # another mesh on the same interface is not joined
        async with Node(name="other", **{**settings, "mesh": mesh + "-x"}) as other:
            await asyncio.sleep(0.5)
            assert {m.name for m in other.members()} == {"other"}
            assert "other" not in statuses(nodes[0])


async def test_a_client_lists_and_calls_through_one_node_and_leaves_no_trace() -> None:
    async with mesh_of(3) as nodes:
        nodes[2].add_service(Calc())
        await nodes[1].wait_for_service("calc", timeout=5.0)  # the node the client asks
        async with Client(mesh=nodes[0].mesh, profile="test", seeds=(nodes[1].address,)) as c:
            assert c.via == nodes[1].address
            members = await c.members(fresh=True)
            assert {m.name for m in members} == {"n0", "n1", "n2"}
            assert [(m.name, m.status, m.stats is not None) for m in members] == [
                (name, "alive", True) for name in ("n0", "n1", "n2")
            ]
            assert [p.node_name for p in (await c.services())["calc"].providers] == ["n2"]
            assert await c.call("calc.add", 20, 22) == 42
            async with await c.stream("calc.add", 1, 2) as items:  # not a stream: refused
                with pytest.raises(CallError, match="not a stream"):
                    await anext(items)
        await asyncio.sleep(0.3)
        for node in nodes:  # the client never joined
            assert {m.name for m in node.members()} == {"n0", "n1", "n2"}


async def test_a_client_finds_a_node_by_zeroconf_or_says_no_mesh() -> None:
    mesh = f"t-{secrets.token_hex(4)}"
    loopback: dict[str, Any] = dict(discovery=True, interfaces=("127.0.0.1",))
    async with (
        Node(name="z", mesh=mesh, profile="test", **loopback) as node,
        Client(mesh=mesh, profile="test", **loopback) as client,
    ):
        assert client.via == node.address
        assert [m.name for m in await client.members()] == ["z"]
    started = time.monotonic()
    with pytest.raises(NoMeshFound, match="no node of the mesh answered"):
        async with Client(mesh=mesh + "-none", profile="test", **loopback):
            pass
    assert time.monotonic() - started < 5.0
    with pytest.raises(NoMeshFound, match="no seeds given and discovery is off"):
        async with Client(mesh=mesh, profile="test"):
            pass
