"""Nodes in one process on 127.0.0.1: handshake, version negotiation, hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

import mesh
from mesh import (
    ConfigError,
    ConnectError,
    ConnectTimeout,
    IncompatibleVersion,
    Node,
    WrongMesh,
)
from mesh._io import transport as _transport
from mesh._io.transport import Transport
from mesh._wire.codec import Call, Codec, Error, Goodbye, Hello, Kind, Welcome
from tests.waiting import wait_until

codec = Codec()


def node(name: str, mesh_name: str = "test", **kw: Any) -> Node:
    return Node(mesh.Config(name=name, mesh=mesh_name, profile="test"), **kw)


class RawSockets:
    """Plain zmq sockets playing hostile, old or new peers; all closed at teardown."""

    def __init__(self) -> None:
        self.context = zmq.asyncio.Context()
        self.sockets: list[zmq.asyncio.Socket] = []

    def socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.context.term()


@pytest.fixture
async def zctx() -> AsyncIterator[RawSockets]:
    raw = RawSockets()
    yield raw
    raw.close()


async def raw_dealer(raw: RawSockets, address: str) -> zmq.asyncio.Socket:
    sock = raw.socket(zmq.DEALER)
    sock.connect(address)
    return sock


async def ask(sock: zmq.asyncio.Socket, *frames: bytes, timeout: float = 2.0) -> Any:
    await sock.send_multipart(list(frames))
    reply = await asyncio.wait_for(sock.recv_multipart(), timeout)
    assert len(reply) == 1
    return codec.decode(reply[0])


def hello(ref: int = 1, mesh_name: str = "test", versions: tuple[int, int] = (1, 1)) -> bytes:
    return codec.encode(Hello(ref, "f" * 32, "raw", mesh_name, *versions))


async def test_two_nodes_introduce_themselves() -> None:
    async with node("a") as a, node("b") as b:
        assert a.address.startswith("tcp://127.0.0.1:")
        assert a.pub_address != a.address
        peer = await b.connect(a.address)
        assert (peer.id, peer.name, peer.mesh, peer.version) == (a.id, "a", "test", 1)
        assert peer.address == a.address
        assert b.peers[a.id] == peer
        assert a.peers[b.id].name == "b"
        assert a.statistics().peers == 1


async def test_node_ids_are_random_per_start_and_names_need_not_be_unique() -> None:
    async with node("same") as a, node("same") as b:
        assert a.id != b.id
        assert len(a.id) == 32
        await b.connect(a.address)
        assert a.peers[b.id].name == "same"


async def test_wrong_mesh_is_refused_and_the_node_keeps_serving() -> None:
    async with node("a", "blue") as a, node("b", "green") as b, node("c", "blue") as c:
        with pytest.raises(WrongMesh, match="belongs to mesh 'blue', not 'green'") as info:
            await b.connect(a.address)
        assert info.value.address == a.address
        assert a.statistics().handshakes_refused == 1
        assert b.peers == {}
        assert (await c.connect(a.address)).id == a.id


async def test_connect_to_nothing_times_out_with_a_reason() -> None:
    async with node("a") as a:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout, match="refused or unreachable") as info:
            await a.connect("tcp://127.0.0.1:9", timeout=0.3)
        assert isinstance(info.value, TimeoutError)
        assert 0.25 < time.monotonic() - started < 2.0
        assert a.peers == {}


async def test_connect_to_a_silent_socket_times_out(zctx: RawSockets) -> None:
    silent = zctx.socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    async with node("a") as a:
        with pytest.raises(ConnectTimeout, match="no mesh node answered"):
            await a.connect(f"tcp://127.0.0.1:{port}", timeout=0.3)


@pytest.mark.parametrize("address", ["127.0.0.1:5000", "tcp://host", "udp://a:1", ""])
async def test_connect_to_a_malformed_address_is_a_clear_error(address: str) -> None:
    async with node("a") as a:
        with pytest.raises(ConnectError, match="not a tcp://host:port address"):
            await a.connect(address)


async def test_new_peer_gets_the_highest_common_version(zctx: RawSockets) -> None:
    async with node("a") as a:
        sock = await raw_dealer(zctx, a.address)
        answer = await ask(sock, hello(versions=(1, 5)))
        assert isinstance(answer, Welcome)
        assert (answer.version, answer.min_version, answer.max_version) == (1, 1, 1)


async def test_incompatible_peer_is_refused_and_the_node_keeps_serving(
    zctx: RawSockets,
) -> None:
    async with node("a") as a:
        sock = await raw_dealer(zctx, a.address)
        answer = await ask(sock, hello(ref=7, versions=(2, 5)))
        assert isinstance(answer, Error)
        assert (answer.ref, answer.code) == (7, "incompatible_version")
        assert "speaks 1..1, the caller 2..5" in answer.message
        assert isinstance(await ask(sock, hello(ref=8)), Welcome)


async def fake_peer(zctx: RawSockets, answer: Any) -> tuple[str, asyncio.Task[None]]:
    """A ROUTER that answers one HELLO with ``answer(hello)``."""
    sock = zctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    async def serve() -> None:
        routing_id, frame = await sock.recv_multipart()
        request = codec.decode(frame)
        assert isinstance(request, Hello)
        await sock.send_multipart([routing_id, codec.encode(answer(request))])

    return f"tcp://127.0.0.1:{port}", asyncio.create_task(serve())


def welcome(request: Hello, low: int, high: int, chosen: int, mesh_name: str = "test") -> Welcome:
    return Welcome(request.ref, "e" * 32, "peer", mesh_name, low, high, chosen)


async def test_connect_to_a_newer_peer_uses_the_old_version(zctx: RawSockets) -> None:
    address, served = await fake_peer(zctx, lambda r: welcome(r, 1, 3, 1))
    async with node("a") as a:
        peer = await a.connect(address)
        await served
        assert peer.version == 1


async def test_connect_to_a_peer_with_no_common_version_fails(zctx: RawSockets) -> None:
    address, served = await fake_peer(zctx, lambda r: welcome(r, 2, 3, 2))
    async with node("a") as a:
        with pytest.raises(IncompatibleVersion, match=r"speaks protocol 2\.\.3"):
            await a.connect(address)
        await served
        assert a.peers == {}


async def test_peer_of_another_mesh_answering_welcome_is_refused(
    zctx: RawSockets,
) -> None:
    address, served = await fake_peer(zctx, lambda r: welcome(r, 1, 1, 1, mesh_name="other"))
    async with node("a") as a:
        with pytest.raises(WrongMesh, match="of mesh 'other'"):
            await a.connect(address)
        await served


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"\xc1"], "not a valid msgpack frame"),
        ([b"garbage that is not msgpack at all"], "not a valid msgpack frame"),
        ([msgpack.packb([1, 99, 1])], "unknown message kind 99"),
        ([msgpack.packb([9, int(Kind.CALL), 1, "x.y"])], "protocol version 9"),
        ([hello(), hello()], "exactly one frame"),
        ([b""], "not a valid msgpack frame"),
    ],
)
async def test_garbage_gets_a_protocol_error_and_the_node_keeps_serving(
    zctx: RawSockets, frames: list[bytes], match: str
) -> None:
    async with node("a") as a:
        sock = await raw_dealer(zctx, a.address)
        answer = await ask(sock, *frames)
        assert isinstance(answer, Error)
        assert answer.code == "protocol"
        assert match in answer.message
        assert a.statistics().protocol_errors == 1
        assert isinstance(await ask(sock, hello()), Welcome)


async def test_oversized_frames_do_not_hurt_the_node(zctx: RawSockets) -> None:
    limit = 64 * 1024
    async with node("a", limits=mesh.Limits(max_message_size=limit)) as a, node("b") as b:
        sock = await raw_dealer(zctx, a.address)
        # Over the limit but under the socket backstop: a clear error back.
        answer = await ask(sock, b"\x00" * (limit + 10))
        assert isinstance(answer, Error)
        assert "exceeds the limit" in answer.message
        # Far over: libzmq drops that connection; the node serves everyone else.
        await sock.send(b"\x00" * (4 * limit))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sock.recv_multipart(), 0.3)
        assert (await b.connect(a.address)).id == a.id


async def test_messages_before_hello_are_refused(zctx: RawSockets) -> None:
    async with node("a") as a:
        sock = await raw_dealer(zctx, a.address)
        answer = await ask(sock, codec.encode(Call(5, "calc.add", [1, 2])))
        assert isinstance(answer, Error)
        assert (answer.ref, answer.code, answer.message) == (5, "no_session", "say HELLO first")


@mesh.service("counter")
class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    @mesh.method
    async def bump(self) -> int:
        self.calls += 1
        return self.calls

    @mesh.method
    async def wait(self) -> str:
        await self.release.wait()
        return "released"


async def test_a_caller_the_listener_forgot_shakes_hands_again_and_its_call_goes_through() -> None:
    """A listener that declares a caller dead (its membership's verdict, say across a
    one-way cut that the caller did not notice) drops the caller's sessions; the caller
    still holds its connection. Its next call is refused with ``no_session`` before it
    runs, so the caller opens a fresh connection, shakes hands again and sends it once
    more: the user sees the call succeed, non-idempotent as it is, and it ran once."""
    counter = Counter()
    async with node("a") as a, node("b") as b:
        a.add_service(counter)
        await b.connect(a.address)
        assert await b.call("counter.bump") == 1
        waiting = asyncio.ensure_future(b.call("counter.wait", timeout=5.0))
        await asyncio.sleep(0.05)
        a._caller_gone(b.id)  # what a does when its membership declares b dead
        started = time.monotonic()
        assert await b.call("counter.bump", timeout=2.0) == 2
        assert counter.calls == 2  # the refused call did not run; the one sent again did
        # The call that was running when a dropped the session is abandoned there: the
        # refusal tells b, and it fails at once (retryable), not at its deadline.
        with pytest.raises(mesh.Unavailable, match="dropped this connection"):
            await waiting
        assert time.monotonic() - started < 1.0
        assert await b.call("counter.bump") == 3
        assert a.statistics().protocol_errors == 1


async def test_a_call_refused_for_want_of_a_session_is_sent_again_only_once() -> None:
    """A listener that keeps refusing with ``no_session`` (it drops every session it
    welcomes): the caller shakes hands and sends the call once more, then gives up with
    ``SessionLost`` instead of reconnecting until the deadline."""
    counter = Counter()
    async with node("a") as a, node("b") as b:
        a.add_service(counter)
        welcome = a._on_hello

        def forgetful(routing_id: bytes, message: Hello) -> None:
            welcome(routing_id, message)
            a._sessions.pop(routing_id, None)

        a._on_hello = forgetful  # type: ignore[method-assign]
        await b.connect(a.address)
        with pytest.raises(mesh.SessionLost):
            await b.call("counter.bump", timeout=2.0)
        assert a.statistics().protocol_errors == 2  # refused twice, not more
        assert counter.calls == 0


async def test_call_to_a_node_without_the_service_says_no_provider(
    zctx: RawSockets,
) -> None:
    async with node("a") as a:
        sock = await raw_dealer(zctx, a.address)
        await ask(sock, hello())
        answer = await ask(sock, codec.encode(Call(5, "calc.add", [1, 2])))
        assert isinstance(answer, Error)
        assert (answer.ref, answer.code) == (5, "no_provider")
        assert "calc" in answer.message


async def test_leaving_node_says_goodbye(zctx: RawSockets) -> None:
    async with node("a") as a:
        b = node("b")
        await b.start()
        await b.connect(a.address)
        assert b.id in a.peers
        await b.aclose()
        await wait_until(lambda: b.id not in a.peers)
    # A raw peer that said HELLO is told goodbye when the node leaves.
    async with node("c") as c:
        sock = await raw_dealer(zctx, c.address)
        await ask(sock, hello())
    frame = await asyncio.wait_for(sock.recv(), 2)
    assert codec.decode(frame) == Goodbye(c.id)


async def test_peer_that_leaves_is_forgotten_by_the_caller() -> None:
    async with node("b") as b:
        a = node("a")
        await a.start()
        address = a.address
        await b.connect(address)
        await a.aclose()
        await wait_until(lambda: a.id not in b.peers)
        assert address not in b._connections  # closed at the GOODBYE, not kept for dead_ttl


async def test_reconnect_uses_a_fresh_connection() -> None:
    async with node("a") as a, node("b") as b:
        first = await b.connect(a.address)
        second = await b.connect(a.address)
        assert first == second
        assert len(b.peers) == 1


async def test_node_must_be_started() -> None:
    n = node("a")
    with pytest.raises(mesh.MeshError, match="not started"):
        _ = n.address
    with pytest.raises(mesh.MeshError, match="not started"):
        await n.connect("tcp://127.0.0.1:1")


def test_unknown_keyword_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        node("a", colour="blue")


async def test_busy_port_is_a_transport_error() -> None:
    async with node("a") as a:
        port = int(a.address.rsplit(":", 1)[1])
        with pytest.raises(mesh.TransportError, match="cannot bind"):
            async with node("b", port=port):
                pass


async def test_unroutable_reply_is_counted_not_silent() -> None:
    dropped: list[str] = []
    transport = Transport(mesh.Limits())
    try:
        router, _ = transport.router(
            "127.0.0.1", 0, lambda f: None, on_dropped=lambda f, why: dropped.append(why)
        )
        router.send([b"nobody", b"reply"])
        assert await router.flush(1.0)
        assert dropped == ["no such peer"]
        assert transport.statistics().dropped_out == 1
    finally:
        await transport.aclose()


async def test_connecting_sockets_send_heartbeats() -> None:
    """A node's DEALERs and its SUB ping their peers (tests/test_events_lan.py shows what
    a link down and up does without it); a listener's ROUTER and PUB need not."""
    transport = Transport(mesh.Limits())
    try:
        dealer = transport.dealer("tcp://127.0.0.1:9", b"me", lambda f: None, send_timeout=1.0)
        subscriber = transport.subscriber(lambda f: None)
        for sock in (dealer.sock, subscriber._pump.sock):
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) == _transport.HEARTBEAT_IVL
            assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == _transport.HEARTBEAT_TIMEOUT
            assert sock.getsockopt(zmq.HEARTBEAT_TTL) == _transport.HEARTBEAT_TTL
            assert sock.getsockopt(zmq.CONNECT_TIMEOUT) == _transport.CONNECT_TIMEOUT
        router, _ = transport.router("127.0.0.1", 0, lambda f: None)
        assert router.sock.getsockopt(zmq.HEARTBEAT_IVL) == 0
    finally:
        await transport.aclose()


