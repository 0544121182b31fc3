"""Callers that vanish without a GOODBYE (issue 20, items 8 and 9): their sessions end,
their calls are cancelled and free their slots, and one caller holds at most its share
of a service. Real nodes and raw DEALER sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq
import zmq.asyncio

import mesh
from mesh._rpc.server import _Limiter
from mesh._wire.codec import Call, Codec, Error, Hello, Reply, Welcome
from tests.programs import ROOT, before_exec, node_env
from tests.waiting import wait_until

codec = Codec()
#: The test profile with sessions that idle out in 0.5 s, callers checked every 0.1 s.
TIMINGS = dataclasses.replace(mesh.PROFILES["test"], session_idle=0.5, caller_check=0.1)


def config(name: str, **kw: Any) -> mesh.Config:
    return mesh.Config(name=name, mesh="test", profile="test", timings=TIMINGS, **kw)


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


async def hello(
    context: zmq.asyncio.Context, address: str, node_id: str, services: dict[str, str] | None = None
) -> zmq.asyncio.Socket:
    """A raw DEALER that said HELLO as ``node_id`` (no ZMTP heartbeats, never GOODBYE)."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    await sock.send(codec.encode(Hello(1, node_id, "raw", "test", 1, 1, services or {})))
    answer = codec.decode(await asyncio.wait_for(sock.recv(), 5))
    assert isinstance(answer, Welcome), answer
    return sock


async def test_sessions_of_callers_gone_without_goodbye_end_after_the_idle_time(
    zctx: zmq.asyncio.Context,
) -> None:
    """40 callers say HELLO and vanish (one with a 1 MB HELLO): the sessions, and the
    peers they listed, go back to the baseline after session_idle (0.5 s here); the big
    HELLO's services were never kept."""
    big = {f"service-{i:06d}": "1.0.0" * 40 for i in range(5_000)}  # ~1.1 MB encoded
    async with mesh.Node(config("target")) as node:
        baseline = node.statistics()
        sockets = [await hello(zctx, node.address, f"{i:032x}") for i in range(40)]
        sockets.append(await hello(zctx, node.address, "b" * 32, big))
        assert node.statistics().peers == baseline.peers + 41
        assert node.peers["b" * 32].services == {}  # over limits.max_session_hello
        held = node.statistics()
        print(f"sessions: {baseline.sessions} -> {held.sessions}, peers -> {held.peers}")
        assert held.sessions == baseline.sessions + 41
        for sock in sockets:
            sock.close(linger=0)
        started = time.monotonic()
        # idle 0.5 s, checked every 0.1 s: gone within ~0.7 s; 3x margin
        await wait_until(lambda: node.statistics().peers == baseline.peers, 2.1)
        after = node.statistics()
        print(f"back to {after.sessions} sessions after {time.monotonic() - started:.2f} s")
        assert after.sessions == baseline.sessions
        assert after.sessions_expired == 41


async def test_an_idle_caller_calls_on_after_its_session_expired() -> None:
    """A live caller idle past session_idle loses its session (ZMTP heartbeats never
    reach the node) and its next calls, six at once, still succeed: it shakes hands
    again. The same for a blocking mesh.sync client."""
    async with mesh.Node(config("a")) as a, mesh.Node(config("b")) as b:

        async def say(value: Any) -> Any:
            return value

        a.add_service(say, name="echo.say")
        await b.connect(a.address)
        assert await b.call("echo.say", 0) == 0
        await wait_until(lambda: a.statistics().sessions_expired >= 1, 3.0)
        assert a.statistics().sessions == 0
        results = await asyncio.gather(*(b.call("echo.say", i) for i in range(1, 7)))
        assert results == [1, 2, 3, 4, 5, 6]
        assert a.statistics().sessions == 1

        def blocking() -> list[Any]:
            with mesh.sync.connect(a.address, config=config("s")) as client:
                first = client.call("echo.say", "x")
                time.sleep(1.0)  # twice session_idle: the session has expired
                return [first, client.call("echo.say", "y")]

        expired = a.statistics().sessions_expired
        assert await asyncio.to_thread(blocking) == ["x", "y"]
        assert a.statistics().sessions_expired > expired


