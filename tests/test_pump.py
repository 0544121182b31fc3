"""The socket pump (mesh._io.transport.Pump): what a handler sends while the pump reads a
batch of messages is sent at the batch's end and after its first message, in the
order it was sent, and nothing of it is lost, whether messages come one at a time or
in bursts of hundreds from several peers."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from mesh import Limits
from mesh._io.transport import READ_BATCH, Pump, Transport

BURST = 3 * READ_BATCH + 7  # more than one full batch, and a partial one


async def _echo_router(transport: Transport) -> tuple[Pump, str]:
    """A ROUTER pump whose handler answers every message at once, twice (two sends per
    message, to check that order holds within a batch too)."""
    pump: Pump | None = None

    def answer(frames: list[bytes]) -> None:
        assert pump is not None
        routing_id, body = frames
        pump.send([routing_id, body + b"/1"])
        pump.send([routing_id, body + b"/2"])

    pump, port = transport.router("127.0.0.1", 0, answer)
    return pump, f"tcp://127.0.0.1:{port}"


def _dealer(context: zmq.asyncio.Context, address: str, name: bytes) -> zmq.asyncio.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, name)
    sock.setsockopt(zmq.SNDHWM, 10 * BURST)
    sock.setsockopt(zmq.RCVHWM, 10 * BURST)
    sock.connect(address)
    return sock


async def _replies(sock: zmq.asyncio.Socket, count: int) -> list[bytes]:
    async with asyncio.timeout(10.0):
        return [await sock.recv() for _ in range(count)]


async def test_answers_sent_during_a_read_batch_all_arrive_in_order() -> None:
    transport = Transport(Limits())
    context = zmq.asyncio.Context()
    try:
        pump, address = await _echo_router(transport)
        peers = [_dealer(context, address, name) for name in (b"a", b"b", b"c")]
        # Bursts from three peers at once: the pump reads them in full batches.
        for peer in peers:
            for i in range(BURST):
                await peer.send(peer.routing_id + b"%d" % i)
        for peer in peers:
            expected = [
                peer.routing_id + b"%d/%d" % (i, part) for i in range(BURST) for part in (1, 2)
            ]
            assert await _replies(peer, 2 * BURST) == expected
        # Then one message at a time (a quiet socket: one message a wake-up).
        quiet = peers[0]
        for i in range(20):
            await quiet.send(b"q%d" % i)
            assert await _replies(quiet, 2) == [b"q%d/1" % i, b"q%d/2" % i]
        stats = pump.statistics()
        assert stats.messages_in == 3 * BURST + 20
        assert stats.messages_out == 2 * stats.messages_in
        assert stats.dropped_out == 0
        for peer in peers:
            peer.close(linger=0)
    finally:
        context.term()
        await transport.aclose()


async def test_a_handler_that_raises_loses_no_answer_sent_before_it_raised() -> None:
    transport = Transport(Limits())
    context = zmq.asyncio.Context()
    try:
        pump: Pump | None = None

        def answer_then_fail(frames: list[bytes]) -> None:
            assert pump is not None
            pump.send(frames)
            if frames[1].startswith(b"bad"):
                raise RuntimeError("a handler bug")

        pump, port = transport.router("127.0.0.1", 0, answer_then_fail)
        peer = _dealer(context, f"tcp://127.0.0.1:{port}", b"p")
        bodies = [b"bad%d" % i if i % 3 == 0 else b"ok%d" % i for i in range(BURST)]
        for body in bodies:
            await peer.send(body)
        assert await _replies(peer, BURST) == bodies  # the pump kept reading, in order
        peer.close(linger=0)
    finally:
        context.term()
        await transport.aclose()