async def test_counters_never_go_down_when_connections_close() -> None:
    async with node("a") as a, node("b") as b:
        await b.connect(a.address)
        sent = b.statistics().messages_out
        assert sent >= 1
        await b.connect(a.address)  # replaces (closes) the first connection
        assert b.statistics().messages_out >= sent + 1


async def test_closing_twice_is_harmless() -> None:
    a = node("a")
    await a.start()
    await a.aclose()
    await a.aclose()


async def test_bad_call_gets_an_error_naming_its_call_id(zctx: RawSockets) -> None:
    async with node("a") as a:
        sock = await raw_dealer(zctx, a.address)
        await ask(sock, hello())
        answer = await ask(sock, msgpack.packb([1, int(Kind.CALL), 42, "calc.add", "not a list"]))
        assert isinstance(answer, Error)
        assert (answer.ref, answer.code) == (42, "protocol")
        assert "CALL.args" in answer.message
        # A complete CALL (the codec's fast path) whose args nest too deep: same answer.
        deep: Any = 0
        for _ in range(a.config.limits.max_depth + 1):
            deep = [deep]
        frame = msgpack.packb([1, int(Kind.CALL), 43, "calc.add", [deep], {}, 1000, 0, "t", 1])
        answer = await ask(sock, frame)
        assert isinstance(answer, Error)
        assert (answer.ref, answer.code) == (43, "protocol")
        assert "nesting deeper" in answer.message


