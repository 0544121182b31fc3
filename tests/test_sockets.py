"""Sockets a stranger cannot exhaust, and a socket limit that never stops gossip.

Fake zeroconf sightings (announced addresses that refuse, or accept TCP and fail the
handshake) cost a bounded number of sockets, each closed when its attempt fails; a
node holds 1,500 gossip peers (far past libzmq's default of 1,023 sockets); at the
context's socket limit gossip keeps ticking, counts the failures, logs them rarely,
resumes once sockets are free, and a node program still exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import mesh
from mesh._core.membership import Ack, Member, Ping, Sync
from mesh._io.discovery import Sighting
from mesh._wire.gossip import GossipCodec
from tests.programs import node_env, node_program, read_line, spawner, stop
from tests.waiting import wait_until

# -- the pure part: join attempts ---------------------------------------------------------


def test_join_attempts_are_bounded_and_back_off() -> None:
    from mesh._core.joins import JoinAttempts

    joins = JoinAttempts(2, timeout=5.0, initial=1.0, most=8.0, max_backoffs=3)
    assert joins.begin("a", 0.0)
    assert joins.begin("b", 0.0)
    assert joins.begin("a", 0.1)  # the same attempt again: nothing more in flight
    assert not joins.begin("c", 0.1)  # two in flight already
    assert joins.statistics.too_many == 1
    assert joins.failed("a", 1.0)
    assert not joins.failed("a", 1.0)
    assert not joins.begin("a", 1.5)  # backing off for 1 s
    waits, at = [], 1.0
    for _ in range(5):  # each failure in a row doubles the wait, up to `most`
        failed_at = at
        while not joins.begin("a", at):
            at += 0.25
        waits.append(at - failed_at)
        joins.failed("a", at)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert joins.confirmed("b")
    assert len(joins) == 0
    for address in "defg":  # the backoff table keeps three addresses
        joins.begin(address, 1_000.0)
        joins.failed(address, 1_000.0)
    assert joins.backing_off == 3
    assert joins.begin("d", 1_000.0)  # the oldest was forgotten
    assert joins.expired(1_004.9) == []
    assert joins.expired(1_005.0) == ["d"]
    assert joins.next_deadline() == 1_005.0


# -- helpers -------------------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on (bound, then closed): connecting to them is refused."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _fake(i: int, mesh_name: str, port: int) -> Sighting:
    address = f"tcp://127.0.0.1:{port}"
    return Sighting(
        node_id=f"{0xFA4E << 100 | i:032x}",
        name=f"fake{i}",
        mesh=mesh_name,
        protocol=(1, 1),
        rpc=address,
        gossip=address,
        pub=address,
    )


@contextlib.asynccontextmanager
async def _garbage_server(count: int) -> AsyncIterator[list[int]]:
    """``count`` TCP listeners that accept, send bytes that are not ZMTP, and close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 nonsense\r\n\r\n" * 4)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(answer, "127.0.0.1", 0) for _ in range(count)]
    try:
        yield [s.sockets[0].getsockname()[1] for s in servers]
    finally:
        for s in servers:
            s.close()
            await s.wait_closed()


def _dealers(node: mesh.Node) -> int:
    gossip = node.statistics().gossip
    return 0 if gossip is None else gossip.dealers


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- 6: fake sightings ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "secret"])
@pytest.mark.timeout(60)
async def test_fake_sightings_cost_bounded_sockets(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """600 fake announcements (half refuse, half accept TCP and fail the handshake): the
    node's sockets stay bounded and come back to where they were, nothing is logged as
    an error, and a real newcomer is listed as fast as without them."""
    caplog.set_level(logging.INFO)
    settings: dict[str, Any] = {"mesh": f"fakes-{mode}", "profile": "test", "discovery": False}
    if mode == "secret":
        settings["secret_file"] = mesh.write_secret(tmp_path / "mesh.secret")
    limits = mesh.Limits(max_pending_joins=64)
    async with (
        _garbage_server(300) as garbage,
        mesh.Node(name="victim", limits=limits, **settings) as node,
    ):
        base = node.statistics().sockets
        fds = _fds()
        ports = _free_ports(300) + garbage
        fakes = [_fake(i, node.mesh, port) for i, port in enumerate(ports)]
        peak = 0
        started = time.monotonic()
        for _round in range(3):  # zeroconf repeats announcements: so do we
            for batch in range(0, len(fakes), 50):
                for fake in fakes[batch : batch + 50]:
                    node._on_sighting(fake)
                peak = max(peak, node.statistics().sockets)
                await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        await wait_until(lambda: node.statistics().sockets == base, timeout=15)
        stats = node.statistics()
        assert stats.gossip is not None
        assert stats.gossip.joins is not None
        joins = stats.gossip.joins
        print(
            f"\n{mode}: {len(fakes)} fakes x3 in {elapsed:.2f} s: sockets {base} ->"
            f" peak {peak} -> {stats.sockets}; fds {fds} -> {_fds()}; joins {joins}"
        )
        # 64 attempts in flight at most, 3 sockets each (a DEALER and its monitor pair)
        assert peak <= base + 2 * 3 * 64  # and those whose close is under way
        assert joins.started <= len(fakes) * 3
        assert joins.failed >= 0.9 * joins.started
        assert joins.backing_off > 0 or joins.too_many > 0
        assert stats.socket_failures == 0
        assert _fds() <= fds + 50  # loosely: sockets closed, descriptors too
        assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]

        # a real member, found by a sighting among more fake ones, is listed at once
        async with mesh.Node(name="newcomer", **settings) as newcomer:
            more = [_fake(1_000 + i, node.mesh, p) for i, p in enumerate(_free_ports(100))]
            for fake in more[:50]:
                node._on_sighting(fake)
            node._on_sighting(newcomer._sighting())
            for fake in more[50:]:
                node._on_sighting(fake)
            t0 = time.monotonic()
            await wait_until(lambda: any(m.name == "newcomer" for m in node.members()), 3.0)
            print(f"newcomer listed after {time.monotonic() - t0:.3f} s")


