"""meshctl nodes, services and call against a mesh of three node processes on 127.0.0.1.

The nodes (calc, echo, plain) run under a mesh name of their own with the ``test``
profile, joined through the first as their seed, with zeroconf on 127.0.0.1 only.
meshctl runs as a user runs it: the installed entry point, in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.call import parse_keyword, parse_value
from mesh import write_secret
from tests.programs import node_env, node_program, read_line

MESHCTL = str(Path(sys.executable).parent / "meshctl")
SERVICES = {"calc": ["calc"], "echo": ["echo"], "plain": []}


@dataclass(frozen=True)
class Mesh:
    name: str
    seed: str
    ids: dict[str, str]


def meshctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run meshctl with no MESH_* setting but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    clean.update(env or {})
    return subprocess.run(
        [MESHCTL, *args], capture_output=True, text=True, timeout=timeout, env=clean, check=False
    )


def ok_json(*args: str, env: dict[str, str] | None = None) -> Any:
    result = meshctl(*args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def running() -> Iterator[Mesh]:
    """Three node processes that see each other, as meshctl reports."""
    name = f"cli-{secrets.token_hex(4)}"
    common = {
        "MESH_NAME": name,
        "MESH_PROFILE": "test",
        "MESH_HOST": "127.0.0.1",
        "MESH_DISCOVERY": "on",
        "MESH_INTERFACE": "127.0.0.1",
    }
    with node_program("nodes.calc", node_env(MESH_NODE_NAME="calc", **common)) as calc:
        first = read_line(calc)
        seed = first["address"]
        others = node_env(MESH_SEEDS=seed, **common)
        with (
            node_program("nodes.echo", {**others, "MESH_NODE_NAME": "echo"}) as echo,
            node_program("nodes.plain", {**others, "MESH_NODE_NAME": "plain"}) as plain,
        ):
            ids = {
                "calc": first["id"],
                "echo": read_line(echo)["id"],
                "plain": read_line(plain)["id"],
            }
            ready = Mesh(name, seed, ids)
            settled(ready)
            yield ready


def settled(mesh: Mesh, timeout: float = 30) -> list[dict[str, Any]]:
    """``meshctl nodes --json`` once it lists the three nodes alive with their services
    and stats (on this shared machine a loaded node may be suspected for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        result = meshctl("nodes", "--json", "--seed", mesh.seed, "--mesh", mesh.name)
        if result.returncode == 0:
            members: list[dict[str, Any]] = json.loads(result.stdout)
            seen = {m["name"]: m for m in members}
            if set(seen) == set(SERVICES) and all(
                m["status"] == "alive" and m["services"] == SERVICES[n] and m["stats"]
                for n, m in seen.items()
            ):
                return members
        assert time.monotonic() < deadline, f"no full listing: {result}"
        time.sleep(0.2)


def at(mesh: Mesh, *more: str) -> list[str]:
    return ["--seed", mesh.seed, "--mesh", mesh.name, "--profile", "test", *more]


def test_nodes_json_lists_every_member_with_services_and_stats(running: Mesh) -> None:
    members = settled(running)
    assert [m["name"] for m in members] == ["calc", "echo", "plain"]
    for m in members:
        assert m["id"] == running.ids[m["name"]]
        assert re.fullmatch(r"[0-9a-f]{32}", m["id"])
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", m["address"])
        assert m["status"] == "alive"
        assert m["services"] == SERVICES[m["name"]]
        assert isinstance(m["incarnation"], int)
        stats = m["stats"]
        assert stats is not None
        assert stats["uptime"] > 0
        assert stats["cpu"] >= 0
        assert stats["rss"] is None or stats["rss"] > 0
        assert isinstance(stats["methods"], dict)
    assert members[0]["address"] == running.seed


def test_global_options_go_before_or_after_the_command_or_in_the_environment(
    running: Mesh,
) -> None:
    before = ok_json("--seed", running.seed, "--mesh", running.name, "--json", "nodes")
    after = ok_json("nodes", "--seed", running.seed, "--mesh", running.name, "--json")
    env = {"MESH_SEEDS": running.seed, "MESH_NAME": running.name, "MESH_TIMEOUT": "5"}
    from_env = ok_json("nodes", "--json", env=env)
    assert [m["id"] for m in before] == [m["id"] for m in after] == [m["id"] for m in from_env]
    # the command line wins over the environment
    wrong = {"MESH_SEEDS": "tcp://127.0.0.1:1", "MESH_NAME": "elsewhere"}
    assert len(ok_json("nodes", *at(running, "--json"), env=wrong)) == 3


def test_nodes_table_for_people(running: Mesh) -> None:
    settled(running)
    result = meshctl("nodes", *at(running, "--fresh"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "ID", "ADDRESS", "STATUS", "SERVICES", "UPTIME", "CPU", "RSS", "CALLS/S", "ERRORS",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"calc", "echo", "plain"}
    assert rows["calc"][1] == running.ids["calc"][:12]
    assert rows["calc"][2:5] == [running.seed, "alive", "calc"]
    assert rows["plain"][4] == "-"


def test_services_json_and_table(running: Mesh) -> None:
    settled(running)
    assert ok_json("call", "calc.add", "1", "2", *at(running)) == 3
    listings = ok_json("services", *at(running, "--json", "--fresh"))
    assert [s["name"] for s in listings] == ["calc", "echo"]
    calc, echo = listings
    assert calc["versions"] == ["1.0.0"]
    assert [p["node"] for p in calc["providers"]] == ["calc"]
    assert calc["providers"][0]["id"] == running.ids["calc"]
    assert calc["providers"][0]["status"] == "alive"
    assert {"add", "div", "slow"} <= {m["name"] for m in calc["methods"]}
    assert calc["requests"] >= 1
    assert calc["p50"] is not None
    assert calc["p50"] >= 0
    assert calc["in_flight"] == 0
    assert [p["node"] for p in echo["providers"]] == ["echo"]
    assert {m["name"] for m in echo["methods"]} == {"say", "shout"}

    result = meshctl("services", *at(running))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "VERSIONS", "PROVIDERS", "STATE", "REQUESTS", "ERRORS", "P50", "P99",
        "IN", "FLIGHT",
    ]  # fmt: skip
    assert lines[1].split()[:3] == ["calc", "1.0.0", "calc"]
    assert lines[1].split()[3] == "up"  # STATE
    assert lines[2].split()[:3] == ["echo", "0.0.0", "echo"]


def test_call_parses_arguments_and_keywords_and_prints_the_result(running: Mesh) -> None:
    assert meshctl("call", "calc.add", "1", "2", *at(running, "--json")).stdout == "3\n"
    assert ok_json("call", "calc.add", "1", "--kw", "b=2.5", *at(running)) == 3.5
    assert ok_json("call", "calc.add", "-1", "-2", *at(running)) == -3
    assert ok_json("call", "calc.add", *at(running), "--kw", "a=1", "--kw", "b=2") == 3
    # a string prints as it is for people, as JSON with --json
    assert meshctl("call", "echo.shout", "hi there", *at(running)).stdout == "HI THERE\n"
    assert meshctl("call", "echo.say", "hi", *at(running, "--json")).stdout == '"hi"\n'
    assert ok_json("call", "echo.say", '{"k": [1, null]}', *at(running)) == {"k": [1, None]}
    assert ok_json("call", "echo.say", '"42"', *at(running, "--json")) == "42"
    # global options before the command work for call too
    globals_first = ["--seed", running.seed, "--mesh", running.name]
    assert ok_json(*globals_first, "call", "calc.mul", "6", "7") == 42


def test_call_pinned_to_a_node(running: Mesh) -> None:
    assert ok_json("call", "calc.add", "1", "2", "--node", "calc", *at(running)) == 3
    result = meshctl("call", "calc.add", "1", "2", "--node", "echo", *at(running))
    assert result.returncode == 3, result.stderr
    one_error_line(result)


def test_exit_codes_and_one_line_errors(running: Mesh) -> None:
    remote = meshctl("call", "calc.div", "1", "0", *at(running))
    assert remote.returncode == 1
    assert "ZeroDivisionError" in one_error_line(remote)
    assert remote.stdout == ""

    failed = meshctl("call", "calc.fail", "--kw", "message=boom", *at(running))
    assert failed.returncode == 1
    assert "boom" in one_error_line(failed)

    missing = meshctl("call", "nosuch.thing", *at(running))
    assert missing.returncode == 3
    assert "nosuch" in one_error_line(missing)

    slow = meshctl("call", "calc.slow", "10", *at(running, "--timeout", "1"))
    assert slow.returncode == 4
    one_error_line(slow)

    method = meshctl("call", "calc.nosuch", *at(running))
    assert method.returncode == 2
    assert "add" in one_error_line(method)  # it lists the methods calc has


def test_usage_errors_exit_2_with_one_line(running: Mesh) -> None:
    for args in (
        ["nodes", "--bogus"],
        ["call"],
        ["call", "nodot", *at(running)],
        ["call", "calc.add", "--kw", "novalue", *at(running)],
        ["call", "calc.add", "--kw", "timeout=1", *at(running)],
        ["nodes", "--timeout", "-1"],
        ["nodes", "--seed", "not-an-address"],
        ["nodes", "--profile", "nosuch"],
    ):
        result = meshctl(*args)
        assert result.returncode == 2, (args, result.stderr)
        one_error_line(result)
        assert result.stdout == ""


def test_no_mesh_found_exits_5(running: Mesh) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nobody = f"tcp://127.0.0.1:{port}"
    args = ["nodes", "--seed", nobody, "--mesh", running.name, "--timeout", "0.3"]
    result = meshctl(*args, "--no-discovery")
    assert result.returncode == 5
    assert nobody in one_error_line(result)
    # also with discovery turned off in the environment, and for call
    result = meshctl("call", "calc.add", "1", "2", *args[1:], env={"MESH_DISCOVERY": "off"})
    assert result.returncode == 5
    one_error_line(result)
    # zeroconf on loopback finds no node of another mesh
    other = ["--mesh", f"none-{secrets.token_hex(4)}", "--interface", "127.0.0.1"]
    result = meshctl("nodes", *other, "--timeout", "0.5")
    assert result.returncode == 5
    one_error_line(result)


def test_debug_prints_the_traceback_too(running: Mesh) -> None:
    result = meshctl("call", "calc.div", "1", "0", *at(running, "--debug"))
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "remote traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")


