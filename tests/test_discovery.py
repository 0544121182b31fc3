"""Discovery: the TXT codec (pure), then zeroconf on 127.0.0.1 and in a namespace LAN.

Zeroconf only ever runs on loopback here or on the ``eth0`` of namespaces the test made.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import BadTypeInNameException
from zeroconf._utils.name import service_type_name
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from mesh._errors import ConfigError, ProtocolError
from mesh._io.discovery import (
    MAX_TXT_ITEM,
    SERVICE_TYPE,
    Discovery,
    DiscoveryStatistics,
    Sighting,
    decode_txt,
    encode_txt,
    instance_name,
)
from mesh._util.keys import encode_key, z85_encode
from tests.lan import Lan
from tests.waiting import wait_until

LOOPBACK = "127.0.0.1"
#: Loopback finding must take well under this (measured ~0.01-0.1 s; 3 s is the margin).
FIND_LIMIT = 3.0


def new_key() -> str:
    return z85_encode(secrets.token_bytes(32))


def sighting(
    name: str = "alpha",
    mesh: str = "test",
    port: int = 5000,
    *,
    host: str = LOOPBACK,
    key: str | None = None,
) -> Sighting:
    return Sighting(
        node_id=secrets.token_hex(16),
        name=name,
        mesh=mesh,
        protocol=(1, 1),
        rpc=f"tcp://{host}:{port}",
        gossip=f"tcp://{host}:{port + 1}",
        pub=f"tcp://{host}:{port + 2}",
        public_key=key,
    )


def wire(s: Sighting) -> dict[bytes, bytes | None]:
    """What zeroconf hands the browser for ``s``."""
    return {k.encode(): v.encode() for k, v in encode_txt(s).items()}


def txt_size(props: dict[bytes, bytes | None]) -> int:
    return sum(1 + len(k) + (0 if v is None else 1 + len(v)) for k, v in props.items())


# --------------------------------------------------------------------------- the codec

hex_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
names = st.text(min_size=1, max_size=63).filter(str.isprintable)
meshes = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
ipv4 = st.ip_addresses(v=4).filter(lambda a: not (a.is_unspecified or a.is_multicast)).map(str)
ipv6 = (
    st.ip_addresses(v=6)
    .filter(lambda a: not (a.is_unspecified or a.is_multicast))
    .map(lambda a: f"[{a}]")
)
hostnames = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not all(c in "0123456789." for c in h))
)
addresses = st.builds("tcp://{}:{}".format, st.one_of(ipv4, ipv6, hostnames), st.integers(1, 65535))
versions = st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda t: tuple(sorted(t)))
keys = st.none() | st.binary(min_size=32, max_size=32).map(z85_encode)
sightings = st.builds(
    Sighting,
    node_id=hex_ids,
    name=names,
    mesh=meshes,
    protocol=versions,
    rpc=addresses,
    gossip=addresses,
    pub=addresses,
    public_key=keys,
)


@given(sightings)
def test_round_trip(s: Sighting) -> None:
    props = encode_txt(s)
    assert all(type(k) is str and type(v) is str for k, v in props.items())
    assert decode_txt({k.encode(): v.encode() for k, v in props.items()}) == s


def test_typical_record_is_small() -> None:
    s = sighting("a-node-with-a-rather-long-name-of-forty-ch", key=new_key(), host="10.77.1.200")
    s = dataclasses.replace(s, rpc="tcp://10.77.1.200:65535")
    props = encode_txt(s)
    assert set(props) == {"id", "n", "m", "v", "r", "g", "p", "k"}
    assert props["v"] == "1-1"
    assert props["id"] == s.node_id
    assert props["k"] == s.public_key
    size = txt_size(wire(s))
    print(f"TXT record of a typical node with a key: {size} bytes")
    assert size < 300
    # The largest name allowed, in 4-byte characters, still fits in one TXT string.
    big = dataclasses.replace(s, name="\U0001f600" * 63, mesh="m" * 63)
    assert max(1 + len(k) + len(v.encode()) for k, v in encode_txt(big).items()) <= MAX_TXT_ITEM
    assert txt_size(wire(big)) < 600


def test_no_key_without_security() -> None:
    s = sighting()
    assert "k" not in encode_txt(s)
    assert decode_txt(wire(s)).public_key is None


def test_unknown_keys_are_ignored() -> None:
    s = sighting(key=new_key())
    props = wire(s)
    props.update({b"x": b"1", b"future": None, b"\xff\xfe": b"\xff", b"v2": b"anything"})
    assert decode_txt(props) == s


def _set(key: str, value: bytes | None) -> Callable[[dict[bytes, bytes | None]], None]:
    def change(props: dict[bytes, bytes | None]) -> None:
        props[key.encode()] = value

    return change


def _drop(key: str) -> Callable[[dict[bytes, bytes | None]], None]:
    def change(props: dict[bytes, bytes | None]) -> None:
        del props[key.encode()]

    return change


BAD_RECORDS = [
    # missing keys, no value, not UTF-8
    *[
        pytest.param(_drop(k), k, "missing", id=f"missing-{k}")
        for k in ["id", "n", "m", "v", "r", "g", "p"]
    ],
    pytest.param(_set("n", None), "n", "no value", id="no-value"),
    pytest.param(_set("n", b"\xff\xfe"), "n", "UTF-8", id="not-utf8"),
    pytest.param(_set("k", None), "k", "no value", id="key-no-value"),
    # node ids
    pytest.param(_set("id", b"abc"), "id", "hex", id="id-short"),
    pytest.param(_set("id", b"A" * 32), "id", "hex", id="id-upper"),
    pytest.param(_set("id", b"g" * 32), "id", "hex", id="id-not-hex"),
    pytest.param(_set("id", b"0" * 33), "id", "hex", id="id-long"),
    # names and meshes
    pytest.param(_set("n", b""), "n", "printable", id="name-empty"),
    pytest.param(_set("n", b"a\nb"), "n", "printable", id="name-newline"),
    pytest.param(_set("n", b"x" * 64), "n", "printable", id="name-long"),
    pytest.param(_set("m", b""), "m", "mesh name", id="mesh-empty"),
    pytest.param(_set("m", b"-lead"), "m", "mesh name", id="mesh-dash"),
    pytest.param(_set("m", b"a b"), "m", "mesh name", id="mesh-space"),
    pytest.param(_set("m", b"m" * 64), "m", "mesh name", id="mesh-long"),
    # versions
    pytest.param(_set("v", b"1"), "v", "min-max", id="versions-one"),
    pytest.param(_set("v", b"2-1"), "v", "min <= max", id="versions-reversed"),
    pytest.param(_set("v", b"0-1"), "v", "1 <= min", id="versions-zero"),
    pytest.param(_set("v", b"1-70000"), "v", "65535", id="versions-big"),
    pytest.param(_set("v", b"-1-1"), "v", "min-max", id="versions-negative"),
    pytest.param(_set("v", b"1-1 "), "v", "min-max", id="versions-space"),
    pytest.param(_set("v", b"\xd9\xa1-1"), "v", "min-max", id="versions-arabic-digit"),
    # addresses
    pytest.param(_set("r", b"127.0.0.1:5000"), "r", "tcp://host:port", id="addr-no-scheme"),
    pytest.param(_set("g", b"udp://127.0.0.1:5000"), "g", "tcp://", id="addr-udp"),
    pytest.param(_set("p", b"tcp://127.0.0.1"), "p", "tcp://host:port", id="addr-no-port"),
    pytest.param(_set("r", b"tcp://127.0.0.1:0"), "r", "port 0", id="addr-port-0"),
    pytest.param(_set("r", b"tcp://127.0.0.1:99999"), "r", "port", id="addr-port-big"),
    pytest.param(_set("g", b"tcp://0.0.0.0:5000"), "g", "wildcard", id="addr-any4"),
    pytest.param(_set("g", b"tcp://*:5000"), "g", "wildcard", id="addr-star"),
    pytest.param(_set("p", b"tcp://[::]:5000"), "p", "wildcard", id="addr-any6"),
    pytest.param(_set("p", b"tcp://[0:0::0]:5000"), "p", "reach", id="addr-any6-long"),
    pytest.param(_set("r", b"tcp://224.0.0.251:5000"), "r", "reach", id="addr-multicast"),
    pytest.param(_set("r", b"tcp://300.1.1.1:5000"), "r", "IPv4", id="addr-bad-ipv4"),
    pytest.param(_set("r", b"tcp://[fe80::1::2]:5000"), "r", "IPv6", id="addr-bad-ipv6"),
    pytest.param(_set("r", b"tcp://bad_host:5000"), "r", "host name", id="addr-underscore"),
    pytest.param(_set("r", b"tcp://-a.b:5000"), "r", "host name", id="addr-label-dash"),
    pytest.param(_set("r", b"tcp://a..b:5000"), "r", "host name", id="addr-empty-label"),
    pytest.param(_set("r", b"tcp://h:5000/x"), "r", "tcp://host:port", id="addr-path"),
    pytest.param(_set("r", b"tcp://h:5000#" + b"k" * 40), "r", "tcp://", id="addr-key"),
    # public keys
    pytest.param(_set("k", b""), "k", "Z85", id="key-empty"),
    pytest.param(_set("k", b"0" * 39), "k", "Z85", id="key-short"),
    pytest.param(_set("k", b"0" * 64), "k", "Z85", id="key-hex"),
    pytest.param(_set("k", b" " * 40), "k", "Z85", id="key-not-z85"),
    pytest.param(_set("k", b"#" * 40), "k", "Z85", id="key-overflow"),
    # sizes
    pytest.param(_set("x", b"y" * 254), "x", "more than 255", id="unknown-too-long"),
    pytest.param(_set("r", b"tcp://" + b"a." * 124 + b"b:1"), "r", "255", id="addr-too-long"),
]


@pytest.mark.parametrize(("change", "key", "words"), BAD_RECORDS)
def test_bad_records(
    change: Callable[[dict[bytes, bytes | None]], None], key: str, words: str
) -> None:
    props = wire(sighting(key=new_key()))
    change(props)
    with pytest.raises(ProtocolError, match=f"key '{key}'") as caught:
        decode_txt(props)
    assert words in str(caught.value)


def test_record_too_long() -> None:
    props = wire(sighting())
    for i in range(8):
        props[f"x{i}".encode()] = b"y" * 200
    with pytest.raises(ProtocolError, match=r"TXT record is \d+ bytes, more than 900"):
        decode_txt(props)


@pytest.mark.parametrize(
    "change",
    [
        {"node_id": "xyz"},
        {"rpc": "tcp://0.0.0.0:1"},
        {"gossip": "tcp://*:1"},
        {"protocol": (2, 1)},
        {"protocol": (1,)},
        {"public_key": "short"},
        {"name": ""},
    ],
)
def test_encode_refuses_what_may_not_be_sent(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        encode_txt(dataclasses.replace(sighting(), **change))


@given(
    st.dictionaries(
        st.sampled_from([b"id", b"n", b"m", b"v", b"r", b"g", b"p", b"k"]) | st.binary(max_size=8),
        st.none() | st.binary(max_size=60),
        max_size=12,
    )
)
def test_decode_any_properties(props: dict[bytes, bytes | None]) -> None:
    """The fuzz rule: a Sighting or ProtocolError, nothing else."""
    with contextlib.suppress(ProtocolError):
        decode_txt(props)


@given(sightings, st.sampled_from(["id", "n", "m", "v", "r", "g", "p"]), st.binary(max_size=40))
def test_decode_one_field_replaced(s: Sighting, key: str, value: bytes) -> None:
    """A bad value is blamed on its own key."""
    props = wire(s)
    props[key.encode()] = value
    error: ProtocolError | None = None
    try:
        decode_txt(props)
    except ProtocolError as exc:
        error = exc
    assert error is None or f"key '{key}'" in str(error)


# --------------------------------------------------------------------------- instance names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpha", "alpha"),
        ("my node.local", "my-node-local"),
        ("  spaced  ", "spaced"),
        ("échecs", "checs"),
        ("___", "___"),
        ("...", "node"),
        ("\u00e9\u00e9", "node"),
        ("a" * 63, "a" * 50),
    ],
)
def test_instance_name(name: str, expected: str) -> None:
    s = dataclasses.replace(sighting(), name=name)
    assert instance_name(s) == f"{expected}-{s.node_id[:12]}"


@given(sightings)
def test_instance_name_limits(s: Sighting) -> None:
    inst = instance_name(s)
    assert inst.isascii()
    assert len(inst.encode()) <= 63
    assert inst.endswith(f"-{s.node_id[:12]}")
    service_type_name(f"{inst}.{SERVICE_TYPE}")  # zeroconf's own strict check
    assert instance_name(dataclasses.replace(s, node_id=secrets.token_hex(16))) != inst


def test_service_type_is_valid() -> None:
    assert service_type_name(SERVICE_TYPE) == SERVICE_TYPE
    with pytest.raises(BadTypeInNameException):
        service_type_name(f"{'x' * 64}.{SERVICE_TYPE}")


# --------------------------------------------------------------------------- construction


def test_interfaces_by_name_and_address() -> None:
    d = Discovery(sighting(), ["lo", LOOPBACK, "127.0.0.1"], lambda s: None)
    assert d.addresses == (LOOPBACK,)
    assert d.statistics == DiscoveryStatistics(found=0, other_mesh=0, wrong_key=0, malformed=0)


@pytest.mark.parametrize(
    ("interfaces", "words"),
    [
        (["no-such-if0"], "no network interface named 'no-such-if0' .*this machine has: .*lo"),
        (["::1"], "IPv6"),
        ([], "non-empty list"),
        ("lo", "non-empty list"),
    ],
)
def test_bad_interfaces(interfaces: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Discovery(sighting(), interfaces, lambda s: None)


def test_bad_own_record_and_key() -> None:
    with pytest.raises(ConfigError, match=r"this node's record is invalid.*'g'.*wildcard"):
        Discovery(dataclasses.replace(sighting(), gossip="tcp://0.0.0.0:1"), [LOOPBACK], print)
    with pytest.raises(ConfigError, match="public_key"):
        Discovery(sighting(), [LOOPBACK], print, public_key="nope")


# --------------------------------------------------------------------------- the filter


def test_consider_filters_and_counts() -> None:
    key = new_key()
    me = sighting("me", key=key)
    found: list[Sighting] = []
    d = Discovery(me, [LOOPBACK], found.append, public_key=key)
    good = sighting("peer", key=key)
    assert d.consider(wire(good)) == good
    assert d.consider(wire(me)) is None  # ourselves: ignored, not counted
    assert d.consider(wire(sighting("other", mesh="elsewhere", key=key))) is None
    assert d.consider(wire(sighting("stranger", key=new_key()))) is None
    assert d.consider(wire(sighting("open"))) is None
    assert d.consider({b"id": b"nonsense"}) is None
    assert d.consider(wire(good)) == good  # each sighting is reported; the caller dedups
    assert found == [good, good]
    assert d.statistics == DiscoveryStatistics(found=2, other_mesh=1, wrong_key=2, malformed=1)


def test_consider_hex_key_and_no_key_required() -> None:
    key = secrets.token_bytes(32)
    found: list[Sighting] = []
    d = Discovery(sighting(), [LOOPBACK], found.append, public_key=encode_key(key))
    peer = sighting("peer", key=z85_encode(key))
    assert d.consider(wire(peer)) == peer
    open_mesh = Discovery(sighting(), [LOOPBACK], found.append)
    assert open_mesh.consider(wire(peer)) == peer  # keys are not required: any is fine
    assert found == [peer, peer]


def test_on_found_that_raises_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom(s: Sighting) -> None:
        raise RuntimeError("caller bug")

    d = Discovery(sighting(), [LOOPBACK], boom)
    peer = sighting("peer")
    assert d.consider(wire(peer)) == peer
    assert "on_found raised" in caplog.text
    assert d.statistics.found == 1


# --------------------------------------------------------------------------- on loopback


class Found:
    """Collects sightings; ``wait_for(node_id)`` returns when one arrives."""

    def __init__(self) -> None:
        self.sightings: list[Sighting] = []
        self._changed = asyncio.Event()

    def __call__(self, s: Sighting) -> None:
        self.sightings.append(s)
        self._changed.set()

    @property
    def ids(self) -> set[str]:
        return {s.node_id for s in self.sightings}

    async def wait_for(self, *node_ids: str, timeout: float = FIND_LIMIT) -> None:
        async with asyncio.timeout(timeout):
            while not set(node_ids) <= self.ids:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def mesh_name() -> str:
    """A mesh of this test only: other runs on this machine's loopback are other meshes."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
