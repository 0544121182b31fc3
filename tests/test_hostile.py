"""Hostile input against a running node with security on (a member gone bad, and
outsiders): after each attack the node still serves calls and its counters show it."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

import mesh
from mesh._io.security import Security
from mesh._wire.codec import (
    Call,
    Codec,
    Credit,
    Error,
    Hello,
    Kind,
    Reply,
    StreamEnd,
    StreamItem,
    Welcome,
)
from tests.waiting import wait_until

codec = Codec()
LIMIT = 64 * 1024


@dataclass
class Rig:
    """A node offering echo and a slow service, a member node calling it, raw sockets."""

    node: mesh.Node
    member: mesh.Node
    secret: Path
    context: zmq.asyncio.Context
    sockets: list[zmq.asyncio.Socket]

    def raw(self, kind: int, *, secure: bool = True) -> zmq.asyncio.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if secure:
            Security(secret_file=self.secret).apply(
                sock, "router" if kind == zmq.ROUTER else "dealer", None
            )
        self.sockets.append(sock)
        return sock

    async def member_dealer(self) -> zmq.asyncio.Socket:
        """A raw DEALER that holds the secret and has said HELLO."""
        sock = self.raw(zmq.DEALER)
        sock.connect(self.node.address)
        await sock.send(codec.encode(Hello(1, "f" * 32, "rogue", "test", 1, 1)))
        answer = codec.decode(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(answer, Welcome)
        return sock

    async def still_serves(self) -> None:
        assert await self.member.call("echo.say", "ok", timeout=5) == "ok"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    secret = mesh.write_secret(tmp_path / "mesh.secret")
    limits = mesh.Limits(max_message_size=LIMIT, max_depth=16, max_collection=1000,
                         max_calls_per_peer=3, max_stream_credit=8)  # fmt: skip
    config = mesh.Config(mesh="test", profile="test", secret_file=secret, limits=limits)
    context = zmq.asyncio.Context()
    sockets: list[zmq.asyncio.Socket] = []
    try:
        async with mesh.Node(config, name="target") as node, mesh.Node(config, name="m") as m:

            async def say(value: Any) -> Any:
                return value

            async def hold(seconds: float) -> float:
                await asyncio.sleep(seconds)
                return seconds

            async def count(n: int) -> AsyncIterator[int]:
                for i in range(n):
                    yield i

            node.add_service(say, name="echo.say")
            node.add_service(hold, name="slow.hold")
            node.add_service(count, name="numbers.count")
            await m.connect(node.address)
            yield Rig(node, m, secret, context, sockets)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


async def test_outsider_without_the_secret(rig: Rig) -> None:
    for secure in (False, True):
        sock = rig.raw(zmq.DEALER, secure=False)
        if secure:  # a CURVE client, but with keys of its own
            public, secret = zmq.curve_keypair()
            sock.curve_serverkey = Security(secret_file=rig.secret)._keys.server_public
            sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.connect(rig.node.address)
        await sock.send(codec.encode(Hello(1, "f" * 32, "outsider", "test", 1, 1)))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sock.recv(), 0.5)  # no answer, not even an error
    stats = rig.node.statistics()
    assert stats.transport_handshake_failures >= 2
    assert stats.security_refused >= 1
    await rig.still_serves()


async def test_random_and_truncated_frames(rig: Rig) -> None:
    sock = await rig.member_dealer()
    rng = random.Random(7)
    valid = codec.encode(Call(9, "echo.say", ["x" * 50]))
    frames = [os.urandom(rng.randrange(0, 300)) for _ in range(200)]
    frames += [valid[:cut] for cut in range(len(valid))]
    for frame in frames:
        await sock.send(frame)
    for _ in frames:  # every one answered with a protocol error, none crash the node
        answer = codec.decode(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(answer, Error)
        assert answer.code == "protocol"
    assert rig.node.statistics().protocol_errors >= len(frames)
    await rig.still_serves()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"\x00" * (LIMIT + 100), "exceeds the limit"),
        (msgpack.packb([9, int(Kind.CALL), 1, "echo.say"]), "protocol version 9"),
        (msgpack.packb([1, 77, 1]), "unknown message kind 77"),
        (b"\x94\x01\x04\x01" + b"\x91" * 50_000 + b"\x00", "not a valid msgpack frame"),
        (b"\x94\x01\x04\x01" + b"\x91" * 20 + b"\x00", "nesting deeper than 16"),
        (b"\x93\x01\x04\x01\xdd\xff\xff\xff\xff", "not a valid msgpack frame"),  # 4G items
        (b"\x93\x01\x04\x01\xdf\xff\xff\xff\xff", "not a valid msgpack frame"),  # 4G pairs
        (b"\x93\x01\x04\x01\xdb\xff\xff\xff\xff", "not a valid msgpack frame"),  # 4 GB str
        (b"\x93\x01\x04\x01\xc6\xff\xff\xff\xff", "not a valid msgpack frame"),  # 4 GB bin
        (msgpack.packb([1, int(Kind.REPLY), 1, list(range(1001))]), "not a valid msgpack"),
    ],
    ids=["oversized", "version", "kind", "deep", "depth", "array", "map", "str", "bin", "wide"],
)
async def test_malformed_and_bomb_frames(rig: Rig, frame: bytes, match: str) -> None:
    sock = await rig.member_dealer()
    await sock.send(frame)
    answer = codec.decode(await asyncio.wait_for(sock.recv(), 5))
    assert isinstance(answer, Error)
    assert answer.code == "protocol"
    assert match in answer.message
    assert rig.node.statistics().protocol_errors == 1
    await rig.still_serves()


async def test_far_oversized_frame_drops_only_that_connection(rig: Rig) -> None:
    sock = await rig.member_dealer()
    await sock.send(b"\x00" * (3 * LIMIT))  # over the socket backstop: libzmq drops it
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sock.recv(), 0.3)
    await rig.still_serves()


async def rogue_provider(rig: Rig) -> tuple[zmq.asyncio.Socket, bytes]:
    """A ROUTER holding the secret that the target node connects to; returns its
    socket and the target's routing id after the handshake."""
    sock = rig.raw(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    connecting = asyncio.create_task(rig.node.connect(f"tcp://127.0.0.1:{port}"))
    routing_id, frame = await asyncio.wait_for(sock.recv_multipart(), 5)
    hello = codec.decode(frame)
    assert isinstance(hello, Hello)
    welcome = Welcome(hello.ref, "e" * 32, "rogue", "test", 1, 1, 1, {"echo": "1"})
    await sock.send_multipart([routing_id, codec.encode(welcome)])
    await connecting
    return sock, routing_id


async def test_forged_answers_to_calls_never_made(rig: Rig) -> None:
    sock, routing_id = await rogue_provider(rig)
    forged = [Reply(123, "x"), Error(456, "remote", "boom"), StreamItem(7, 1), StreamEnd(8)]
    for message in forged:
        await sock.send_multipart([routing_id, codec.encode(message)])
    await wait_until(lambda: rig.node.statistics().dropped_answers == len(forged))
    await rig.still_serves()


async def test_answers_for_another_nodes_calls_are_ignored(rig: Rig) -> None:
    # The target calls the member (an honest provider) while the rogue, also connected
    # to the target, sends replies for every call id the target could be using.
    sock, routing_id = await rogue_provider(rig)
    gate = asyncio.Event()

    async def slow_answer() -> str:
        await gate.wait()
        return "honest"

    rig.member.add_service(slow_answer, name="honest.answer")
    await rig.node.connect(rig.member.address)
    call = asyncio.create_task(rig.node.call("honest.answer"))
    await asyncio.sleep(0.05)
    for call_id in range(1, 50):
        await sock.send_multipart([routing_id, codec.encode(Reply(call_id, "forged"))])
    await wait_until(lambda: rig.node.statistics().dropped_answers >= 49)
    gate.set()
    assert await call == "honest"


async def test_too_many_calls_from_one_peer(rig: Rig) -> None:
    sock = await rig.member_dealer()
    for call_id in range(1, 5):  # the limit is 3 per peer
        await sock.send(codec.encode(Call(call_id, "slow.hold", [0.3], {}, 5000)))
    refused = codec.decode(await asyncio.wait_for(sock.recv(), 5))
    assert isinstance(refused, Error)
    assert (refused.ref, refused.code) == (4, "overloaded")
    assert "max_calls_per_peer" in refused.message
    answers = [codec.decode(await asyncio.wait_for(sock.recv(), 5)) for _ in range(3)]
    assert sorted(a.call_id for a in answers if isinstance(a, Reply)) == [1, 2, 3]
    assert rig.node.statistics().limit_violations == 1
    await rig.still_serves()  # another peer is not affected


async def test_stream_credit_is_capped(rig: Rig) -> None:
    sock = await rig.member_dealer()
    await sock.send(codec.encode(Call(1, "numbers.count", [100], {}, None, credit=10**6)))
    items = []
    while len(items) < 8:  # the cap is 8 items in flight
        message = codec.decode(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(message, StreamItem)
        items.append(message.item)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sock.recv(), 0.2)  # paused at the cap
    await sock.send(codec.encode(Credit(1, 10**9)))  # a flood of credit: capped again
    for _ in range(8):
        message = codec.decode(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(message, StreamItem)
    assert rig.node.statistics().limit_violations == 2
    await rig.still_serves()
