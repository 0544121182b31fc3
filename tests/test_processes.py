"""Node programs as real processes: on 127.0.0.1 and on hosts of a namespace LAN."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import mesh
from tests.lan import Lan
from tests.programs import node_env, node_program, read_line, stop


def local_node(name: str) -> mesh.Node:
    return mesh.Node(mesh.Config(name=name, mesh="test", profile="test"))


@pytest.mark.timeout(30)
async def test_handshake_across_processes_and_clean_exit_on_sigterm() -> None:
    with node_program("nodes.plain", node_env(MESH_NODE_NAME="far")) as proc:
        ready = read_line(proc)
        assert ready["event"] == "ready"
        async with local_node("near") as near:
            peer = await near.connect(ready["address"])
            assert (peer.id, peer.name, peer.mesh) == (ready["id"], "far", "test")
            # SIGTERM: finish work in flight, say goodbye, exit 0. (Keep this loop
            # running meanwhile: a loop blocked across the peer's exit may miss it.)
            assert await asyncio.to_thread(stop, proc) == 0
            deadline = time.monotonic() + 2
            while peer.id in near.peers and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert peer.id not in near.peers


@pytest.mark.timeout(30)
async def test_killed_node_is_unreachable_and_restart_is_a_new_node() -> None:
    async with local_node("near") as near:
        with node_program("nodes.plain", node_env(MESH_PORT="0")) as proc:
            first = read_line(proc)
            await near.connect(first["address"])
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        with pytest.raises(mesh.ConnectTimeout, match="refused or unreachable"):
            await near.connect(first["address"], timeout=0.5)
        port = first["address"].rsplit(":", 1)[1]
        with node_program("nodes.plain", node_env(MESH_PORT=port)) as proc:
            second = read_line(proc)
            peer = await near.connect(second["address"])
            assert second["address"] == first["address"]
            assert peer.id == second["id"] != first["id"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESH_PORT", "seventy"),
        ("MESH_NAME", "bad name!"),
        ("MESH_PROFILE", "fast"),
        ("MESH_LOG_LEVEL", "loud"),
    ],
)
def test_bad_setting_exits_2_naming_the_variable(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nodes.plain"],
        env=node_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {variable}: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.lan
@pytest.mark.timeout(60)
def test_handshake_across_namespace_hosts(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(3)
    h1, h2, h3 = lan.hosts
    seed = f"tcp://{h1.ip}:7000"
    with node_program(
        "nodes.plain", node_env(MESH_HOST=h1.ip, MESH_PORT="7000", MESH_NODE_NAME="one"), h1.popen
    ) as one:
        ready = read_line(one)
        assert ready["address"] == seed
        assert one.pid == int(h1.run(["cat", f"/proc/{one.pid}/stat"]).stdout.split()[0])
        with node_program(
            "nodes.plain", node_env(MESH_HOST=h2.ip, MESH_SEEDS=seed), h2.popen
        ) as two:
            read_line(two)
            connected = read_line(two)
            assert connected["event"] == "connected"
            assert (connected["id"], connected["name"]) == (ready["id"], "one")
            assert stop(two) == 0

        # A host cut off from the LAN: the handshake fails with a clear reason.
        h1.cut()
        with node_program(
            "nodes.plain", node_env(MESH_HOST=h3.ip, MESH_SEEDS=seed), h3.popen
        ) as three:
            read_line(three)
            failed = read_line(three, timeout=15)
            assert failed["event"] == "connect_failed"
            assert failed["code"] == "connect_timeout"
            assert "no answer from " + seed in failed["error"]
        h1.restore()
        with node_program(
            "nodes.plain", node_env(MESH_HOST=h3.ip, MESH_SEEDS=seed), h3.popen
        ) as three:
            read_line(three)
            assert read_line(three)["event"] == "connected"
            assert stop(three) == 0
        assert stop(one) == 0


def test_node_programs_leave_no_zombies() -> None:
    # node_program reaps what it starts, even when the body raises.
    pids = []

    def run_and_fail() -> None:
        with node_program("nodes.plain", node_env()) as proc:
            read_line(proc)
            pids.append(proc.pid)
            raise RuntimeError("body failed")

    with pytest.raises(RuntimeError):
        run_and_fail()
    pid = pids[0]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