async def started() -> AsyncIterator[list[Discovery]]:
    """Discovery instances appended here are closed at teardown (fast, in parallel)."""
    made: list[Discovery] = []
    yield made
    await asyncio.gather(*(d.aclose() for d in made))


async def start(made: list[Discovery], d: Discovery) -> Discovery:
    made.append(d)
    await d.start()
    return d


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_three_nodes_find_each_other(started: list[Discovery], mesh_name: str) -> None:
    mes = [sighting(f"n{i}", mesh_name, 6000 + 10 * i) for i in range(3)]
    founds = [Found() for _ in mes]
    t0 = time.monotonic()
    for me, found in zip(mes, founds, strict=True):
        await start(started, Discovery(me, [LOOPBACK], found))
    started_in = time.monotonic() - t0
    for i, found in enumerate(founds):
        await found.wait_for(*(m.node_id for j, m in enumerate(mes) if j != i))
    elapsed = time.monotonic() - t0
    print(f"\nloopback: 3 nodes started in {started_in:.3f} s, all found in {elapsed:.3f} s")
    assert elapsed < FIND_LIMIT
    for i, found in enumerate(founds):
        assert mes[i].node_id not in found.ids  # never ourselves
        for s in found.sightings:
            assert s == next(m for m in mes if m.node_id == s.node_id)  # the whole record
    assert all(d.statistics.found >= 2 for d in started)


