"""The blocking API against node programs in other processes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import zmq

import mesh
from mesh._io import transport as _transport
from mesh._wire.codec import Codec, Hello, Welcome
from tests.programs import node_env, node_program, read_line


@pytest.fixture(scope="module")
def calc_address() -> Iterator[str]:
    with node_program("nodes.calc", node_env(MESH_NODE_NAME="calc")) as proc:
        yield read_line(proc)["address"]


@pytest.fixture
def client(calc_address: str) -> Iterator[mesh.sync.Client]:
    with mesh.sync.connect(calc_address, mesh="test", profile="test") as c:
        yield c


def test_blocking_calls_return_results(client: mesh.sync.Client) -> None:
    assert client.peer.name == "calc"
    assert client.peer.services == {"calc": "1.0.0"}
    assert client.call("calc.add", 1, 2) == 3
    assert client.call("calc.mul", a=6, b=7) == 42


def test_blocking_errors_are_the_async_errors(client: mesh.sync.Client) -> None:
    with pytest.raises(mesh.RemoteError, match="division by zero") as info:
        client.call("calc.div", 1, 0)
    assert info.value.remote_type == "ZeroDivisionError"
    assert info.value.peer == "calc"
    with pytest.raises(mesh.UnknownMethod, match="it has: add"):
        client.call("calc.pow", 2, 3)
    with pytest.raises(mesh.NoProvider):
        client.call("weather.today")
    started = time.monotonic()
    with pytest.raises(mesh.CallTimeout):
        client.call("calc.slow", 5, timeout=0.2)
    assert time.monotonic() - started < 1.0
    assert client.call("calc.add", 2, 2) == 4  # the late answer is not mistaken for this one


def test_the_blocking_client_heartbeats_its_connection(client: mesh.sync.Client) -> None:
    """As a node's DEALERs do (tests/test_events_lan.py shows why): a connection stuck
    behind the kernel's retransmissions after a link down and up is dropped and made
    again within seconds, instead of holding the script's calls."""
    sock = client._dealer._sock
    assert sock.getsockopt(zmq.HEARTBEAT_IVL) == _transport.HEARTBEAT_IVL
    assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == _transport.HEARTBEAT_TIMEOUT
    assert sock.getsockopt(zmq.HEARTBEAT_TTL) == _transport.HEARTBEAT_TTL
    assert sock.getsockopt(zmq.CONNECT_TIMEOUT) == _transport.CONNECT_TIMEOUT
    assert client.call("calc.add", 1, 2) == 3


def test_blocking_streams(client: mesh.sync.Client) -> None:
    with client.stream("calc.count", 500) as items:
        assert list(items) == list(range(500))
    with client.stream("calc.count", 10**9) as items:
        for x in items:
            if x == 100:
                break
    assert client.call("calc.add", 1, 1) == 2  # the stopped stream does not get in the way
    with client.stream("calc.squares", 4) as items:
        assert list(items) == [0, 1, 4, 9]


def test_blocking_connect_errors(calc_address: str) -> None:
    with pytest.raises(mesh.WrongMesh, match="belongs to mesh 'test', not 'other'"):
        mesh.sync.connect(calc_address, mesh="other", profile="test")
    with pytest.raises(mesh.ConnectTimeout):
        mesh.sync.connect("tcp://127.0.0.1:9", mesh="test", timeout=0.3)
    with pytest.raises(mesh.ConnectError, match="not a tcp://host:port"):
        mesh.sync.connect("localhost:80", mesh="test")


@pytest.mark.timeout(30)
async def test_a_closed_client_says_goodbye() -> None:
    async with mesh.Node(mesh.Config(name="n", mesh="test", profile="test")) as n:
        client = await asyncio.to_thread(mesh.sync.connect, n.address, mesh="test")
        assert client.id in n.peers
        await asyncio.to_thread(client.close)
        deadline = time.monotonic() + 2
        while client.id in n.peers and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert client.id not in n.peers


async def test_a_client_whose_session_was_ended_shakes_hands_again() -> None:
    """A node that ends a blocking client's session (it declared it gone) refuses its next
    call with ``no_session`` before running it: the client shakes hands again on the same
    connection and sends the call once more, and the user sees the call succeed."""
    runs: list[int] = []

    async def count() -> int:
        runs.append(1)
        return len(runs)

    async with mesh.Node(mesh.Config(name="n", mesh="test", profile="test")) as n:
        n.add_service(count, name="counter.count")
        client = await asyncio.to_thread(mesh.sync.connect, n.address, mesh="test")
        try:
            assert await asyncio.to_thread(client.call, "counter.count") == 1
            n._caller_gone(client.id)  # what the node does when it declares a caller dead
            assert await asyncio.to_thread(client.call, "counter.count", timeout=2.0) == 2
            assert len(runs) == 2  # the refused call never ran
            assert await asyncio.to_thread(client.call, "counter.count") == 3
        finally:
            await asyncio.to_thread(client.close)


@pytest.fixture
def silent_node() -> Iterator[str]:
    """A ROUTER that answers HELLO with a WELCOME, then answers nothing at all."""
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    codec, done = Codec(), threading.Event()

    def serve() -> None:
        while not done.is_set():
            if sock.poll(50):
                routing_id, frame = sock.recv_multipart()
                request = codec.decode(frame)
                if isinstance(request, Hello):
                    answer = Welcome(request.ref, "e" * 32, "silent", "test", 1, 1, 1)
                    sock.send_multipart([routing_id, codec.encode(answer)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        done.set()
        thread.join(2)
        sock.close()
        context.term()


def test_each_blocking_call_waits_its_own_timeout(silent_node: str) -> None:
    """The wait of one call (the socket's receive timeout) is not the next call's: a
    short call after a long one still gives up at its own deadline."""
    with mesh.sync.connect(silent_node, mesh="test", profile="test") as client:
        for timeout in (0.6, 0.1, 0.4):
            started = time.monotonic()
            with pytest.raises(mesh.CallTimeout):
                client.call("calc.add", 1, 2, timeout=timeout)
            assert timeout <= time.monotonic() - started < timeout + 0.5