async def test_a_vanished_client_no_longer_wedges_a_service(zctx: zmq.asyncio.Context) -> None:
    """1,100 calls to an hour-long method, no deadline, from two connections of one
    client: while it is connected, another caller's calls still run (it holds half
    the slots and half the queue; the rest are refused); once it vanishes without a
    GOODBYE its calls are cancelled (CancelledError in the handlers) within two caller
    checks, and the service is free."""
    cancelled = 0

    @mesh.service("slow")
    class Slow:
        @mesh.method
        async def hold(self, seconds: float) -> float:
            nonlocal cancelled
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                cancelled += 1
                raise
            return seconds

    async with mesh.Node(config("target")) as node, mesh.Node(config("other")) as other:
        node.add_service(Slow())
        await other.connect(node.address)
        greedy = [await hello(zctx, node.address, "e" * 32) for _ in range(2)]
        for i in range(1_100):
            call = Call(i + 1, "slow.hold", [3600.0], {}, None)
            await greedy[i % 2].send(codec.encode(call))
        # 50 run, 500 wait, 550 are refused: this caller's share (limits.caller_share)
        refused = probes = 0
        poller = zmq.asyncio.Poller()
        for sock in greedy:
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + 10
        while refused < 550 and time.monotonic() < deadline:
            for sock, _ in await poller.poll(1000):
                answer = codec.decode(await sock.recv())
                if isinstance(answer, Welcome) and answer.ref == 0:
                    probes += 1  # the node checks that this silent caller is still there
                    continue
                assert isinstance(answer, Error), answer
                assert answer.code == "overloaded", answer
                refused += 1
        await asyncio.sleep(0.3)  # nothing more comes but probes
        while await greedy[0].poll(0) or await greedy[1].poll(0):
            for sock in greedy:
                if await sock.poll(0):
                    answer = codec.decode(await sock.recv())
                    assert isinstance(answer, Welcome), answer
                    assert answer.ref == 0
        stats = node.statistics()
        print(f"greedy: {stats.calls_in_flight} in flight, {refused} refused, {probes} probes")
        assert refused == 550
        assert stats.calls_in_flight == 550
        started = time.monotonic()
        got = await asyncio.gather(*(other.call("slow.hold", 0.01, timeout=5) for _ in range(13)))
        print(f"13 calls beside the greedy client in {time.monotonic() - started:.3f} s")
        assert got == [0.01] * 13
        for sock in greedy:
            sock.close(linger=0)
        started = time.monotonic()
        # two checks of 0.1 s after the connections went: ~0.3 s; 3x margin (and a
        # loaded machine)
        await wait_until(lambda: node.statistics().calls_in_flight == 0, 3.0)
        took = time.monotonic() - started
        print(f"greedy calls cancelled {took:.2f} s after it vanished; {cancelled} handlers")
        assert cancelled == 50  # the running ones; the 500 waiting never started
        stats = node.statistics()
        assert stats.callers_lost == 2
        assert stats.sessions == 1  # other's stays
        got = await asyncio.gather(*(other.call("slow.hold", 0.01, timeout=5) for _ in range(13)))
        assert got == [0.01] * 13


async def test_a_worker_thread_handler_sees_its_vanished_caller_cancel(
    zctx: zmq.asyncio.Context,
) -> None:
    """A sync handler on the pool polls current_call().cancelled: it turns True once
    its caller's connection is gone at two caller checks; the node answers others."""
    started = threading.Event()
    stopped = threading.Event()

    def work() -> str:
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if mesh.current_call().cancelled:
                stopped.set()
                return "stopped"
            time.sleep(0.01)
        return "done"

    async def say(value: Any) -> Any:
        return value

    async with mesh.Node(config("target")) as node:
        node.add_service(work, name="work.run")
        node.add_service(say, name="echo.say")
        sock = await hello(zctx, node.address, "c" * 32)
        await sock.send(codec.encode(Call(1, "work.run", [], {}, 3_600_000)))  # an hour
        assert await asyncio.to_thread(started.wait, 5)
        sock.close(linger=0)
        began = time.monotonic()
        assert await asyncio.to_thread(stopped.wait, 3.0)  # ~0.3 s; 3x margin and more
        print(f"the worker saw cancelled {time.monotonic() - began:.2f} s after")
        await wait_until(lambda: node.statistics().calls_in_flight == 0, 3.0)
        assert node.statistics().callers_lost == 1
        other = await hello(zctx, node.address, "d" * 32)
        await other.send(codec.encode(Call(1, "echo.say", ["ok"], {}, 5000)))
        answer = codec.decode(await asyncio.wait_for(other.recv(), 5))
        assert isinstance(answer, Reply)
        assert answer.result == "ok"


