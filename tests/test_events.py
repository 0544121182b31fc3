"""Events across nodes on 127.0.0.1: prefixes, system events, queue groups, replay, limits.

In-process nodes use the ``test`` profile; the tests that kill a node run it as a
process (``tests.event_member``, ``nodes.echo``) and end it by PID.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from mesh import (
    Event,
    InvalidTopic,
    Limits,
    MeshError,
    Node,
    Subscription,
    method,
    on_event,
    service,
)
from mesh._core.events import Arrivals, Sequencer, SystemEvents
from mesh._core.listing import MemberInfo
from tests.programs import node_env, node_program, read_line, stop
from tests.test_mesh import eventually


@asynccontextmanager
async def mesh_of(count: int, **settings: Any) -> AsyncIterator[list[Node]]:
    """``count`` nodes of a fresh mesh; all but the first join through the first."""
    name = f"ev-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            Node(name="n0", mesh=name, profile="test", discovery=False, **settings)
        )
        nodes = [first]
        for i in range(1, count):
            node = Node(
                name=f"n{i}",
                mesh=name,
                profile="test",
                discovery=False,
                seeds=(first.address,),
                **settings,
            )
            nodes.append(await stack.enter_async_context(node))
        names = {n.name for n in nodes}
        await eventually(
            lambda: all(
                {m.name for m in n.members() if m.status == "alive" and m.record} == names
                for n in nodes
            ),
            10.0,
            "every node lists every node",
        )
        yield nodes


async def following(node: Node, count: int) -> None:
    """Wait until ``node``'s SUB socket follows ``count`` publishers and has connected."""

    def check() -> bool:
        events = node.statistics().events
        return events is not None and events.following >= count

    await eventually(check, 5.0, f"{node.name} follows {count} publishers")


async def take(sub: Subscription, count: int, timeout: float = 5.0) -> list[Event]:
    got: list[Event] = []
    if count == 0:
        return got

    async def read() -> None:
        async for event in sub:
            got.append(event)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"{len(got)} of {count} events within {timeout} s") from None
    return got