async def test_a_welcome_from_another_connection_does_not_complete_a_handshake(
    zctx: RawSockets,
) -> None:
    # Two silent fake peers; the first answers the HELLO meant for the second.
    first, second = zctx.socket(zmq.ROUTER), zctx.socket(zmq.ROUTER)
    ports = [s.bind_to_random_port("tcp://127.0.0.1") for s in (first, second)]
    async with node("a") as a:
        attempt = asyncio.create_task(a.connect(f"tcp://127.0.0.1:{ports[1]}", timeout=1.0))
        _, frame = await asyncio.wait_for(second.recv_multipart(), 2)
        request = codec.decode(frame)
        assert isinstance(request, Hello)
        other = asyncio.create_task(a.connect(f"tcp://127.0.0.1:{ports[0]}", timeout=1.0))
        rid_first, _ = await asyncio.wait_for(first.recv_multipart(), 2)
        await first.send_multipart([rid_first, codec.encode(welcome(request, 1, 1, 1))])
        with pytest.raises(ConnectTimeout):
            await attempt
        with pytest.raises(ConnectTimeout):
            await other


async def test_non_zeromq_traffic_does_not_hurt_the_node() -> None:
    async with node("a") as a, node("b") as b:
        host, port = a.address.removeprefix("tcp://").split(":")
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 8):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(junk)
            # libzmq answers with its greeting at most, then drops the connection.
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(reader.read(), 0.5)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert (await b.connect(a.address)).id == a.id
        assert a.statistics().protocol_errors == 0  # nothing reached the codec


