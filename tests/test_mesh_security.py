"""Gossip with security on: outsiders stay out; forged gossip from an insider changes
nothing a user relies on, and is counted (in-process, 127.0.0.1, shared-secret CURVE;
per-node keys with zeroconf on loopback)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgpack
import pytest

from mesh import Limits, Node, write_keypair, write_secret
from mesh._core.membership import Gossip, Member, Status
from mesh._io.security import Security
from mesh._io.transport import Transport
from mesh._wire.gossip import GossipCodec, GossipMessage
from tests.test_mesh import Calc, eventually, listed_by_all, statuses


@asynccontextmanager
async def secured_mesh(secret: Path, count: int = 3) -> AsyncIterator[list[Node]]:
    mesh = f"s-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(count):
            seeds = (nodes[0].address,) if nodes else ()
            node = Node(name=f"n{i}", mesh=mesh, profile="test", secret_file=secret, seeds=seeds)
            nodes.append(await stack.enter_async_context(node))
        await eventually(
            lambda: listed_by_all(nodes, {n.name for n in nodes}), 5.0, "secured mesh formed"
        )
        yield nodes


@asynccontextmanager
async def forger(secret: Path, target: Node) -> AsyncIterator[tuple[Transport, object]]:
    """A raw DEALER holding the mesh secret (an insider) connected to ``target``'s gossip."""
    transport = Transport(Limits(), Security(secret_file=secret))
    pump = transport.dealer(
        target.gossip_address, secrets.token_bytes(8), lambda frames: None, send_timeout=1.0
    )
    try:
        yield transport, pump
    finally:
        await transport.aclose()


def send(pump: object, frame: bytes) -> None:
    pump.send([frame])  # type: ignore[attr-defined]


async def test_an_outsider_with_another_secret_never_joins(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "mesh.secret")
    other = write_secret(tmp_path / "other.secret")
    async with secured_mesh(secret) as nodes:
        refused_before = nodes[0].statistics().transport_handshake_failures
        outsider = Node(
            name="outsider", mesh=nodes[0].mesh, profile="test", secret_file=other,
            seeds=(nodes[0].address,),
        )  # fmt: skip
        async with outsider:
            await asyncio.sleep(1.0)
            assert [m.name for m in outsider.members()] == ["outsider"]
            for node in nodes:
                assert "outsider" not in statuses(node)
        assert nodes[0].statistics().transport_handshake_failures > refused_before


async def test_per_node_keys_find_each_other_by_zeroconf_and_ignore_the_untrusted(
    tmp_path: Path,
) -> None:
    """With per-node keys, zeroconf joins the nodes whose key is in ``allowed/`` (each
    has its own key) and ignores, and counts, one whose key is not."""
    trusted = [tmp_path / f"k{i}" for i in range(3)]
    for directory in trusted:
        write_keypair(directory)
    for directory in trusted:
        for other in trusted:
            (directory / "allowed" / f"{other.name}.key").write_bytes(
                (other / "node.key").read_bytes()
            )
    stranger = tmp_path / "stranger"
    write_keypair(stranger)
    settings = dict(
        mesh=f"k-{secrets.token_hex(4)}", profile="test", discovery=True, interfaces=("127.0.0.1",)
    )
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Node(name=f"k{i}", keys_dir=d, **settings))
            for i, d in enumerate(trusted)
        ]
        outsider = await stack.enter_async_context(
            Node(name="stranger", keys_dir=stranger, **settings)
        )
        await eventually(
            lambda: listed_by_all(nodes, {"k0", "k1", "k2"}), 10.0, "found by zeroconf"
        )
        await eventually(lambda: wrong_keys(nodes[0]) >= 1, 5.0, "the stranger counted")
        assert [m.name for m in outsider.members()] == ["stranger"]
        assert all("stranger" not in statuses(n) for n in nodes)


async def test_zeroconf_finds_a_node_of_another_secret_and_gives_up_on_it(
    tmp_path: Path,
) -> None:
    """Shared-secret TXT records carry no key: an outsider of the same mesh name is
    found, its CURVE handshake fails (counted), and its gossip socket is let go."""
    secret = write_secret(tmp_path / "mesh.secret")
    other = write_secret(tmp_path / "other.secret")
    settings = dict(
        mesh=f"z-{secrets.token_hex(4)}", profile="test", discovery=True, interfaces=("127.0.0.1",)
    )
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(Node(name=f"z{i}", secret_file=secret, **settings))
            for i in range(2)
        ]
        outsider = await stack.enter_async_context(
            Node(name="outsider", secret_file=other, **settings)
        )
        await eventually(lambda: listed_by_all(nodes, {"z0", "z1"}), 10.0, "found by zeroconf")
        insider = nodes[0]

        def failures() -> int:
            gossip = insider.statistics().gossip
            assert gossip is not None
            return gossip.handshake_failures

        await eventually(lambda: failures() >= 1, 5.0, "the failed handshake counted")
        gossiper = insider._gossiper
        assert gossiper is not None
        await eventually(
            lambda: outsider.gossip_address not in gossiper._dealers, 2.0, "its socket let go"
        )
        assert "outsider" not in statuses(insider)
        assert [m.name for m in outsider.members()] == ["outsider"]