def test_discovery_on_loopback_finds_the_mesh_without_seeds(running: Mesh) -> None:
    members = ok_json("nodes", "--json", "--mesh", running.name, "--interface", "127.0.0.1")
    assert {m["name"] for m in members} == {"calc", "echo", "plain"}
    env = {"MESH_NAME": running.name, "MESH_INTERFACE": "127.0.0.1", "MESH_DISCOVERY": "on"}
    assert ok_json("call", "calc.add", "2", "3", env=env) == 5


def test_argument_and_keyword_parsing() -> None:
    assert parse_value("1") == 1
    assert parse_value("-2.5") == -2.5
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("hello") == "hello"
    assert parse_value('"1"') == "1"
    assert parse_value("") == ""
    assert parse_keyword("b=2") == ("b", 2)
    assert parse_keyword("s=a=b") == ("s", "a=b")
    assert parse_keyword("s=") == ("s", "")


def test_a_wrong_secret_says_so_in_one_line(tmp_path: Path) -> None:
    """A mesh with a shared secret, and meshctl holding another one (or none): one clear
    line, no mesh found (exit 5), nothing hangs."""
    secret = write_secret(tmp_path / "mesh.secret")
    other = write_secret(tmp_path / "other.secret")
    env = node_env(
        MESH_NAME=f"sec-{secrets.token_hex(4)}",
        MESH_NODE_NAME="calc",
        MESH_SECRET_FILE=str(secret),
    )
    with node_program("nodes.calc", env) as calc:
        seed = read_line(calc)["address"]
        where = ["--seed", seed, "--mesh", env["MESH_NAME"], "--no-discovery", "--timeout", "1"]
        right = meshctl("nodes", "--json", *where, "--secret-file", str(secret))
        assert right.returncode == 0, right.stderr
        assert [m["name"] for m in json.loads(right.stdout)] == ["calc"]
        for given in (["--secret-file", str(other)], []):
            started = time.monotonic()
            result = meshctl("nodes", *where, *given)
            assert result.returncode == 5, result
            line = one_error_line(result)
            assert seed in line
            assert "secret" in line or "handshake" in line or "security" in line, line
            assert time.monotonic() - started < 10