async def test_reused_call_id_is_dropped_not_answered(zctx: RawSockets) -> None:
    gate = asyncio.Event()

    async def wait() -> str:
        await gate.wait()
        return "first"

    async with node("a") as a:
        a.add_service(wait, name="slow.wait")
        sock = await raw_dealer(zctx, a.address)
        await ask(sock, hello())
        call = codec.encode(Call(5, "slow.wait", [], {}, 5000))
        await sock.send(call)
        await sock.send(call)  # the same id while the first runs
        await asyncio.sleep(0.1)
        gate.set()
        answer = codec.decode(await asyncio.wait_for(sock.recv(), 2))
        assert answer == mesh._wire.codec.Reply(5, "first")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sock.recv(), 0.2)  # nothing else
        assert a.statistics().protocol_errors == 1


async def test_caller_goodbye_stops_its_calls(zctx: RawSockets) -> None:
    stopped = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    async with node("a") as a:
        a.add_service(forever, name="slow.forever")
        sock = await raw_dealer(zctx, a.address)
        await ask(sock, hello())
        await sock.send(codec.encode(Call(1, "slow.forever", [], {}, None)))
        await wait_until(lambda: a.statistics().calls_in_flight == 1)
        await sock.send(codec.encode(Goodbye("f" * 32)))
        await asyncio.wait_for(stopped.wait(), 2)
        await wait_until(lambda: a.statistics().calls_in_flight == 0)