def wrong_keys(node: Node) -> int:
    discovery = node.statistics().discovery
    assert discovery is not None
    return discovery.wrong_key


async def test_forged_gossip_changes_nothing_and_is_counted(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "mesh.secret")
    async with secured_mesh(secret) as nodes:
        target, victim = nodes[0], nodes[1]
        victim.add_service(Calc())
        await nodes[2].wait_for_service("calc", timeout=5.0)
        codec = GossipCodec()
        names = {n.name for n in nodes}
        async with forger(secret, target) as (_, pump):
            # 1. An incarnation that is not an unsigned 64-bit integer: refused by the
            # codec and counted; one near 2**64 (no number left to refute with): refused
            # by membership as implausible and counted.
            gossiper = target._gossiper
            assert gossiper is not None
            errors = gossiper.statistics().protocol_errors
            me = victim._gossiper.membership.me  # type: ignore[union-attr]
            bad = [me.id, me.name, me.address, 1.8e19, 2, "f" * 32, 0, 0]
            send(pump, msgpack.packb([1, 20, "f" * 32, [bad]]))
            await eventually(
                lambda: gossiper.statistics().protocol_errors > errors, 2.0, "the float counted"
            )
            huge = me._replace(incarnation=2**64 - 1, status=Status.DEAD, by="f" * 32)
            send(pump, codec.encode(Gossip("f" * 32, (huge,))))
            await eventually(
                lambda: gossiper.membership.statistics.implausible >= 1, 2.0, "the jump counted"
            )
            assert gossiper.membership.get(me.id).status is Status.ALIVE  # type: ignore[union-attr]
            # 2. A member that exists only in gossip (no process, no record anywhere).
            ghost = Member(secrets.token_hex(16), "ghost", "tcp://127.0.0.1:9")
            forged: GossipMessage = Gossip("f" * 32, (ghost,))
            send(pump, codec.encode(forged))
            # 3. A death of a live member, at its current incarnation.
            dead = me._replace(status=Status.DEAD, by="f" * 32)
            send(pump, codec.encode(Gossip("f" * 32, (dead,))))
            await asyncio.sleep(0.05)
        # The victim refutes (a new incarnation), and every node lists it alive again.
        await eventually(
            lambda: victim._gossiper.membership.statistics.refutations >= 1,  # type: ignore[union-attr]
            2.0,
            "the forged death refuted",
        )
        await eventually(
            lambda: all(statuses(n).get("n1") == "alive" for n in nodes), 2.0, "victim alive"
        )
        # The ghost is probed, fails, is declared dead, and is never listed anywhere.
        await eventually(
            lambda: all(
                (g := n._gossiper.membership.get(ghost.id)) is None or not g.live  # type: ignore[union-attr]
                for n in nodes
            ),
            5.0,
            "the ghost dead or gone",
        )
        for node in nodes:
            assert set(statuses(node)) == names
            assert statuses(node)["n1"] == "alive"
        # A node that took the forged death dropped the victim's record: it pulls it again.
        await nodes[2].wait_for_service("calc", timeout=5.0)
        assert await nodes[2].call("calc.add", 1, 2) == 3


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x93\x01\x10", msgpack.packb([1, 99, "x"])])
async def test_malformed_gossip_frames_are_counted_and_the_node_keeps_serving(
    tmp_path: Path, frame: bytes
) -> None:
    secret = write_secret(tmp_path / "mesh.secret")
    async with secured_mesh(secret, count=2) as nodes:
        gossiper = nodes[0]._gossiper
        assert gossiper is not None
        before = gossiper.statistics().protocol_errors
        async with forger(secret, nodes[0]) as (_, pump):
            send(pump, frame)
            await eventually(lambda: gossiper.statistics().protocol_errors > before, 2.0, "counted")
        await asyncio.sleep(0.2)
        assert statuses(nodes[0]) == {"n0": "alive", "n1": "alive"}