async def test_other_mesh_is_ignored_and_counted(started: list[Discovery], mesh_name: str) -> None:
    found_a, found_b, found_x = Found(), Found(), Found()
    a = await start(started, Discovery(sighting("a", mesh_name), [LOOPBACK], found_a))
    b = sighting("b", mesh_name, 6100)
    await start(started, Discovery(b, [LOOPBACK], found_b))
    x = await start(started, Discovery(sighting("x", f"{mesh_name}-x", 6200), [LOOPBACK], found_x))
    await found_a.wait_for(b.node_id)
    await wait_until(lambda: a.statistics.other_mesh >= 1 and x.statistics.other_mesh >= 2)
    assert found_a.ids == {b.node_id}
    assert found_x.ids == set()
    assert x.statistics.found == 0


async def test_malformed_record_is_counted(started: list[Discovery], mesh_name: str) -> None:
    found = Found()
    d = await start(started, Discovery(sighting("d", mesh_name), [LOOPBACK], found))
    bad = wire(sighting("bad", mesh_name, 6300))
    bad[b"g"] = b"tcp://0.0.0.0:6301"
    raw = AsyncZeroconf(interfaces=[LOOPBACK])
    try:
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"bad-{secrets.token_hex(4)}.{SERVICE_TYPE}",
            port=6301,
            properties=bad,
            parsed_addresses=[LOOPBACK],
        )
        await (await raw.async_register_service(info, cooperating_responders=True))
        await wait_until(lambda: d.statistics.malformed >= 1)
        # And it keeps working: a good node is still found.
        good = sighting("good", mesh_name, 6400)
        await start(started, Discovery(good, [LOOPBACK], Found()))
        await found.wait_for(good.node_id)
    finally:
        await raw.async_close()
    assert found.ids == {good.node_id}