async def publish_until_received(
    publisher: Node, sub: Subscription, topic: str, timeout: float = 5.0
) -> Event:
    """PUB/SUB loses what is sent before the subscription reaches the publisher: send
    probes until one arrives, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await publisher.publish(topic, "probe")
        try:
            return await asyncio.wait_for(sub.__anext__(), 0.1)
        except TimeoutError:
            continue
    raise AssertionError(f"no event on {topic!r} reached the subscriber in {timeout} s")


# -- plain publish and subscribe -------------------------------------------------------------


async def test_subscribers_get_the_events_their_prefix_matches_with_topic_seq_and_publisher() -> (
    None
):
    async with mesh_of(3) as (a, b, c):
        orders = b.subscribe("orders.")
        everything = c.subscribe("")
        await publish_until_received(a, orders, "orders.warmup")
        await publish_until_received(a, everything, "warmup")
        await asyncio.sleep(0.1)
        for sub in (orders, everything):  # the probes
            await take(sub, sub.pending())
        before = time.time()
        sent = [await a.publish("orders.created", {"id": i}) for i in range(5)]
        await a.publish("payments.done", 1)
        await a.publish("orders.shipped", "x" * 100)

        got = await take(orders, 6)
        assert [(e.topic, e.data) for e in got] == [
            *(("orders.created", {"id": i}) for i in range(5)),
            ("orders.shipped", "x" * 100),
        ]
        assert [e.seq for e in got[:5]] == [e.seq for e in sent] == [1, 2, 3, 4, 5]
        assert got[5].seq == 1  # numbered per (publisher, topic)
        assert all(e.publisher == a.id and before <= e.timestamp <= time.time() for e in got)
        assert orders.pending() == 0  # payments.done was filtered out (at the publisher)

        rest = await take(everything, 7)
        assert [e.topic for e in rest].count("payments.done") == 1
        stats = a.statistics().events
        assert stats is not None
        assert stats.topics["orders.created"].published == 5
        received = b.statistics().events
        assert received is not None
        assert received.topics["orders.created"].delivered == 5


async def test_a_node_receives_its_own_events_and_many_subscriptions_each_get_them() -> None:
    async with mesh_of(1) as (a,):
        one, two = a.subscribe("t."), a.subscribe("t.x")
        await a.publish("t.x", 1)
        await a.publish("t.y", 2)
        assert [e.data for e in await take(one, 2)] == [1, 2]
        assert [e.data for e in await take(two, 1)] == [1]
        await one.aclose()
        await a.publish("t.x", 3)
        assert [e.data for e in await take(two, 1)] == [3]
        assert one.pending() == 0
        async for _ in one:  # a closed subscription ends
            raise AssertionError("no event after aclose")
        dropped = a.subscribe("t.")
        stats = a.statistics().events
        assert stats is not None
        assert stats.subscriptions == 2
        del dropped  # never closed: it ends when collected
        gc.collect()
        stats = a.statistics().events
        assert stats is not None
        assert stats.subscriptions == 1


async def test_reserved_and_invalid_topics_are_refused_with_a_clear_error() -> None:
    async with mesh_of(1) as (a,):
        with pytest.raises(InvalidTopic, match=r"reserved"):
            await a.publish("$mesh.node.joined", {})
        with pytest.raises(InvalidTopic, match="not empty"):
            await a.publish("", 1)
        with pytest.raises(InvalidTopic, match="255 bytes"):
            await a.publish("x" * 256, 1)
        with pytest.raises(InvalidTopic, match="str"):
            await a.publish(["a", "list"], 1)  # type: ignore[arg-type]
        with pytest.raises(InvalidTopic, match="str"):
            await a.publish(b"bytes", 1)  # type: ignore[arg-type]
        with pytest.raises(MeshError):  # data that cannot travel: nothing is sent
            await a.publish("t", object())
        assert isinstance(InvalidTopic("x"), ValueError)
        sub = a.subscribe("t")
        event = await a.publish("t", 1)
        assert event.seq == 1  # the refused one took no number
        assert (await take(sub, 1))[0].seq == 1


async def test_a_slow_subscriber_drops_its_own_events_and_never_slows_the_publisher() -> None:
    async with mesh_of(2) as (a, b):
        slow = b.subscribe("load.", maxsize=10)  # never read
        fast = b.subscribe("load.", maxsize=30_000)
        await publish_until_received(a, fast, "load.warmup")
        started = time.monotonic()
        for i in range(20_000):
            await a.publish("load.x", i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        took = time.monotonic() - started
        got = await take(fast, 20_000, timeout=30)
        assert [e.data for e in got] == list(range(20_000))
        assert slow.pending() == 10
        assert slow.dropped >= 20_000 - 10
        stats = b.statistics().events
        assert stats is not None
        assert stats.topics["load.x"].dropped >= 20_000 - 10
        print(f"20,000 events published in {took:.3f} s with a stuck subscriber")


def test_gaps_in_a_publishers_numbers_are_counted_and_repeats_refused() -> None:
    arrivals = Arrivals()
    assert arrivals.check("p", "t", 7) == 0  # the first one seen: joined mid-stream
    assert arrivals.check("p", "t", 8) == 0
    assert arrivals.check("p", "t", 12) == 3  # 9, 10, 11 lost
    assert arrivals.check("p", "t", 12) == -1  # a repeat
    assert arrivals.check("p", "u", 1) == 0  # per topic
    arrivals.forget_prefix("t")
    assert arrivals.check("p", "t", 20) == 0  # unsubscribed meanwhile: not a loss


def test_a_publishers_ring_keeps_the_last_events_of_each_topic() -> None:
    seq = Sequencer("me", history=3)
    for i in range(5):
        seq.next("a.x", i, float(i))
    seq.next("b.y", "b", 9.0)
    assert [(e.seq, e.data) for e in seq.history("a.", 10, {})] == [(3, 2), (4, 3), (5, 4)]
    assert [e.seq for e in seq.history("a.", 2, {})] == [4, 5]
    assert [e.seq for e in seq.history("", 10, {"a.x": 4})] == [5, 1]


# -- system events -----------------------------------------------------------------------------


def test_system_events_follow_members_services_and_topics() -> None:
    from mesh._core.catalog import Record, ServiceInfo

    def info(status: str, services: tuple[str, ...] = (), topics: tuple[str, ...] = ()) -> Any:
        record = Record(
            "id1",
            "n1",
            "m",
            services=tuple(ServiceInfo(s, "1.0") for s in services),
            topics=topics,
        )
        return MemberInfo("id1", "n1", status, 1, "", record=record)

    derive = SystemEvents()
    topics = lambda out: [t for t, _ in out]  # noqa: E731
    assert topics(derive.update("id1", info("alive", ("calc",)))) == [
        "$mesh.node.joined",
        "$mesh.service.up",
    ]
    out = derive.update("id1", info("alive", ("calc", "kv"), ("orders.x",)))
    assert topics(out) == ["$mesh.topic.new", "$mesh.service.up"]
    assert out[1][1]["service"] == "kv"
    assert out[1][1]["providers"] == 1
    assert derive.update("id1", info("suspect", ("calc", "kv"), ("orders.x",))) == []
    assert topics(derive.update("id1", info("dead", ("calc", "kv")))) == [
        "$mesh.service.down",
        "$mesh.service.down",
        "$mesh.node.failed",
    ]
    assert topics(derive.update("id1", info("alive", ()))) == ["$mesh.node.joined"]
    assert topics(derive.update("id1", info("left", ()))) == ["$mesh.node.left"]
    assert derive.update("id1", None) == []


async def test_system_events_on_join_leave_and_sigkill_of_real_processes() -> None:
    async with mesh_of(1) as (watcher,):
        sub = watcher.subscribe("$mesh.")
        env = node_env(MESH_NAME=watcher.mesh, MESH_SEEDS=watcher.address)
        seen: list[tuple[str, dict[str, Any]]] = []

        async def until(topic: str, node: str, timeout: float = 10.0) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for t, data in seen:
                    if t == topic and data.get("node") == node:
                        return data
                try:
                    event = await asyncio.wait_for(sub.__anext__(), 0.2)
                except TimeoutError:
                    continue
                seen.append((event.topic, event.data))
            raise AssertionError(f"no {topic} for {node} within {timeout} s; saw {seen}")

        with (
            node_program("nodes.echo", {**env, "MESH_NODE_NAME": "e1"}) as e1,
            node_program("nodes.echo", {**env, "MESH_NODE_NAME": "e2"}) as e2,
        ):
            await asyncio.to_thread(read_line, e1)
            await asyncio.to_thread(read_line, e2)
            joined = await until("$mesh.node.joined", "e1")
            assert joined["status"] == "alive"
            assert joined["node_id"]
            up = await until("$mesh.service.up", "e2")
            assert up["service"] == "echo"
            started = time.monotonic()
            os.kill(e1.pid, signal.SIGKILL)
            down = await until("$mesh.service.down", "e1")
            await until("$mesh.node.failed", "e1")
            print(f"$mesh.node.failed {time.monotonic() - started:.3f} s after SIGKILL")
            assert down["service"] == "echo"
            assert down["providers"] == 1
            assert await asyncio.to_thread(stop, e2) == 0
            await until("$mesh.node.left", "e2")
            assert ("$mesh.node.failed", "e2") not in [(t, d["node"]) for t, d in seen]


async def test_topic_new_when_a_publisher_lists_a_topic_first() -> None:
    async with mesh_of(2) as (a, b):
        sub = b.subscribe("$mesh.topic.")
        await a.publish("sensors.temp", 21.5)
        await a.publish("sensors.temp", 21.6)  # not new any more
        (event,) = await take(sub, 1)
        assert event.topic == "$mesh.topic.new"
        assert event.data["topic"] == "sensors.temp"
        assert event.data["node"] == "n0"
        await eventually(
            lambda: any(
                "sensors.temp" in (m.record.topics if m.record else ()) for m in b.members()
            ),
            5.0,
            "the topic listed in the publisher's record",
        )
        await asyncio.sleep(0.2)
        assert sub.pending() == 0


# -- services' handlers ------------------------------------------------------------------------


@service("audit")
class Audit:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @on_event("orders.")
    async def record(self, event: Event) -> None:
        if event.data == "boom":
            raise ValueError("a handler bug")
        self.seen.append(event.data)

    @method
    def count(self) -> int:
        return len(self.seen)


async def test_on_event_handlers_run_per_event_and_survive_their_own_errors() -> None:
    async with mesh_of(2) as (a, b):
        audit = Audit()
        b.add_service(audit)
        assert audit.record.__name__ == "record"  # still a plain method
        await following(b, 1)
        deadline = time.monotonic() + 5
        while not audit.seen and time.monotonic() < deadline:
            await a.publish("orders.warmup", "w")
            await asyncio.sleep(0.05)
        for data in ["boom", 1, 2]:
            await a.publish("orders.new", data)
        await eventually(lambda: audit.seen[-2:] == [1, 2], 5.0, "events after the error")
        b.remove_service("audit")
        await asyncio.sleep(0.05)
        await a.publish("orders.new", 3)
        await asyncio.sleep(0.2)
        assert 3 not in audit.seen


# -- queue groups ------------------------------------------------------------------------------


async def test_a_queue_group_gets_each_event_once_spread_over_its_members() -> None:
    async with mesh_of(4) as (publisher, *workers):
        subs = [w.subscribe("jobs.", group="workers") for w in workers]
        await eventually(
            lambda: all(
                sum(1 for m in publisher.members() if ("workers", "jobs.") in m.record.groups) == 3
                for _ in [0]
                if all(m.record for m in publisher.members())
            ),
            5.0,
            "three group members listed",
        )
        for i in range(60):
            await publisher.publish("jobs.resize", i)
        await publisher.publish("other.topic", "not for the group")
        await eventually(lambda: sum(s.pending() for s in subs) == 60, 10.0, "60 delivered")
        got = [[e.data for e in await take(s, s.pending())] for s in subs if s.pending()]
        flat = sorted(x for part in got for x in part)
        assert flat == list(range(60))  # each exactly once
        assert len(got) == 3
        assert all(len(part) >= 5 for part in got), [len(p) for p in got]
        await asyncio.sleep(0.2)
        assert sum(s.pending() for s in subs) == 0
        stats = publisher.statistics().events
        assert stats is not None
        assert stats.group_delivered == 60
        assert stats.group_lost == 0


async def test_a_queue_group_event_goes_to_another_member_when_the_chosen_one_dies() -> None:
    async with mesh_of(1) as (publisher,):
        env = node_env(
            MESH_NAME=publisher.mesh,
            MESH_SEEDS=publisher.address,
            EVENT_PREFIX="jobs.",
            EVENT_GROUP="workers",
        )
        with (
            node_program("tests.event_member", {**env, "MESH_NODE_NAME": "w1"}) as w1,
            node_program("tests.event_member", {**env, "MESH_NODE_NAME": "w2"}) as w2,
        ):
            await asyncio.to_thread(read_line, w1)
            await asyncio.to_thread(read_line, w2)
            await eventually(
                lambda: (
                    sum(
                        1
                        for m in publisher.members()
                        if m.record and ("workers", "jobs.") in m.record.groups
                    )
                    == 2
                ),
                10.0,
                "both workers listed in the group",
            )
            os.kill(w1.pid, signal.SIGSTOP)  # cannot acknowledge anything any more
            for i in range(20):
                await publisher.publish("jobs.x", i)
            got: list[int] = []
            while len(got) < 20:
                try:
                    line = await asyncio.to_thread(read_line, w2, 5.0)
                except TimeoutError:
                    print(
                        publisher.statistics().events,
                        [(m.name, m.status) for m in publisher.members()],
                        publisher._background,
                    )
                    raise
                print(line)
                if line["event"] == "got":
                    got.append(line["data"])
            assert sorted(got) == list(range(20))  # all of them, once each
            os.kill(w1.pid, signal.SIGKILL)
            stats = publisher.statistics().events
            assert stats is not None
            assert stats.group_delivered == 20
            assert stats.group_redelivered >= 1
            print(f"redelivered {stats.group_redelivered} of 20 after the chosen member froze")


# -- replay ------------------------------------------------------------------------------------


async def test_history_replays_the_last_events_then_live_ones_without_gaps_or_repeats() -> None:
    async with mesh_of(2) as (a, b):
        for i in range(10):
            await a.publish("metrics.cpu", i)
        await a.publish("metrics.mem", "m1")
        await eventually(
            lambda: any(m.record and "metrics.mem" in m.record.topics for m in b.members()),
            5.0,
            "the topics listed",
        )
        sub = b.subscribe("metrics.", history=4)
        replayed = await take(sub, 5)
        assert [e.data for e in replayed if e.topic == "metrics.cpu"] == [6, 7, 8, 9]
        assert [e.data for e in replayed if e.topic == "metrics.mem"] == ["m1"]
        # Published at once, while the SUB socket may not follow the publisher yet: what
        # PUB/SUB loses here comes from the publisher's ring, in order, once each.
        for i in range(10, 15):
            await a.publish("metrics.cpu", i)
        assert [e.data for e in await take(sub, 5)] == [10, 11, 12, 13, 14]
        await a.publish("metrics.cpu", 15)
        assert [e.data for e in await take(sub, 1)] == [15]
        with pytest.raises(TimeoutError):  # no repeats
            await asyncio.wait_for(sub.__anext__(), 0.5)


# -- hostile input -----------------------------------------------------------------------------


@asynccontextmanager
async def rogue_publisher(node: Node, hwm: int = 1_000) -> AsyncIterator[Any]:
    """A raw PUB socket that ``node`` follows as the live member "rogue" ("f" * 32): the
    bus follows whatever live member lists a pub address."""
    import zmq
    import zmq.asyncio

    from mesh._core.catalog import Record

    context = zmq.asyncio.Context()
    rogue = context.socket(zmq.PUB)
    rogue.setsockopt(zmq.SNDHWM, hwm)
    port = rogue.bind_to_random_port("tcp://127.0.0.1")
    try:
        record = Record("f" * 32, "rogue", node.mesh, addresses={"pub": f"tcp://127.0.0.1:{port}"})
        node._events.member_changed(MemberInfo("f" * 32, "rogue", "alive", 1, "", record=record))
        yield rogue
    finally:
        rogue.close(linger=0)
        context.term()


async def test_malformed_and_forged_event_messages_are_counted_and_the_node_keeps_serving() -> None:
    from mesh._wire.codec import Codec
    from mesh._wire.codec import Event as WireEvent

    async with mesh_of(1) as (node,):
        sub = node.subscribe("")  # first: the bus follows publishers once it subscribes
        async with rogue_publisher(node) as rogue:
            codec = Codec()
            good = codec.encode_event(WireEvent("ok.topic", "f" * 32, 1, 0.0, "fine"))
            bad = [
                [b"ok.topic"],  # no payload
                [b"ok.topic", b"\xc1"],  # not msgpack
                [b"ok.topic", good[1][:-3]],  # truncated
                [b"other", good[1]],  # topic frame and payload disagree
                codec.encode_event(WireEvent("$mesh.node.failed", "f" * 32, 1, 0.0, {})),
            ]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until the SUB socket follows it
                await rogue.send_multipart(good)
                await asyncio.sleep(0.02)
                if any(e.topic == "ok.topic" for e in await take(sub, sub.pending())):
                    break
            for frames in bad:
                await rogue.send_multipart(frames)
            await rogue.send_multipart(
                codec.encode_event(WireEvent("ok.topic", "f" * 32, 10**6, 0.0, "still here"))
            )
            (event,) = await take(sub, 1)
            assert event.data == "still here"  # nothing malformed or forged got through
            stats = node.statistics().events
            assert stats is not None
            assert stats.protocol_errors == len(bad)
            assert await node.publish("ok.topic", 1)  # and the node keeps working


# -- bounds: history bytes, topic counters, arrivals (issue 20, item 10) -------------------------

MiB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_history_is_bounded_in_bytes_over_all_topics_the_oldest_going_first() -> None:
    from mesh._core.events import EVENT_COST, TOPIC_COST

    bound = 1 * MiB
    seq = Sequencer("me", history=100, max_bytes=bound)
    for i in range(64):  # 64 topics of 10 events of 16 KiB: 10 MiB published
        for j in range(10):
            seq.next(f"big.{i}", j, float(i * 10 + j), size=16 * 1024)
        assert seq.held_bytes <= bound
    kept = seq.history("big.", 100, {})
    topics = sorted({e.topic for e in kept}, key=lambda t: int(t.split(".")[1]))
    # the globally oldest went first: what is left is the newest, as one run of topics
    assert topics == [f"big.{i}" for i in range(64 - len(topics), 64)]
    assert [e.data for e in kept if e.topic == "big.63"] == list(range(10))
    assert seq.held == len(kept)
    assert seq.evicted == 640 - len(kept)
    assert seq.held_bytes == len(kept) * (16 * 1024 + EVENT_COST) + len(topics) * TOPIC_COST
    print(f"{seq.held_bytes:,} bytes held ({len(kept)} events, {len(topics)} topics) of 10 MiB")
    # tiny events are bounded too (each counts EVENT_COST beside its data)
    tiny = Sequencer("me", history=100, max_bytes=bound)
    for i in range(100_000):
        tiny.next(f"t.{i % 5_000}", None, float(i), size=1)
    assert tiny.held_bytes <= bound
    assert tiny.held <= bound // (1 + EVENT_COST)


def test_a_topic_keeps_its_numbers_when_its_events_and_its_counter_are_forgotten() -> None:
    seq = Sequencer("me", history=100, max_bytes=64 * 1024, max_topics=100)
    seen = Arrivals()
    for _ in range(50):
        assert seen.check("me", "quiet", seq.next("quiet", "q", 0.0, size=100).seq) == 0
    for i in range(100):  # newer events push every event of "quiet" out
        seq.next("busy", i, 1.0, size=8 * 1024)
    assert seq.history("quiet", 100, {}) == []
    assert seq.next("quiet", "again", 2.0).seq == 51  # the counter stayed
    assert seen.check("me", "quiet", 51) == 0  # not a repeat, no gap
    for i in range(100):  # push it out again, then 1,000 topics: its counter goes too
        seq.next("busy", i, 3.0, size=8 * 1024)
    for i in range(1_000):
        seq.next(f"other.{i}", i, 4.0)
    assert "quiet" not in set(seq.topics())
    assert seq.forgotten >= 900
    assert len(list(seq.topics())) <= 100
    event = seq.next("quiet", "back", 5.0)
    assert event.seq > 51  # resumed above every number it had: never taken as a repeat
    assert seen.check("me", "quiet", event.seq) >= 0
    assert seq.count_published()["*"] >= 900  # forgotten topics' counts are kept apart
    print(f"forgotten {seq.forgotten} counters; 'quiet' resumed at {event.seq}")


def test_a_subscribers_arrivals_are_bounded_the_least_recently_seen_forgotten_first() -> None:
    arrivals = Arrivals(most=1_000)
    arrivals.check("friend", "news", 1)
    for i in range(100_000):
        arrivals.check_run("rogue", f"spam.{i}", 1, 1)
        if i % 500 == 0:
            assert arrivals.check("friend", "news", 2 + i // 500) == 0  # seen lately: kept
    assert len(arrivals) == 1_000
    assert arrivals.evicted == 100_001 - 1_000
    assert arrivals.last("friend", "news") == 2 + 99_999 // 500
    assert arrivals.last("rogue", "spam.0") is None  # forgotten: it starts afresh
    assert arrivals.check("rogue", "spam.0", 1) == 0


async def test_many_topics_of_large_events_keep_the_history_within_its_bound() -> None:
    # The case: a careless caller publishes through a node ($mesh.publish) 16
    # topics of 256 KiB events (400 MiB; +459 MB of RSS before the bound).
    from mesh import Client

    bound = 64 * MiB  # the default limits.event_history_bytes
    async with mesh_of(1) as (node,):
        before = rss_bytes()
        async with Client(
            mesh=node.mesh, profile="test", discovery=False, seeds=(node.address,)
        ) as client:
            blob = os.urandom(256 * 1024)
            for i in range(16):
                for _ in range(100):
                    await client.publish(f"blob.{i}", blob)
        grown = rss_bytes() - before
        assert grown < 3 * bound, f"RSS +{grown / MiB:.0f} MiB"  # loosely
        stats = node.statistics().events
        assert stats is not None
        assert node.config.limits.event_history_bytes == bound
        assert stats.history_bytes <= bound
        assert stats.history_evicted >= 16 * 100 - bound // (256 * 1024)
        print(
            f"history {stats.history_bytes / MiB:.1f} MiB in {stats.history_events} events "
            f"(bound {bound / MiB:.0f} MiB), {stats.history_evicted} evicted; "
            f"RSS +{grown / MiB:.0f} MiB after 400 MiB published"
        )


async def test_replay_still_gives_recent_topics_and_numbers_go_on_after_evictions() -> None:
    limits = Limits(event_history_bytes=2 * MiB, event_topics=50)
    async with mesh_of(2, limits=limits) as (a, b):
        live = b.subscribe("news.")
        await following(b, 1)
        first = await publish_until_received(a, live, "news.old")
        for i in range(4):
            await a.publish("news.old", i)
        assert [e.data for e in await take(live, 4)] == [0, 1, 2, 3]
        # 100 topics of 64 KiB events: 6.4 MiB, so "news.old" loses its events (then its
        # counter: 50 topics at most) while the last topics stay replayable
        blob = os.urandom(64 * 1024)
        for i in range(100):
            for _ in range(2):
                await a.publish(f"bulk.{i:03}", blob)
            await asyncio.sleep(0)
        stats = a.statistics().events
        assert stats is not None
        assert stats.history_bytes <= 2 * MiB
        assert stats.topics_forgotten >= 50
        assert "news.old" not in a._events.topics()
        event = await a.publish("news.old", "after")
        assert event.seq > first.seq + 4  # resumed above its old numbers
        (got,) = await take(live, 1)  # so the subscriber does not drop it as a repeat
        assert got.data == "after"
        kept = a._events.history("bulk.", 100, {})
        await eventually(
            lambda: any(m.record and "bulk.099" in m.record.topics for m in b.members()),
            5.0,
            "the topics listed",
        )
        replay = b.subscribe("bulk.", history=5)
        replayed = await take(replay, len(kept))  # what is kept: the newest topics
        assert [(e.topic, e.seq) for e in replayed] == [(e.topic, e.seq) for e in kept]
        assert {f"bulk.{i:03}" for i in range(90, 100)} <= {e.topic for e in replayed}
        print(
            f"history {stats.history_bytes:,} bytes, {stats.topics_forgotten} counters "
            f"forgotten; news.old resumed at {event.seq} after {first.seq + 4}; "
            f"{len(replayed)} events of {len({e.topic for e in replayed})} topics replayed"
        )


async def test_a_peer_publishing_to_very_many_topics_cannot_grow_a_subscribers_arrivals() -> None:
    from mesh._wire.codec import Codec
    from mesh._wire.codec import Event as WireEvent

    most = 2_000
    topics = 20_000
    async with mesh_of(1, limits=Limits(event_arrivals=most)) as (node,):
        sub = node.subscribe("", maxsize=topics + 100)
        async with rogue_publisher(node, hwm=1_000_000) as rogue:
            codec = Codec()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until the SUB socket follows it
                await rogue.send_multipart(
                    codec.encode_event(WireEvent("hello", "f" * 32, 1, 0.0, None))
                )
                await asyncio.sleep(0.02)
                if await take(sub, sub.pending()):
                    break
            for i in range(topics):  # each from a publisher id of its own, too
                publisher = f"{i % 7:x}" * 32
                await rogue.send_multipart(
                    codec.encode_event(WireEvent(f"spam.{i}", publisher, 1, 0.0, i))
                )
                if i % 500 == 0:
                    await asyncio.sleep(0)
            await rogue.send_multipart(
                codec.encode_event(WireEvent("last", "f" * 32, 1, 0.0, "end"))
            )

            def arrived() -> bool:
                return bool(sub._queue) and sub._queue[-1].topic == "last"

            await eventually(arrived, 10.0, "the last event arrives")
            assert sub.pending() == topics + 1
            stats = node.statistics().events
            assert stats is not None
            assert stats.arrivals <= most
            assert stats.arrivals_evicted >= topics - most
            assert await node.publish("ok.topic", 1)  # and the node keeps working
            print(
                f"{topics:,} topics from a peer: {stats.arrivals} arrivals kept "
                f"(bound {most}), {stats.arrivals_evicted:,} evicted"
            )


async def test_a_gap_is_filled_from_the_publishers_ring_when_it_published_more_since() -> None:
    # Why test_history_replays_... flaked: the gap was asked as "the latest `gap` events
    # after `last`", which are the ring's newest, never the gap's first ones.
    async with mesh_of(2) as (a, b):
        for i in range(20):
            await a.publish("gaps.t", i)
        await eventually(
            lambda: any(m.record and "gaps.t" in m.record.topics for m in b.members()),
            5.0,
            "the topic listed",
        )
        remote = await b._events.fill_gap(a.id, "gaps.t", 5, 9)
        assert [e.seq for e in remote] == [6, 7, 8]
        local = await a._events.fill_gap(a.id, "gaps.t", 10, 12)
        assert [e.seq for e in local] == [11]
