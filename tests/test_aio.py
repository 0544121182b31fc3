"""Waiting for an asyncio.Event with a timeout keeps a cancellation (mesh._util.aio.wait_set):
the loops of a node that wait this way (the supervisor, the job runner's) end when
they are cancelled, so closing a node never hangs. On Python 3.11,
``asyncio.wait_for(event.wait(), t)`` loses a cancellation that arrives in the loop
turn in which the event is set (CPython gh-86296); nodes did that before."""

from __future__ import annotations

import asyncio
import dataclasses

from mesh import Limits, Node, SupervisionSettings, method, service
from mesh._io.transport import Transport
from mesh._util.aio import wait_set
from mesh.testing import fresh_config


async def test_wait_set_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5.0) is True
    assert await wait_set(event, None) is True  # already set: at once


async def test_a_waiting_loop_ends_when_cancelled_as_its_event_is_set() -> None:
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait_set(event, 1.0)
            event.clear()
            rounds += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()  # the wait ends in this turn...
    await asyncio.sleep(0)
    task.cancel()  # ... and the cancellation arrives in it
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done == {task}
    assert task.cancelled()


@service("crashing")
class Crashing:
    """Crashes at start: the supervisor waits for its restart (a wait with a timeout)."""

    def __init__(self) -> None:
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        raise RuntimeError("no")

    @method
    async def ping(self) -> str:
        return "pong"


async def test_a_node_closes_when_its_supervisor_is_woken_as_it_closes() -> None:
    settings = SupervisionSettings(backoff_initial=30.0, backoff_max=30.0)
    config = fresh_config(name="crashing")
    config = config.replace(timings=dataclasses.replace(config.timings, supervision=settings))
    async with Node(config) as node:
        crashing = Crashing()
        node.add_service(crashing)
        while crashing.starts == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # it waits 30 s for the restart
        lifecycle = node._lifecycle
        lifecycle.changed()  # the supervisor's wait ends in this turn...
        await asyncio.sleep(0)
        # ... and closing cancels it: it must end, not carry on supervising
        await asyncio.wait_for(lifecycle.aclose(), 5.0)


@service("db")
class Db:
    @method
    async def get(self) -> int:
        return 1


@service("api", depends_on=["db"])
class Api:
    """Its on_dependency_lost hook runs in the supervisor and waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.lost: list[str] = []

    async def on_dependency_lost(self, name: str) -> None:
        self.lost.append(name)
        await self.gate.wait()

    @method
    async def ping(self) -> str:
        return "pong"


async def test_a_node_closes_when_its_supervisor_is_cancelled_as_a_hook_returns() -> None:
    async with Node(fresh_config(name="hooks")) as node:
        api = Api()
        node.add_service(Db())
        node.add_service(api)
        while node._lifecycle.statuses()["api"].state != "up":  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        node.remove_service("db")
        node._lifecycle.changed()
        while not api.lost:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        lifecycle = node._lifecycle
        api.gate.set()  # the hook returns in the next turn...
        await asyncio.sleep(0)
        # ... and closing cancels the supervisor then: it must end, not carry on
        await asyncio.wait_for(lifecycle.aclose(), 5.0)


async def test_a_flush_is_cancelled_when_cancelled_as_the_outbox_drains() -> None:
    """Pump.flush (a node's close flushes its sockets) keeps a cancellation."""
    transport = Transport(Limits())
    try:
        # Nothing listens there: the DEALER (IMMEDIATE) cannot send, so the message waits.
        pump = transport.dealer("tcp://127.0.0.1:9", b"me", lambda frames: None, send_timeout=30.0)
        pump.send([b"hello"])
        flushing = asyncio.create_task(pump.flush(10.0))
        await asyncio.sleep(0.01)
        assert not flushing.done()
        await transport.close_pump(pump)  # drops the message: the flush ends...
        flushing.cancel()  # ... and the cancellation arrives in the same turn
        done, _ = await asyncio.wait([flushing], timeout=2.0)
        assert done == {flushing}
        assert flushing.cancelled()
    finally:
        await transport.aclose()
