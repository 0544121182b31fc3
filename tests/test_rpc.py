"""Services and calls on real sockets (127.0.0.1, one process): results, errors, deadlines,
cancellation, streams with flow control, limits, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import mesh
import mesh.sync
from mesh import Node, current_call, method, service, stream
from mesh._rpc.context import CallContext
from nodes.calc import Calc
from tests.security import MODES, KeyPool
from tests.waiting import wait_until

# Every test here runs three times: without security, with a shared secret, with
# per-node keys (node addresses then carry the key: tcp://host:port#KEY).
_keys: dict[str, Any] = {}


@pytest.fixture(autouse=True, params=MODES)
def security(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    _keys["mode"], _keys["keys"] = request.param, KeyPool(tmp_path)
    yield request.param
    _keys.clear()


def node(name: str, **kw: Any) -> Node:
    settings = _keys["keys"].settings(_keys["mode"]) if _keys else {}
    return Node(mesh.Config(name=name, mesh="test", profile="test"), **settings, **kw)


async def pair(provider: Node, caller: Node, *services: object) -> None:
    for s in services:
        provider.add_service(s)
    await caller.connect(provider.address)


@pytest.fixture
async def calc() -> AsyncIterator[tuple[Node, Node]]:
    """A provider of calc and a caller connected to it."""
    async with node("provider") as a, node("caller") as b:
        await pair(a, b, Calc())
        yield a, b


async def test_remote_and_local_calls_return_results(calc: tuple[Node, Node]) -> None:
    provider, caller = calc
    assert await caller.call("calc.add", 1, 2) == 3
    assert await caller.call("calc.add", a=1.5, b=2) == 3.5
    assert await caller.call("calc.mul", 6, 7) == 42  # sync handler on the pool
    assert await provider.call("calc.add", 2, 2) == 4  # local: no sockets
    assert await caller.proxy("calc").add(5, 6) == 11


async def test_functions_are_services_too() -> None:
    async def say(message: str) -> str:
        return message

    async with node("a") as a, node("b") as b:
        a.add_service(say, name="echo.say")
        a.add_service(str.upper, name="echo.upper")
        await b.connect(a.address)
        assert await b.call("echo.say", {"nested": [1, 2]}) == {"nested": [1, 2]}
        assert await b.call("echo.upper", "hi") == "HI"


async def test_unknown_service_is_no_provider(calc: tuple[Node, Node]) -> None:
    provider, caller = calc
    with pytest.raises(mesh.NoProvider, match="'weather'") as info:
        await caller.call("weather.today")
    assert info.value.service == "weather"
    with pytest.raises(mesh.NoProvider):
        await provider.call("weather.today")


async def test_unknown_method_lists_the_methods(calc: tuple[Node, Node]) -> None:
    for who in calc:
        with pytest.raises(mesh.UnknownMethod, match="it has: add, blocking, count, div"):
            await who.call("calc.pow", 2, 8)


async def test_remote_exception_carries_type_message_and_traceback(
    calc: tuple[Node, Node],
) -> None:
    provider, caller = calc
    with pytest.raises(mesh.RemoteError) as info:
        await caller.call("calc.div", 1, 0)
    error = info.value
    assert error.remote_type == "ZeroDivisionError"
    assert "division by zero" in str(error)
    assert "in div" in error.remote_traceback
    assert (error.service, error.method, error.peer) == ("calc", "div", "provider")
    # the same error from a local call
    with pytest.raises(mesh.RemoteError) as local:
        await provider.call("calc.fail", "oops")
    assert (local.value.remote_type, str(local.value)) == ("ValueError", "ValueError: oops")
    # the node keeps serving
    assert await caller.call("calc.add", 1, 1) == 2


async def test_each_call_times_out_at_its_own_deadline_in_any_order() -> None:
    @service("sleepy")
    class Sleepy:
        @method
        async def nap(self, seconds: float) -> None:
            await asyncio.sleep(seconds)

    async def timed(timeout: float) -> float:
        started = time.monotonic()
        with pytest.raises(mesh.CallTimeout):
            await b.call("sleepy.nap", 10, timeout=timeout)
        return time.monotonic() - started

    async with node("a") as a, node("b") as b:
        await pair(a, b, Sleepy())
        # Answered, but its deadline (far off) may still be what the timer waits for.
        assert await b.call("sleepy.nap", 0, timeout=30) is None
        # Deadlines in order, then one earlier than the last, then later again.
        taken = await asyncio.gather(*(timed(t) for t in (0.2, 0.4, 0.4, 0.1, 0.6, 0.3)))
        for timeout, seconds in zip((0.2, 0.4, 0.4, 0.1, 0.6, 0.3), taken, strict=True):
            assert timeout - 0.01 < seconds < timeout + 0.3
        assert b.statistics().calls_outstanding == 0
        # The provider's deadlines (one timer for those in order) ended every handler.
        nap = lambda: a.statistics().services["sleepy"].methods["nap"]  # noqa: E731
        # The handler's task leaves the node's table one loop turn after its stats end.
        await wait_until(lambda: nap().timeouts == 6 and a.statistics().calls_in_flight == 0)
        assert nap().in_flight == 0
        assert await b.call("sleepy.nap", 0) is None  # answers still settle their calls


async def test_deadline_cancels_a_coroutine_handler() -> None:
    events: list[str] = []

    @service("sleepy")
    class Sleepy:
        @method
        async def nap(self, seconds: float) -> None:
            events.append(f"remaining {current_call().remaining:.1f}")
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

    async with node("a") as a, node("b") as b:
        await pair(a, b, Sleepy())
        started = time.monotonic()
        with pytest.raises(mesh.CallTimeout) as info:
            await b.call("sleepy.nap", 10, timeout=0.3)
        assert isinstance(info.value, TimeoutError)
        assert 0.25 < time.monotonic() - started < 1.0
        await wait_until(lambda: "cancelled" in events)
        assert events == ["remaining 0.3", "cancelled"]
        stats = a.statistics().services["sleepy"].methods["nap"]
        assert (stats.requests, stats.timeouts, stats.in_flight) == (1, 1, 0)


async def test_sync_handler_is_abandoned_and_told_to_stop() -> None:
    seen: list[bool] = []
    release = threading.Event()

    @service("worker")
    class Worker:
        @method
        def grind(self) -> str:
            release.wait(5)
            seen.append(current_call().cancelled)
            return "done"

    async with node("a") as a, node("b") as b:
        await pair(a, b, Worker())
        with pytest.raises(mesh.CallTimeout):
            await b.call("worker.grind", timeout=0.2)
        await wait_until(lambda: a.statistics().abandoned_workers == 1)
        release.set()
        await wait_until(lambda: a.statistics().abandoned_workers == 0)
        assert seen == [True]


async def test_cancelling_the_caller_cancels_the_handler() -> None:
    events: list[str] = []

    @service("sleepy")
    class Sleepy:
        @method
        async def nap(self) -> None:
            events.append("started")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

    async with node("a") as a, node("b") as b:
        await pair(a, b, Sleepy())
        task = asyncio.create_task(b.call("sleepy.nap"))
        await wait_until(lambda: events == ["started"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: events == ["started", "cancelled"])
        assert b.statistics().calls_outstanding == 0


async def test_calls_made_in_a_handler_inherit_deadline_and_trace() -> None:
    seen: dict[str, Any] = {}
    nodes: dict[str, Node] = {}

    @service("outer")
    class Outer:
        @method
        async def run(self) -> Any:
            seen["outer"] = current_call()
            return await nodes["a"].call("inner.run", timeout=60)

    @service("inner")
    class Inner:
        @method
        async def run(self) -> str:
            seen["inner"] = current_call()
            return "ok"

    # b calls outer on a; outer's handler calls inner on c.
    async with node("a") as a, node("b") as b, node("c") as c:
        nodes["a"] = a
        await pair(c, a, Inner())
        await pair(a, b, Outer())
        assert await b.call("outer.run", timeout=2.0) == "ok"
        outer, inner = seen["outer"], seen["inner"]
        assert (outer.caller, inner.caller) == (b.id, a.id)
        assert inner.trace_id == outer.trace_id
        assert len(inner.trace_id) == 16
        assert inner.deadline is not None
        assert inner.remaining <= 2.0  # the outer deadline, not the 60 s asked for


async def test_a_passed_inherited_deadline_fails_without_sending() -> None:
    seen: list[str] = []
    nodes: dict[str, Node] = {}

    async def inner() -> None:
        seen.append("inner ran")

    async def outer() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # ignores its deadline, goes on
            await asyncio.sleep(0.3)
        try:
            await nodes["a"].call("inner.run")
        except mesh.CallTimeout:
            seen.append("timed out at once")

    async with node("a") as a, node("b") as b, node("c") as c:
        nodes["a"] = a
        c.add_service(inner, name="inner.run")
        await a.connect(c.address)
        a.add_service(outer, name="outer.run")
        await b.connect(a.address)
        with contextlib.suppress(mesh.CallTimeout):  # the reply may beat the caller's timer
            await b.call("outer.run", timeout=0.1)
        await wait_until(lambda: seen == ["timed out at once"])
        await asyncio.sleep(0.1)
        assert seen == ["timed out at once"]  # inner never ran


async def test_stream_delivers_items_in_order(calc: tuple[Node, Node]) -> None:
    provider, caller = calc
    async with caller.stream("calc.count", 1000) as items:
        assert [x async for x in items] == list(range(1000))
    async with caller.stream("calc.squares", 5) as items:  # a sync generator
        assert [x async for x in items] == [0, 1, 4, 9, 16]
    async with provider.stream("calc.count", 3) as items:  # local
        assert [x async for x in items] == [0, 1, 2]
    assert [x async for x in caller.proxy("calc").count.stream(2)] == [0, 1]


async def test_leaving_a_stream_stops_the_producer() -> None:
    produced: list[int] = []
    stopped = asyncio.Event()

    @service("numbers")
    class Numbers:
        @stream
        async def forever(self) -> AsyncIterator[int]:
            try:
                i = 0
                while True:
                    produced.append(i)
                    yield i
                    i += 1
            finally:
                stopped.set()

    async with node("a") as a, node("b") as b:
        await pair(a, b, Numbers())
        async with b.stream("numbers.forever") as items:
            async for x in items:
                if x == 10:
                    break
        await asyncio.wait_for(stopped.wait(), 2)
        count = len(produced)
        await asyncio.sleep(0.1)
        assert len(produced) == count  # nothing after the stop


async def test_a_slow_consumer_pauses_the_producer() -> None:
    produced: list[int] = []

    @service("numbers")
    class Numbers:
        @stream
        async def many(self, n: int) -> AsyncIterator[bytes]:
            for i in range(n):
                produced.append(i)
                yield b"x" * 1000

    async with node("a") as a, node("b") as b:
        await pair(a, b, Numbers())
        async with b.stream("numbers.many", 100_000) as items:
            consumed = 0
            async for _ in items:
                consumed += 1
                if consumed % 50 == 0:
                    await asyncio.sleep(0.01)
                    # the producer is never more than one window (64) ahead
                    assert len(produced) - consumed <= 64
                if consumed == 500:
                    break


async def test_stream_and_call_are_not_interchangeable(calc: tuple[Node, Node]) -> None:
    provider, caller = calc
    for who in (provider, caller):
        with pytest.raises(mesh.CallError, match=r"is a stream: call it with node\.stream"):
            await who.call("calc.count", 3)
        with pytest.raises(mesh.CallError, match="is not a stream"):
            async with who.stream("calc.add", 1, 2) as items:
                async for _ in items:
                    pass


async def test_stream_errors_reach_the_consumer() -> None:
    @service("bad")
    class Bad:
        @stream
        async def items(self) -> AsyncIterator[int]:
            yield 1
            raise RuntimeError("broken stream")

    async with node("a") as a, node("b") as b:
        await pair(a, b, Bad())
        got = []
        with pytest.raises(mesh.RemoteError, match="broken stream"):
            async with b.stream("bad.items") as items:
                async for x in items:
                    got.append(x)
        assert got == [1]


@pytest.mark.timeout(60)
async def test_five_thousand_concurrent_calls_all_answered(calc: tuple[Node, Node]) -> None:
    _, caller = calc
    results = await asyncio.gather(
        *(caller.call("calc.add", i, 1, timeout=30) for i in range(5000))
    )
    assert results == [i + 1 for i in range(5000)]
    stats = caller.statistics()
    assert stats.dropped_out == 0
    assert stats.calls_outstanding == 0


async def test_payload_up_to_the_limit_and_one_over() -> None:
    limit = 256 * 1024
    limits = mesh.Limits(max_message_size=limit)

    async def echo(data: bytes) -> bytes:
        return data

    async def grow(n: int) -> bytes:
        return b"x" * n

    async with node("a", limits=limits) as a, node("b", limits=limits) as b:
        a.add_service(echo, name="echo.say")
        a.add_service(grow, name="echo.grow")
        await b.connect(a.address)
        big = b"x" * (limit - 200)
        assert await b.call("echo.say", big) == big
        with pytest.raises(mesh.ProtocolError, match="exceeds the limit"):
            await b.call("echo.say", b"x" * limit)  # refused before sending
        with pytest.raises(mesh.ProtocolError, match="the result cannot be sent"):
            await b.call("echo.grow", limit)
        assert await b.call("echo.say", b"still fine") == b"still fine"


async def test_blocking_sync_handler_does_not_stall_other_calls(calc: tuple[Node, Node]) -> None:
    _, caller = calc
    blocked = asyncio.create_task(caller.call("calc.blocking", 1.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await caller.call("calc.add", 1, 2) == 3
    assert await caller.call("calc.mul", 2, 2) == 4  # another pool thread
    assert time.monotonic() - started < 0.5
    assert await blocked == 1.0


async def test_overloaded_when_limit_and_queue_are_full() -> None:
    gate = asyncio.Event()

    @service("tight", concurrency=1, queue=1)
    class Tight:
        @method
        async def wait(self) -> str:
            await gate.wait()
            return "ok"

    async with node("a") as a, node("b") as b:
        await pair(a, b, Tight())
        running = asyncio.create_task(b.call("tight.wait"))
        queued = asyncio.create_task(b.call("tight.wait"))
        await wait_until(lambda: a.statistics().calls_in_flight == 2)
        with pytest.raises(mesh.Overloaded) as info:
            await b.call("tight.wait")
        assert info.value.retryable
        gate.set()
        assert await running == await queued == "ok"
        stats = a.statistics().services["tight"].methods["wait"]
        assert (stats.requests, stats.errors) == (3, 1)


async def test_a_handler_that_never_awaits_runs_inline_with_the_same_behaviour() -> None:
    """An ``async def`` without await cannot suspend: the node runs it at once, without a
    task (docs/performance.md). Its caller sees no difference: results, errors with
    their traceback, current_call(), statistics."""

    @service("quick")
    class Quick:
        @method
        async def who(self) -> list[Any]:
            call = current_call()
            return [call.caller, call.trace_id, call.remaining, asyncio.current_task() is None]

        @method
        async def boom(self) -> None:
            raise ValueError("inline failure")

    async with node("a") as a, node("b") as b:
        await pair(a, b, Quick())
        caller, trace, remaining, no_task = await b.call("quick.who", timeout=5.0)
        assert (caller, no_task) == (b.id, True)
        assert len(trace) == 16  # a fresh trace id (8 random bytes, hex)
        assert 0 < remaining <= 5.0
        # A call whose deadline passed on the way runs in a task, which times it out.
        spec = a._dispatcher.resolve("quick.who")
        late = CallContext("quick", "who", 1, b.id, trace, 1, time.monotonic() - 0.001)
        assert not a._dispatcher.can_call_now(spec, late)
        assert a._dispatcher.can_call_now(spec, dataclasses.replace(late, deadline=None))
        with pytest.raises(mesh.RemoteError, match="inline failure") as info:
            await b.call("quick.boom")
        assert info.value.remote_type == "ValueError"
        assert "raise ValueError" in info.value.remote_traceback
        stats = a.statistics().services["quick"].methods
        assert (stats["who"].requests, stats["who"].errors, stats["who"].in_flight) == (1, 0, 0)
        assert (stats["boom"].requests, stats["boom"].errors) == (1, 1)
        assert "inline failure" in str(stats["boom"].last_error)


def test_only_an_async_def_that_never_awaits_is_inline(security: str) -> None:
    from mesh._rpc.services import never_suspends

    async def plain(x: int) -> int:
        return x

    async def sleeps() -> None:
        await asyncio.sleep(0)

    async def locks(lock: asyncio.Lock) -> None:
        async with lock:
            pass

    async def iterates(items: Any) -> list[Any]:
        return [x async for x in items]

    def wrapper(*args: Any) -> Any:
        return plain(*args)  # a coroutine, but from a plain def

    assert never_suspends(plain)
    assert never_suspends(Calc().add)  # a bound method
    assert not any(map(never_suspends, [sleeps, locks, iterates, wrapper, str.upper]))


async def test_an_inline_call_waits_its_turn_when_its_service_is_full() -> None:
    gate = asyncio.Event()

    @service("tight", concurrency=1, queue=4)
    class Tight:
        @method
        async def wait(self) -> str:
            await gate.wait()
            return "waited"

        @method
        async def quick(self) -> str:
            return "quick"

    async with node("a") as a, node("b") as b:
        await pair(a, b, Tight())
        running = asyncio.create_task(b.call("tight.wait"))
        await wait_until(lambda: a.statistics().calls_in_flight == 1)
        quick = asyncio.create_task(b.call("tight.quick"))
        await wait_until(lambda: a.statistics().calls_in_flight == 2)
        await asyncio.sleep(0.05)
        assert not quick.done()  # queued behind the call holding the only slot
        gate.set()
        assert await running == "waited"
        assert await quick == "quick"


async def test_statistics_count_every_call(calc: tuple[Node, Node]) -> None:
    provider, caller = calc
    for i in range(10):
        await caller.call("calc.add", i, i)
    with pytest.raises(mesh.RemoteError):
        await caller.call("calc.fail")
    stats = provider.statistics().services["calc"]
    assert stats.version == "1.0.0"
    add = stats.methods["add"]
    assert (add.requests, add.errors, add.in_flight) == (10, 0, 0)
    assert add.latency.count == 10
    assert add.latency.p50 is not None
    assert 0 < add.latency.p50 < 0.1
    fail = stats.methods["fail"]
    assert (fail.requests, fail.errors) == (1, 1)
    assert "failed on purpose" in str(fail.last_error)
    process = provider.statistics().process
    assert process.rss_bytes > 1_000_000
    assert provider.statistics().messages_in >= 11


async def test_registration_rules() -> None:
    async with node("a") as a:
        a.add_service(Calc())
        with pytest.raises(mesh.MeshError, match="already registered"):
            a.add_service(Calc())
        with pytest.raises(mesh.MeshError, match="not a service"):
            a.add_service(object())
        with pytest.raises(mesh.MeshError, match=r"service\.method"):
            a.add_service(len)
        described = a.local_services["calc"].describe()
        assert described["version"] == "1.0.0"
        assert described["methods"]["add"]["signature"] == "(a: 'float', b: 'float') -> 'float'"
        assert described["methods"]["add"]["doc"] == "Return a + b."
        assert described["methods"]["add"]["idempotent"] is True
        assert described["methods"]["count"]["stream"] is True
        a.remove_service("calc")
        with pytest.raises(mesh.NoProvider):
            await a.call("calc.add", 1, 2)


async def test_a_service_removed_and_added_again_is_served_as_it_is_now() -> None:
    """The provider keeps what each called name resolved to: adding or removing a
    service must make it look again. (A blocking client sends every call to the node
    it connected to, whatever that node now offers.)"""

    async def first(x: int) -> int:
        return x

    async def second(x: int) -> int:
        return -x

    async with node("provider") as a:
        a.add_service(first, name="swap.it")
        settings = _keys["keys"].settings(_keys["mode"]) if _keys else {}
        config = a.config.replace(name="script", **settings)
        client = await asyncio.to_thread(mesh.sync.connect, a.address, config=config)
        try:

            def call(target: str) -> Any:
                return client.call(target, 5, timeout=5.0)

            assert await asyncio.to_thread(call, "swap.it") == 5
            a.remove_service("swap")
            with pytest.raises(mesh.NoProvider):
                await asyncio.to_thread(call, "swap.it")
            a.add_service(second, name="swap.it")
            assert await asyncio.to_thread(call, "swap.it") == -5
        finally:
            await asyncio.to_thread(client.close)


def test_decorated_methods_stay_plain_methods(security: str) -> None:
    assert asyncio.run(Calc().add(1, 2)) == 3
    assert Calc().mul(2, 3) == 6


async def test_shutdown_finishes_calls_in_flight_and_refuses_new_ones(
    calc: tuple[Node, Node],
) -> None:
    provider, caller = calc
    in_flight = asyncio.create_task(caller.call("calc.slow", 0.3))
    await wait_until(lambda: provider.statistics().calls_in_flight == 1)
    closing = asyncio.create_task(provider.aclose(grace=2.0))
    await asyncio.sleep(0.05)
    with pytest.raises((mesh.Unavailable, mesh.NoProvider)):
        await caller.call("calc.add", 1, 2)
    assert await in_flight == 0.3
    await closing


async def test_handlers_can_still_call_out_during_the_grace_period() -> None:
    nodes: dict[str, Node] = {}

    async def relay() -> str:
        await asyncio.sleep(0.2)  # the node starts closing meanwhile
        return str(await nodes["a"].call("echo.say", "relayed"))

    async def say(value: str) -> str:
        return value

    async with node("a") as a, node("b") as b, node("c") as c:
        nodes["a"] = a
        c.add_service(say, name="echo.say")
        await a.connect(c.address)
        a.add_service(relay, name="relay.run")
        await b.connect(a.address)
        call = asyncio.create_task(b.call("relay.run"))
        await wait_until(lambda: a.statistics().calls_in_flight == 1)
        await a.aclose(grace=2.0)
        assert await call == "relayed"


async def test_reconnecting_fails_the_calls_of_the_old_connection(
    calc: tuple[Node, Node],
) -> None:
    provider, caller = calc
    slow = asyncio.create_task(caller.call("calc.slow", 5, timeout=10))
    await wait_until(lambda: caller.statistics().calls_outstanding == 1)
    await caller.connect(provider.address)
    with pytest.raises(mesh.Unavailable, match="replaced"):
        await asyncio.wait_for(slow, 1.0)


async def test_a_removed_service_starts_afresh_when_added_again() -> None:
    gate = asyncio.Event()

    def make(concurrency: int) -> Any:
        @service("gated", concurrency=concurrency, queue=0)
        class Gated:
            @method
            async def wait(self) -> None:
                await gate.wait()

        return Gated()

    async with node("a") as a:
        a.add_service(make(1))
        a.remove_service("gated")
        a.add_service(make(3))
        calls = [asyncio.create_task(a.call("gated.wait")) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not any(c.done() for c in calls)  # three run at once: no old limit of 1
        gate.set()
        await asyncio.gather(*calls)


async def test_proxy_methods_take_a_timeout(calc: tuple[Node, Node]) -> None:
    _, caller = calc
    with pytest.raises(mesh.CallTimeout):
        await caller.proxy("calc").slow(5, timeout=0.1)


async def test_a_cancelled_call_is_not_a_method_error(calc: tuple[Node, Node]) -> None:
    provider, caller = calc
    task = asyncio.create_task(caller.call("calc.slow", 5))
    await wait_until(lambda: provider.statistics().calls_in_flight == 1)
    task.cancel()
    await wait_until(lambda: provider.statistics().calls_in_flight == 0)
    stats = provider.statistics().services["calc"].methods["slow"]
    assert (stats.requests, stats.errors, stats.in_flight) == (1, 0, 0)
