"""README's LAN lines, run as written, one network namespace per host (tests/lan.py).

Each host's veth end inside its namespace is ``eth0``, as the README says. The lines are
read from README.md (the fenced ``sh`` block whose lines each end in ``# host N``), so
the README and this test cannot drift: ``MESH_INTERFACE=eth0`` alone must make a node
bind and announce eth0's address, and ``meshctl nodes`` on another host must list every
node alive. Every process is started with ``exec`` (its PID is the program's), ended by
PID, and the Lan kills whatever is left at teardown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lan import Host, Lan
from tests.programs import ROOT, read_line

pytestmark = [pytest.mark.lan, pytest.mark.timeout(150)]

README = ROOT / "README.md"
#: A line of the block: the command, then ``# host N``.
_LINE = re.compile(r"(?P<command>\S.*?)\s*#\s*host (?P<host>\d+)")
#: Leading ``NAME=value`` assignments, then the program and its arguments.
_ASSIGNED = re.compile(r"(?P<assignments>(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)(?P<rest>\S.*)")
#: How long ``meshctl nodes`` may take to list every node alive (lan profile, zeroconf).
LISTED_WITHIN = 30.0


def readme_lan_lines() -> list[tuple[int, str]]:
    """``(host number, command)`` of README's LAN block, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    lan = [b for b in blocks if b.strip() and all(_LINE.fullmatch(x) for x in b.splitlines())]
    assert len(lan) == 1, f"README.md: expected one sh block of '# host N' lines, got {lan}"
    lines = []
    for text in lan[0].splitlines():
        match = _LINE.fullmatch(text)
        assert match is not None
        lines.append((int(match["host"]), match["command"]))
    return lines


def shell(command: str) -> list[str]:
    """``sh -c`` running ``command`` with ``exec`` before its program (assignments stay
    in front), so the process started is the program itself; a trailing ``&`` is the
    caller's to honour."""
    match = _ASSIGNED.fullmatch(command.removesuffix("&").strip())
    assert match is not None, command
    return ["sh", "-c", f"{match['assignments']}exec {match['rest']}"]


def environment() -> dict[str, str]:
    """A user's shell: no MESH_*, this venv's ``python`` and ``meshctl`` first on PATH,
    the sources under test first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def listed_alive(output: str, names: dict[str, str]) -> bool:
    """Every node of ``names`` (name -> its host's address) has a row saying alive at
    an address on its host."""
    rows = [line.split() for line in output.splitlines()]
    return all(
        any(
            row[0] == name and "alive" in row and any(c.startswith(f"tcp://{ip}:") for c in row)
            for row in rows
            if row
        )
        for name, ip in names.items()
    )


def test_the_readme_lan_lines_give_a_mesh_every_host_can_see(
    lan_factory: Callable[[int], Lan], tmp_path: Path
) -> None:
    lines = readme_lan_lines()
    lan = lan_factory(max(number for number, _ in lines))
    env = environment()
    nodes: dict[str, str] = {}  # name -> ip of its host
    started: list[tuple[Host, subprocess.Popen[bytes]]] = []
    host_name = socket.gethostname().split(".")[0][:24]
    listed = called = False
    for number, command in lines:
        host = lan.hosts[number - 1]
        argv = shell(command)
        print(f"{host.name} ({host.ip}): {command}")
        if command.endswith("&"):
            stderr = (tmp_path / f"{host.name}-{len(started)}.err").open("wb")
            proc = host.popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr)
            stderr.close()
            ready = read_line(proc, timeout=20.0)
            print(f"  {ready}")
            assert ready["event"] == "ready", ready
            # MESH_INTERFACE=eth0 alone: bound and announced on eth0's address
            for key in ("address", "pub_address", "gossip_address"):
                assert ready[key].startswith(f"tcp://{host.ip}:"), (key, ready)
            program = re.search(r"-m nodes\.(\w+)", command)
            assert program is not None, command
            assert ready["name"] == f"{host_name}-{program[1]}-{proc.pid}", ready
            nodes[ready["name"]] = host.ip
            started.append((host, proc))
            continue
        if " nodes" in command:
            assert started, "README lists nodes before starting any"
            begun = time.monotonic()
            deadline = begun + LISTED_WITHIN
            while True:
                done = host.run(argv, timeout=LISTED_WITHIN, cwd=tmp_path, env=env)
                if done.returncode == 0 and listed_alive(done.stdout, nodes):
                    break
                assert time.monotonic() < deadline, (
                    f"{host.name} did not list {sorted(nodes)} alive within {LISTED_WITHIN} s:"
                    f"\n{done.stdout}{done.stderr}"
                )
                time.sleep(0.5)
            took = time.monotonic() - begun
            print(f"  listed every node alive after {took:.1f} s:\n{done.stdout}")
            assert len(nodes) == len(started)  # a name of its own each
            listed = True
            continue
        done = host.run(argv, timeout=30.0, cwd=tmp_path, env=env)
        print(f"  exit {done.returncode}: {done.stdout.strip()} {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        if " call calc.add 1 2" in command:
            assert done.stdout.strip() == "3"
            called = True
    assert listed, "the README block lost its meshctl nodes"
    assert called, "the README block lost its meshctl call"
    assert len(started) >= 2, "the README block lost a node"
    for host, proc in started:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, f"{host.name}: pid {proc.pid} did not exit 0 on SIGTERM"


INTERFACE_ONLY = """
import asyncio, json, sys
from mesh import Config, ConfigError, Node

async def main() -> None:
    config = Config.from_env(discovery=False, profile="test")
    try:
        async with Node(config) as node:
            print(json.dumps([config.bind_host, node.address, node.gossip_address]))
    except ConfigError as exc:
        print(json.dumps(["error", str(exc)]))

asyncio.run(main())
"""


def test_an_interface_alone_binds_its_address_and_an_explicit_host_wins(
    lan_factory: Callable[[int], Lan],
) -> None:
    (host,) = lan_factory(1).hosts
    env = environment()
    cases = {
        "eth0": ({"MESH_INTERFACE": "eth0"}, host.ip),
        "eth0, lo": ({"MESH_INTERFACE": "eth0,lo"}, host.ip),
        "lo, eth0": ({"MESH_INTERFACE": "lo,eth0"}, "127.0.0.1"),
        "host wins": ({"MESH_INTERFACE": "eth0", "MESH_HOST": "127.0.0.1"}, "127.0.0.1"),
    }
    for label, (settings, expected) in cases.items():
        done = host.run(
            [sys.executable, "-c", INTERFACE_ONLY], timeout=30.0, env={**env, **settings}
        )
        print(label, done.stdout.strip(), done.stderr.strip())
        assert done.returncode == 0, done.stderr
        bound, address, gossip = json.loads(done.stdout)
        assert bound == expected
        assert address.startswith(f"tcp://{expected}:")
        assert gossip.startswith(f"tcp://{expected}:")
    done = host.run(
        [sys.executable, "-c", INTERFACE_ONLY],
        timeout=30.0,
        env={**env, "MESH_INTERFACE": "eth7"},
    )
    print("eth7", done.stdout.strip())
    assert "no network interface named 'eth7' (this machine has: eth0, lo)" in done.stdout
