"""CURVE security: who gets in, who does not, what each side sees, key files and rotation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mesh
from tests.lan import Lan
from tests.programs import node_env, node_program, read_line

MESHCTL = str(Path(sys.executable).parent / "meshctl")


def node(name: str, **kw: Any) -> mesh.Node:
    return mesh.Node(mesh.Config(name=name, mesh="test", profile="test"), **kw)


async def echo(value: Any) -> Any:
    return value


async def test_members_with_the_secret_talk_and_others_are_refused(tmp_path: Path) -> None:
    secret = mesh.write_secret(tmp_path / "mesh.secret")
    other = mesh.write_secret(tmp_path / "other.secret")
    async with (
        node("a", secret_file=secret) as a,
        node("b", secret_file=secret) as b,
        node("intruder", secret_file=other) as intruder,
        node("plain") as plain,
    ):
        a.add_service(echo, name="echo.say")
        for outsider in (intruder, plain):
            started = time.monotonic()
            with pytest.raises(mesh.AuthenticationFailed, match="security handshake") as info:
                await outsider.connect(a.address, timeout=2)
            assert time.monotonic() - started < 1.0  # fails fast, not at the timeout
            assert info.value.address == a.address
        assert a.statistics().transport_handshake_failures >= 2
        # the node keeps serving its members
        await b.connect(a.address)
        assert await b.call("echo.say", "members only") == "members only"


async def test_per_node_keys_admit_listed_keys_only(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("a", "b", "c")}
    keys = {name: mesh.write_keypair(d) for name, d in dirs.items()}
    shutil.copy(dirs["b"] / "node.key", dirs["a"] / "allowed" / "b.key")  # a admits b
    async with (
        node("a", keys_dir=dirs["a"]) as a,
        node("b", keys_dir=dirs["b"]) as b,
        node("c", keys_dir=dirs["c"]) as c,
    ):
        a.add_service(echo, name="echo.say")
        assert a.address.endswith("#" + keys["a"].hex())
        assert a.public_key == keys["a"]
        peer = await b.connect(a.address)
        assert peer.public_key == keys["a"]  # WELCOME carries it
        assert a.peers[b.id].public_key == keys["b"]  # and HELLO
        assert await b.call("echo.say", 1) == 1
        with pytest.raises(mesh.AuthenticationFailed, match="key not accepted"):
            await c.connect(a.address, timeout=2)
        assert a.statistics().security_refused == 1
        # rotation: admit c by adding its key; no restart
        shutil.copy(dirs["c"] / "node.key", dirs["a"] / "allowed" / "c.key")
        await c.connect(a.address, timeout=2)
        assert await c.call("echo.say", 2) == 2
        # revoke b for new connections
        (dirs["a"] / "allowed" / "b.key").unlink()
        with pytest.raises(mesh.AuthenticationFailed):
            await b.connect(a.address, timeout=2)


async def test_per_node_keys_need_the_peer_key_in_the_address(tmp_path: Path) -> None:
    mesh.write_keypair(tmp_path / "a")
    mesh.write_keypair(tmp_path / "b")
    async with node("a", keys_dir=tmp_path / "a") as a, node("b", keys_dir=tmp_path / "b") as b:
        bare = a.address.partition("#")[0]
        with pytest.raises(mesh.ConnectError, match="needs the peer's public key"):
            await b.connect(bare)
        with pytest.raises(mesh.ConnectError, match="not a CURVE public key"):
            await b.connect(bare + "#nothex")
        with pytest.raises(mesh.AuthenticationFailed):  # a key, but not a's
            await b.connect(bare + "#" + "ab" * 32, timeout=2)


async def test_the_blocking_client_speaks_curve(tmp_path: Path) -> None:
    secret = mesh.write_secret(tmp_path / "s")
    async with node("a", secret_file=secret) as a:
        a.add_service(echo, name="echo.say")
        client = await _in_thread(
            lambda: mesh.sync.connect(a.address, mesh="test", secret_file=secret)
        )
        try:
            assert await _in_thread(lambda: client.call("echo.say", "hi")) == "hi"
        finally:
            client.close()
        with pytest.raises(mesh.ConnectTimeout):  # no monitor here: it times out
            await _in_thread(lambda: mesh.sync.connect(a.address, mesh="test", timeout=0.5))


async def _in_thread(fn: Callable[[], Any]) -> Any:
    import asyncio

    return await asyncio.to_thread(fn)


def test_bad_key_material_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("not a secret\n")
    with pytest.raises(mesh.ConfigError, match="does not hold a mesh secret"):
        node("a", secret_file=tmp_path / "bad")
    with pytest.raises(mesh.ConfigError, match="cannot read"):
        node("a", secret_file=tmp_path / "missing")
    with pytest.raises(mesh.ConfigError, match="cannot read"):
        node("a", keys_dir=tmp_path / "nokeys")
    secret = mesh.write_secret(tmp_path / "s")
    mesh.write_keypair(tmp_path / "k")
    with pytest.raises(mesh.ConfigError, match="choose one security mode"):
        node("a", secret_file=secret, keys_dir=tmp_path / "k")


def test_keygen_writes_a_secret_and_a_keypair(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MESHCTL, "keygen", *args], capture_output=True, text=True, timeout=30, check=False
        )

    secret = tmp_path / "mesh.secret"
    result = run("--secret-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) == 40
    refused = run("--secret-file", str(secret))
    assert refused.returncode == 1
    assert "refusing to overwrite" in refused.stderr
    assert run("--secret-file", str(secret), "--force").returncode == 0

    result = run("--keys-dir", str(tmp_path / "keys"), "--json")
    assert result.returncode == 0, result.stderr
    public = json.loads(result.stdout)["public_key"]
    assert len(bytes.fromhex(public)) == 32
    assert (tmp_path / "keys" / "node.key_secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "allowed" / "node.key").exists()

    assert run().returncode == 2  # neither
    assert run("--secret-file", "x", "--keys-dir", "y").returncode == 2  # both


@pytest.mark.timeout(60)
async def test_node_programs_read_the_secret_from_the_environment(tmp_path: Path) -> None:
    secret = mesh.write_secret(tmp_path / "mesh.secret")
    env = node_env(MESH_NODE_NAME="calc", MESH_SECRET_FILE=str(secret))
    with node_program("nodes.calc", env) as proc:
        address = read_line(proc)["address"]
        async with node("caller", secret_file=secret) as caller, node("plain") as plain:
            await caller.connect(address)
            assert await caller.call("calc.add", 20, 22) == 42
            with pytest.raises(mesh.AuthenticationFailed):
                await plain.connect(address, timeout=2)


@pytest.mark.lan
@pytest.mark.timeout(60)
def test_secure_handshake_across_namespace_hosts(
    lan_factory: Callable[[int], Lan], tmp_path: Path
) -> None:
    lan = lan_factory(3)
    h1, h2, h3 = lan.hosts
    secret = mesh.write_secret(tmp_path / "mesh.secret")
    seed = f"tcp://{h1.ip}:7000"
    member = {"MESH_SECRET_FILE": str(secret)}
    with node_program(
        "nodes.calc", node_env(MESH_HOST=h1.ip, MESH_PORT="7000", **member), h1.popen
    ) as one:
        read_line(one)
        with node_program(
            "nodes.plain", node_env(MESH_HOST=h2.ip, MESH_SEEDS=seed, **member), h2.popen
        ) as two:
            read_line(two)
            assert read_line(two)["event"] == "connected"
        with node_program(
            "nodes.plain", node_env(MESH_HOST=h3.ip, MESH_SEEDS=seed), h3.popen
        ) as outsider:
            read_line(outsider)
            refused = read_line(outsider, timeout=15)
            assert refused["event"] == "connect_failed"
            assert refused["code"] == "auth_failed"