# -- 6: 1,500 gossip peers -------------------------------------------------------------------


class FakePeers:
    """``count`` gossip peers answered by one thread: a ROUTER each (where the node's
    DEALERs connect) and one DEALER to the node's gossip ROUTER (their answers)."""

    def __init__(self, count: int, node_gossip: str) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.context.set(zmq.MAX_SOCKETS, count + 64)
        self.codec = GossipCodec()
        self.routers: list[zmq.Socket[bytes]] = []
        self.ids = [f"{0xB0B << 100 | i:032x}" for i in range(count)]
        self.addresses: list[str] = []
        for _ in range(count):
            sock = self.context.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind("tcp://127.0.0.1:*")
            self.routers.append(sock)
            self.addresses.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        self.out = self.context.socket(zmq.DEALER)
        self.out.setsockopt(zmq.LINGER, 0)
        self.out.setsockopt(zmq.SNDHWM, 0)
        self.out.connect(node_gossip)
        self.answered: set[int] = set()  # peers that got the node's Sync reply
        self.pings = 0
        self.undecodable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for i, (id, address) in enumerate(zip(self.ids, self.addresses, strict=True)):
            me = Member(id, f"peer{i}", address)
            self.out.send(self.codec.encode(Sync(id, address, (me,), True)))
        poller = zmq.Poller()
        index = {}
        for i, sock in enumerate(self.routers):
            poller.register(sock, zmq.POLLIN)
            index[sock] = i
        while not self._stop.is_set():
            for sock, _ in poller.poll(50):
                i = index[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        message = self.codec.decode(frames[-1])
                    except mesh.ProtocolError:
                        self.undecodable += 1  # e.g. a catalog message this codec skips
                        continue
                    if isinstance(message, Sync):
                        self.answered.add(i)
                    elif isinstance(message, Ping) and message.target == self.ids[i]:
                        self.pings += 1
                        ack = Ack(message.seq, self.ids[i])
                        self.out.send(self.codec.encode(ack))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for sock in [*self.routers, self.out]:
            sock.close(linger=0)
        self.context.term()


@contextlib.contextmanager
def fake_peers(count: int, node_gossip: str) -> Iterator[FakePeers]:
    peers = FakePeers(count, node_gossip)
    try:
        yield peers
    finally:
        peers.close()


@pytest.mark.parametrize("max_peers", [2_048, 256])
@pytest.mark.timeout(90)
async def test_node_holds_1500_gossip_peers(max_peers: int) -> None:
    """1,500 peers join through one node: it answers every one (a DEALER each, 4,500
    sockets with all held, past libzmq's default of 1,023; or at most ``max_peers``
    DEALERs, least recently used closed first) and keeps all of them alive."""
    count = 1_500
    limits = mesh.Limits(max_gossip_peers=max_peers)
    async with mesh.Node(
        name="big", mesh="big", profile="test", discovery=False, limits=limits
    ) as node:
        with fake_peers(count, node.gossip_address) as peers:
            started = time.monotonic()
            peers.start()
            await wait_until(lambda: len(peers.answered) == count, timeout=40)
            elapsed = time.monotonic() - started
            assert node._gossiper is not None
            membership = node._gossiper.membership
            await wait_until(lambda: membership.live_count() == count + 1, timeout=10)
            stats = node.statistics()
            assert stats.gossip is not None
            assert stats.membership is not None
            probes = stats.membership.probes
            await asyncio.sleep(2.0)  # probing goes on; every peer stays alive
            after = node.statistics()
            assert after.gossip is not None
            assert after.membership is not None
            print(
                f"\n{count} peers answered in {elapsed:.2f} s; sockets {stats.sockets}"
                f" (at most {stats.max_sockets}), dealers {stats.gossip.dealers},"
                f" evicted {after.gossip.dealers_evicted}; probes in 2 s:"
                f" {after.membership.probes - probes}, failed"
                f" {after.membership.probes_failed}, pings answered {peers.pings}"
            )
            assert membership.live_count() == count + 1
            assert after.socket_failures == 0
            assert stats.gossip.dealers <= max_peers
            if max_peers > count:
                assert stats.sockets > 3 * count > 1_023
            else:
                assert after.gossip.dealers_evicted >= count - max_peers
            # Probing goes on. Slowly: answering 1,500 joins sends each the whole table
            # (90 MB in all), the loop stalls, and Lifeguard's awareness stretches the
            # probe interval (by up to 9x) until it recovers.
            assert after.membership.probes - probes >= 2
            assert after.membership.suspicions == 0


# -- 7: at the socket limit ------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_socket_limit_never_stops_gossip(caplog: pytest.LogCaptureFixture) -> None:
    """The node's context full: gossip to new peers fails, is counted and logged once, and
    probing goes on; once sockets are free the new peers are reached again."""
    caplog.set_level(logging.INFO)
    settings: dict[str, Any] = {"mesh": "full", "profile": "test", "discovery": False}
    async with (
        mesh.Node(name="a", **settings) as a,
        mesh.Node(name="b", seeds=(a.address,), **settings) as b,
    ):
        await wait_until(lambda: len(a.members()) == 2, timeout=5)
        assert a._transport is not None
        context = a._transport._context
        filler: list[zmq.Socket[bytes]] = []
        try:
            with pytest.raises(zmq.ZMQError):
                for _ in range(a.statistics().max_sockets + 1):
                    filler.append(context.socket(zmq.PAIR))
            # now two more nodes join through b: a must gossip with them and cannot
            async with (
                mesh.Node(name="c", seeds=(b.address,), **settings) as c,
                mesh.Node(name="d", seeds=(b.address,), **settings) as d,
            ):
                await wait_until(lambda: len(b.members()) == 4, timeout=5)
                before = a.statistics()
                assert before.membership is not None
                await asyncio.sleep(2.0)
                full = a.statistics()
                assert full.membership is not None
                assert full.gossip is not None
                warnings = [r for r in caplog.records if "cannot open a socket" in r.getMessage()]
                print(
                    f"\nat the limit ({full.max_sockets}): socket failures"
                    f" {full.socket_failures}, unreachable {full.gossip.unreachable},"
                    f" probes in 2 s {full.membership.probes - before.membership.probes},"
                    f" warnings logged {len(warnings)}"
                )
                assert full.socket_failures >= 5
                assert full.gossip.unreachable >= 5
                assert full.membership.probes - before.membership.probes >= 13
                assert 1 <= len(warnings) <= 2  # at most once per 10 s
                assert not _errors(caplog), [r.getMessage() for r in _errors(caplog)]
                for sock in filler:
                    sock.close(linger=0)
                filler.clear()
                # a opens DEALERs to c and d again and stops failing
                await wait_until(lambda: _dealers(a) >= 3, timeout=5)
                failures = a.statistics().socket_failures
                await asyncio.sleep(1.0)
                assert a.statistics().socket_failures == failures
                names = {"a", "b", "c", "d"}
                t0 = time.monotonic()
                await wait_until(
                    lambda: {m.name for m in a.members() if m.status == "alive"} == names,
                    timeout=15,
                )
                await wait_until(
                    lambda: all(
                        {m.name for m in n.members() if m.status == "alive"} == names
                        for n in (b, c, d)
                    ),
                    timeout=15,
                )
                print(f"all four alive everywhere {time.monotonic() - t0:.2f} s after")
        finally:
            for sock in filler:
                sock.close(linger=0)


@pytest.mark.timeout(60)
async def test_node_program_at_the_socket_limit_exits_0() -> None:
    """A node program whose context is full (MESH_MAX_SOCKETS) answers gossip it cannot
    send, logs that once, and on SIGTERM exits 0 without a traceback."""
    async with mesh.Node(name="b", mesh="test", profile="test", discovery=False) as b:
        with (
            tempfile.TemporaryFile() as stderr,
            node_program(
                "nodes.echo",
                # the ROUTER (with its monitor), PUB and gossip ROUTER take 5 sockets;
                # a DEALER with its monitor needs 3: none fits
                node_env(MESH_MAX_SOCKETS="6", MESH_LOG_LEVEL="WARNING"),
                spawn=spawner(stderr),
            ) as proc,
        ):
            ready = await asyncio.to_thread(read_line, proc)
            assert ready["event"] == "ready"
            b._gossiper.join([ready["gossip_address"]])  # type: ignore[union-attr]
            await asyncio.sleep(1.5)  # it gets b's Sync and cannot answer
            code = await asyncio.to_thread(stop, proc)
            stderr.seek(0)
            text = stderr.read().decode()
    print(f"\nexit {code}; stderr:\n{text}")
    assert code == 0
    assert "Traceback" not in text
    assert text.count("cannot open a socket") == 1