async def test_a_peer_flooding_a_stream_beyond_its_credit_is_stopped(zctx: RawSockets) -> None:
    sock = zctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    async def rogue() -> None:
        rid, frame = await sock.recv_multipart()
        request = codec.decode(frame)
        assert isinstance(request, Hello)
        reply = Welcome(request.ref, "e" * 32, "rogue", "test", 1, 1, 1, {"numbers": "1"})
        await sock.send_multipart([rid, codec.encode(reply)])
        rid, frame = await sock.recv_multipart()
        call = codec.decode(frame)
        assert isinstance(call, Call)
        for i in range(call.credit + 10):  # ignores the credit it was given
            await sock.send_multipart(
                [rid, codec.encode(mesh._wire.codec.StreamItem(call.call_id, i))]
            )
        while True:  # grants (CREDIT) may come first; then the caller must say stop
            rid, frame = await sock.recv_multipart()
            if isinstance(codec.decode(frame), mesh._wire.codec.Cancel):
                break

    served = asyncio.create_task(rogue())
    async with node("a") as a:
        await a.connect(f"tcp://127.0.0.1:{port}")
        with pytest.raises(mesh.ProtocolError, match="beyond its credit"):
            async with a.stream("numbers.all") as items:
                # Consume nothing until the flood is in: items taken meanwhile would grant
                # credit and the flood might then fit in it (timing-dependent).
                await wait_until(lambda: a.statistics().messages_in >= 1 + 64 + 10)
                async for _ in items:
                    pass
        await asyncio.wait_for(served, 5)


async def test_a_service_too_large_to_list_is_refused_at_registration() -> None:
    limits = mesh.Limits(max_record_size=2_000)

    def documented(text: str) -> str:
        return text

    documented.__doc__ = "Explains itself at length. " * 60  # about 1,600 bytes listed

    async with node("a", limits=limits) as a:
        a.add_service(documented, name="wordy.first")
        with pytest.raises(mesh.RecordTooLarge, match=r"wordy2 \(\d+ bytes\)") as caught:
            a.add_service(documented, name="wordy2.second")
        assert caught.value.size > caught.value.limit == 2_000
        assert set(a.local_services) == {"wordy"}  # the refused one is not half-registered
        listing = a.listing()
        assert listing.size() <= 2_000
        assert listing.addresses["rpc"] == a.address  # what peers will dial
        assert [m.name for m in listing.services[0].methods] == ["first"]
        assert await a.call("wordy.first", "still here") == "still here"
