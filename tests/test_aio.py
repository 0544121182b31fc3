"""Waiting for an asyncio.Event with a timeout keeps a cancellation (mesh._aio.wait_set):
the loops of a node that wait this way (the supervisor, the job runner's) end when
they are cancelled, so closing a node never hangs. On Python 3.11,
``asyncio.wait_for(event.wait(), t)`` loses a cancellation that arrives in the loop
turn in which the event is set (CPython gh-86296); nodes did that before."""

from __future__ import annotations

import asyncio
import dataclasses

from mesh import Node, SupervisionSettings, method, service
from mesh._aio import wait_set
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