async def test_wrong_key_is_ignored_when_keys_are_required(
    started: list[Discovery], mesh_name: str
) -> None:
    key = new_key()
    found = Found()
    me = sighting("me", mesh_name, key=key)
    d = await start(started, Discovery(me, [LOOPBACK], found, public_key=key))
    stranger = sighting("stranger", mesh_name, 6500, key=new_key())
    keyless = sighting("keyless", mesh_name, 6600)
    friend = sighting("friend", mesh_name, 6700, key=key)
    for s in (stranger, keyless, friend):
        await start(started, Discovery(s, [LOOPBACK], Found()))
    await found.wait_for(friend.node_id)
    await wait_until(lambda: d.statistics.wrong_key >= 2)
    assert found.ids == {friend.node_id}


async def test_start_and_close_are_fast_and_clean(mesh_name: str) -> None:
    before = other_tasks()
    found = Found()
    peer_found = Found()
    me, peer_me = sighting("me", mesh_name), sighting("peer", mesh_name, 6800)
    t0 = time.monotonic()
    d = Discovery(me, [LOOPBACK], found)
    await d.start()
    t_start = time.monotonic() - t0
    peer = Discovery(peer_me, [LOOPBACK], peer_found)
    async with peer:
        await found.wait_for(peer_me.node_id)
        await peer_found.wait_for(me.node_id)
        t1 = time.monotonic()
        await d.aclose()
        t_close = time.monotonic() - t1
        await d.aclose()  # idempotent
        with pytest.raises(RuntimeError, match="already started"):
            await d.start()
    print(f"\nloopback: start {t_start * 1000:.1f} ms, close with goodbye {t_close * 1000:.0f} ms")
    assert t_start < 0.5
    assert t_close < 2.0
    assert other_tasks() == before


