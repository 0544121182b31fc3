"""Worker status: what a node's pool threads and handler tasks run, in process and through
``meshctl status`` against a node program."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

import mesh
from mesh import CallTimeout, Node, method, service
from tests.programs import node_env, node_program, read_line
from tests.test_mesh import eventually

MESHCTL = str(Path(sys.executable).parent / "meshctl")


@service("work")
class Work:
    @method
    def block(self, seconds: float) -> float:
        """Hold a pool thread for ``seconds`` (it cannot be interrupted)."""
        time.sleep(seconds)
        return seconds

    @method
    async def wait(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


async def test_worker_status_shows_busy_threads_tasks_and_abandoned_handlers() -> None:
    async with Node(name="server", profile="test", discovery=False, workers=4) as server:
        server.add_service(Work())
        async with Node(name="caller", mesh=server.mesh, profile="test", discovery=False) as caller:
            await caller.connect(server.address)
            idle = server.worker_status()
            assert (idle.pool_size, idle.threads, idle.tasks, idle.pool_free) == (4, (), (), 4)
            started = time.time()
            holding = asyncio.ensure_future(caller.call("work.block", 1.5, timeout=5))
            waiting = asyncio.ensure_future(caller.call("work.wait", 1.5, timeout=5))
            with pytest.raises(CallTimeout):  # its thread keeps running: abandoned
                await caller.call("work.block", 1.5, timeout=0.2)

            def seen() -> bool:  # the server gives up on the third at its deadline too
                status = server.worker_status()
                return (
                    len(status.threads) == 2
                    and len(status.tasks) == 1
                    and any(w.abandoned for w in status.threads)
                )

            await eventually(seen, 5.0, "two busy threads and one task")
            status = server.worker_status()
            assert status.pool_free == 2
            assert sorted(w.abandoned for w in status.threads) == [False, True]
            assert {w.call for w in status.threads} == {"work.block"}
            assert all(w.thread.startswith("mesh-worker") for w in status.threads)
            assert [w.call for w in status.tasks] == ["work.wait"]
            assert all(w.caller == caller.id for w in (*status.threads, *status.tasks))
            assert all(started - 0.1 <= w.since <= time.time() for w in status.threads)
            assert mesh.WorkerStatus.from_json(status.to_json()) == status
            assert await holding == 1.5
            assert await waiting == 1.5
            await eventually(lambda: not server.worker_status().threads, 5.0, "all free")
            assert server.worker_status().tasks == ()


async def _meshctl(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    proc = await asyncio.create_subprocess_exec(
        MESHCTL,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_meshctl_status_shows_a_node_programs_workers() -> None:
    env = node_env(MESH_NAME="status-t", MESH_NODE_NAME="calc", MESH_WORKERS="3")
    with node_program("nodes.calc", env) as calc:
        address = (await asyncio.to_thread(read_line, calc))["address"]
        where = ["--seed", address, "--mesh", "status-t", "--profile", "test", "--no-discovery"]
        async with Node(name="caller", mesh="status-t", profile="test", discovery=False) as me:
            await me.connect(address)
            busy = asyncio.ensure_future(me.call("calc.blocking", 2.0, timeout=10))
            slow = asyncio.ensure_future(me.call("calc.slow", 2.0, timeout=10))
            await asyncio.sleep(0.3)
            code, out, err = await _meshctl("status", "calc", "--json", *where)
            assert code == 0, err
            result = json.loads(out)
            assert set(result) == {
                "node", "id", "pool_size", "pool_busy", "pool_free", "threads", "tasks",
            }  # fmt: skip
            assert (result["node"], result["pool_size"], result["pool_busy"]) == ("calc", 3, 1)
            [thread] = result["threads"]
            assert set(thread) == {"call", "caller", "trace_id", "since", "abandoned", "thread"}
            assert (thread["call"], thread["caller"], thread["abandoned"]) == (
                "calc.blocking",
                me.id,
                False,
            )
            assert [t["call"] for t in result["tasks"]] == ["calc.slow"]
            code, out, err = await _meshctl("status", "calc", *where)
            assert code == 0, err
            assert "pool of 3, 1 busy, 2 free; 1 handler tasks" in out
            assert "calc.blocking" in out
            assert "calc.slow" in out
            code, out, err = await _meshctl("status", "nobody", *where)
            assert code == 3
            assert "no live member called 'nobody'" in err
            await busy
            await slow