async def test_a_live_caller_with_a_long_call_keeps_its_session(
    zctx: zmq.asyncio.Context,
) -> None:
    """A caller whose connection stays up keeps its session and its call while the
    call runs past several idle times and checks (the probes reach it and it ignores
    them), and gets its answer."""
    async with mesh.Node(config("target")) as node, mesh.Node(config("b")) as b:

        async def hold(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        node.add_service(hold, name="slow.hold")
        await b.connect(node.address)
        assert await b.call("slow.hold", 1.5, timeout=5) == 1.5  # 3 idle times, 15 checks
        stats = node.statistics()
        assert (stats.callers_lost, stats.sessions_expired, stats.sessions) == (0, 0, 1)
        assert b.statistics().protocol_errors == 0


async def test_the_limiter_gives_each_caller_its_share() -> None:
    """Of 4 slots, a caller runs 2 (50 %); its third call waits while another caller's
    runs; of a queue of 4, it waits in 2 and is refused beyond them."""
    limiter = _Limiter(4, 4, 50)
    await limiter.acquire("a")
    await limiter.acquire("a")
    assert limiter.running_of("a") == 2
    waiting = [asyncio.create_task(limiter.acquire("a")) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    assert limiter.refuses("a")
    assert not limiter.refuses("b")
    await limiter.acquire("b")  # runs at once beside a's waiting calls
    limiter.release("a")
    await asyncio.sleep(0)
    assert [t.done() for t in waiting] == [True, False]
    waiting[1].cancel()
    await asyncio.gather(waiting[1], return_exceptions=True)
    assert not limiter.refuses("a")
    limiter.release("a")
    limiter.release("a")
    limiter.release("b")
    assert limiter.free
    assert limiter.running_of("a") == 0
    limiter_all = _Limiter(3, 0, 50)  # this node's own calls ("") have no share
    for _ in range(3):
        await limiter_all.acquire("")
    assert limiter_all.refuses("")


CLIENT = """
import asyncio, sys
import mesh

async def main() -> None:
    config = mesh.Config.from_env(name="greedy")
    async with mesh.Node(config) as node:
        await node.connect(sys.argv[1])
        calls = [
            asyncio.ensure_future(node.call("slow.hold", 3600.0, timeout=3600))
            for _ in range(60)
        ]
        print("sent", flush=True)
        await asyncio.gather(*calls, return_exceptions=True)

asyncio.run(main())
"""


async def test_a_paused_client_process_loses_its_calls() -> None:
    """A real client process (a mesh.Node) with 60 hour-long calls in flight is paused
    (SIGSTOP: no reset, no GOODBYE): its heartbeats stop, libzmq drops its connection
    after the node's heartbeat timeout (3 s), and two caller checks later its 50 running calls are
    cancelled and the service serves another caller."""
    cancelled = 0

    async def hold(seconds: float) -> float:
        nonlocal cancelled
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return seconds

    async with mesh.Node(config("target")) as node, mesh.Node(config("other")) as other:
        node.add_service(hold, name="slow.hold")
        env = node_env(MESH_HOST="127.0.0.1")
        proc = subprocess.Popen(  # noqa: ASYNC220  (returns at once; ended by PID below)
            [sys.executable, "-c", CLIENT, node.address],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            preexec_fn=before_exec(),
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
            assert line == b"sent\n"
            await wait_until(lambda: node.statistics().calls_in_flight == 60, 10.0)
            await other.connect(node.address)
            assert await other.call("slow.hold", 0.01, timeout=5) == 0.01  # its share
            proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            # the node's heartbeat timeout (3 s, pings every 1 s) and two checks
            # (0.2 s): ~4.2 s; twice that and more on a loaded machine
            await wait_until(lambda: node.statistics().calls_in_flight == 0, 12.0)
            print(f"a paused client's calls cancelled {time.monotonic() - started:.2f} s after")
            assert cancelled == 50
            assert node.statistics().callers_lost == 1
            assert await other.call("slow.hold", 0.01, timeout=5) == 0.01
        finally:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
            if proc.stdout is not None:
                proc.stdout.close()