async def test_close_while_announcing_and_resolving(mesh_name: str) -> None:
    before = other_tasks()
    d = Discovery(sighting("quick", mesh_name), [LOOPBACK], Found())
    await d.start()
    await d.aclose()  # announcing is still under way: cancelled, no task left behind
    assert other_tasks() == before
    never = Discovery(sighting("never", mesh_name), [LOOPBACK], Found())
    await never.aclose()  # never started: nothing to do
    with pytest.raises(RuntimeError):
        await never.start()


# --------------------------------------------------------------------------- on a LAN

NODE = """
import asyncio, dataclasses, json, sys, time
from mesh._io.discovery import Discovery, Sighting

node_id, name, mesh, ip, want = sys.argv[1:6]

async def main():
    me = Sighting(node_id, name, mesh, (1, 1), f"tcp://{ip}:7000", f"tcp://{ip}:7001",
                  f"tcp://{ip}:7002")
    seen = asyncio.Event()
    found = []
    def on_found(s):
        found.append(s)
        if s.node_id == want:
            seen.set()
    t0 = time.monotonic()
    async with Discovery(me, ["eth0"], on_found) as d:
        print("ready", flush=True)
        try:
            await asyncio.wait_for(seen.wait(), 10)
        except TimeoutError:
            pass
        elapsed = time.monotonic() - t0
        await asyncio.sleep(1.5)  # stay visible while the other side looks
    s = next((s for s in found if s.node_id == want), None)
    print(json.dumps({"elapsed": elapsed, "found": s and [s.name, s.gossip],
                      "addresses": d.addresses, "stats": dataclasses.asdict(d.statistics)}),
          flush=True)

asyncio.run(main())
"""


