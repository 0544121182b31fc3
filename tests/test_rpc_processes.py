"""Calls to node programs in other processes, and how they leave."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time

import pytest

import mesh
from tests.programs import node_env, node_program, read_line, stop


def caller() -> mesh.Node:
    return mesh.Node(mesh.Config(name="caller", mesh="test", profile="test"))


@pytest.mark.timeout(60)
async def test_calls_streams_and_errors_across_processes() -> None:
    with (
        # 2,000 calls at once from one peer: above max_calls_per_peer (1,000), which a
        # loaded machine may reach (Overloaded), so this node admits them all
        node_program(
            "nodes.calc", node_env(MESH_NODE_NAME="calc", MESH_MAX_CALLS_PER_PEER="4000")
        ) as calc,
        node_program("nodes.echo", node_env(MESH_NODE_NAME="echo")) as echo,
    ):
        addresses = [read_line(calc)["address"], read_line(echo)["address"]]
        async with caller() as me:
            for address in addresses:
                await me.connect(address)
            assert await me.call("calc.add", 2, 3) == 5
            assert await me.call("echo.say", {"k": [1, b"\x00"]}) == {"k": [1, b"\x00"]}
            assert await me.call("echo.shout", "hi") == "HI"
            with pytest.raises(mesh.RemoteError, match="failed on purpose"):
                await me.call("calc.fail")
            with pytest.raises(mesh.CallTimeout):
                await me.call("calc.slow", 10, timeout=0.2)
            assert await me.call("calc.blocking", 0.05) == 0.05
            async with me.stream("calc.count", 300) as items:
                assert [x async for x in items] == list(range(300))
            results = await asyncio.gather(*(me.call("calc.add", i, i) for i in range(2000)))
            assert results == [2 * i for i in range(2000)]


@pytest.mark.timeout(60)
async def test_sigterm_lets_calls_in_flight_finish() -> None:
    with node_program("nodes.calc", node_env(MESH_NODE_NAME="calc")) as calc:
        address = read_line(calc)["address"]
        async with caller() as me:
            await me.connect(address)
            slow = asyncio.create_task(me.call("calc.slow", 0.5))
            await asyncio.sleep(0.1)
            exit_code = asyncio.create_task(asyncio.to_thread(stop, calc))
            assert await slow == 0.5  # finished within the grace period
            assert await exit_code == 0


@pytest.mark.timeout(60)
async def test_a_client_call_to_a_provider_killed_fails_at_once() -> None:
    """``mesh.Client`` follows no membership: the lost connection itself ends the call,
    with ProviderLost, long before its deadline."""
    name = f"t-{secrets.token_hex(4)}"
    with node_program("nodes.plain", node_env(MESH_NAME=name, MESH_NODE_NAME="seed")) as seed:
        seed_address = read_line(seed)["address"]
        env = node_env(MESH_NAME=name, MESH_NODE_NAME="calc", MESH_SEEDS=seed_address)
        with node_program("nodes.calc", env) as calc:
            read_line(calc)
            async with mesh.Client(mesh=name, profile="test", seeds=(seed_address,)) as client:
                listed = time.monotonic() + 10
                while "calc" not in await client.services():
                    assert time.monotonic() < listed, "calc never listed"
                    await asyncio.sleep(0.05)
                call = asyncio.create_task(client.call("calc.slow", 30, timeout=30))
                await asyncio.sleep(0.3)
                os.kill(calc.pid, signal.SIGKILL)
                killed = time.monotonic()
                with pytest.raises(mesh.ProviderLost, match="lost"):
                    await call
                assert time.monotonic() - killed < 2.0