@pytest.mark.lan
def test_two_hosts_find_each_other_on_eth0(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(2)
    mesh = f"lan-{secrets.token_hex(4)}"
    ids = [secrets.token_hex(16), secrets.token_hex(16)]
    procs = []
    for i, host in enumerate(lan.hosts):
        argv = [sys.executable, "-c", NODE, ids[i], host.name, mesh, host.ip, ids[1 - i]]
        procs.append(host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert lines[0] == "ready"
        results.append(json.loads(lines[-1]))
    for i, (host, result) in enumerate(zip(lan.hosts, results, strict=True)):
        other = lan.hosts[1 - i]
        assert result["addresses"] == [host.ip]
        assert result["found"] == [other.name, f"tcp://{other.ip}:7001"], result
        print(f"\nLAN: {host.name} found {other.name} in {result['elapsed']:.3f} s")
        assert result["elapsed"] < FIND_LIMIT
        assert result["stats"]["malformed"] == result["stats"]["other_mesh"] == 0


NOT_HERE = """
import asyncio, secrets
from mesh._io.discovery import Discovery, Sighting

async def main():
    me = Sighting(secrets.token_hex(16), "x", "m", (1, 1), "tcp://127.0.0.1:1",
                  "tcp://127.0.0.1:2", "tcp://127.0.0.1:3")
    d = Discovery(me, ["10.1.2.3"], print)
    try:
        await d.start()
    except Exception as exc:
        print(type(exc).__name__, exc)
    await d.aclose()
    print(len(asyncio.all_tasks()))

asyncio.run(main())
"""


@pytest.mark.lan
def test_an_address_this_host_lacks(lan_factory: Callable[[int], Lan]) -> None:
    """Zeroconf cannot use it: start() raises TransportError and cleans up (in a namespace,
    so that no address of the real machine is ever involved)."""
    host = lan_factory(1).hosts[0]
    done = host.run([sys.executable, "-c", NOT_HERE], timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "TransportError discovery: cannot start zeroconf on 10.1.2.3: [Errno 19] No such device",
        "1",
    ]
