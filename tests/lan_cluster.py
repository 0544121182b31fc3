"""Node processes on a namespace LAN, read without threads: ``Cluster`` and ``LanNode``.

Each node is a ``tests.lan_node`` process (or another program printing the same JSON
lines) started in a :class:`tests.lan.Host`. The cluster reads every node's stdout with
one selector and keeps what each printed: its ready line, its views, its answers and the
events its subscriptions received. Times are ``time.time()`` of the nodes: one clock for
every namespace, so the times of different hosts compare. Used by tests/test_mesh_lan.py
and the chaos campaign (tests/chaos/).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.lan import Host, Lan

ROOT = Path(__file__).resolve().parent.parent
RPC_PORT, PUB_PORT, GOSSIP_PORT = 7000, 7001, 7002
#: Not alive in a listing: dead, left, or not listed at all (purged or never known).
GONE = {"dead", "left", None}

Check = Callable[[dict[str, Any]], bool]


class LanNode:
    """One node process on ``host`` and everything it printed."""

    def __init__(self, host: Host, proc: subprocess.Popen[bytes], name: str | None = None) -> None:
        self.host = host
        self.name = name or host.name
        self.proc = proc
        self.buffer = b""
        self.eof = False
        self.ready: dict[str, Any] | None = None
        self.views: list[dict[str, Any]] = []
        self.answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # what its subscriptions received
        self.sent = 0

    def __repr__(self) -> str:
        return f"LanNode({self.name!r}, pid={self.proc.pid})"

    @property
    def view(self) -> dict[str, Any]:
        return self.views[-1] if self.views else {"members": {}, "ids": [], "services": {}}

    def status(self, name: str) -> str | None:
        status: str | None = self.view["members"].get(name)
        return status

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            text = raw.decode().strip()
            if not text.startswith("{"):
                continue
            line = json.loads(text)
            event = line.get("event")
            if event == "ready":
                self.ready = line
            elif event == "view":
                self.views.append(line)
            elif event == "got":
                self.events.append(line)
            elif "seq" in line:
                self.answers[line["seq"]] = line

    def send(self, command: str) -> int:
        """Write one command line; returns its ``seq`` (a dead process's pipe is ignored)."""
        assert self.proc.stdin is not None
        self.sent += 1
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        return self.sent


class Cluster:
    """The node processes of one Lan, read without threads (one selector, deadlines)."""

    def __init__(self, lan: Lan, logs: Path, mesh: str | None = None) -> None:
        self.lan = lan
        self.logs = logs
        self.mesh = mesh or f"lan-{secrets.token_hex(4)}"
        self.nodes: dict[str, LanNode] = {}
        self.retired: list[LanNode] = []

    def start(
        self,
        host: Host,
        *,
        service: bool = False,
        name: str | None = None,
        slot: int = 0,
        module: str = "tests.lan_node",
        **settings: str,
    ) -> LanNode:
        """Start ``module`` on ``host`` as node ``name`` (default the host's name); the
        ``slot``-th node of a host uses ports 7000 + 10 * slot and the two after."""
        name = name or host.name
        port = RPC_PORT + 10 * slot
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "LAN_NODE_"))}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "MESH_NAME": self.mesh,
                "MESH_NODE_NAME": name,
                "MESH_HOST": host.ip,
                "MESH_PORT": str(port),
                "MESH_PUB_PORT": str(port + PUB_PORT - RPC_PORT),
                "MESH_GOSSIP_PORT": str(port + GOSSIP_PORT - RPC_PORT),
                "MESH_PROFILE": "test",
                "MESH_DISCOVERY": "on",
                "MESH_INTERFACE": host.interface,
            }
        )
        if service:
            env["LAN_NODE_SERVICE"] = "calc"
        env.update(settings)
        old = self.nodes.get(name)
        if old is not None:
            self.retired.append(old)
        with open(self.logs / f"{name}-{time.monotonic_ns()}.err", "wb") as err:
            proc = host.popen(
                [sys.executable, "-m", module],
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        node = LanNode(host, proc, name)
        self.nodes[name] = node
        return node

    def pump(self, timeout: float) -> None:
        """Read whatever the live processes printed, waiting at most ``timeout``."""
        readers = {n.proc.stdout.fileno(): n for n in self.nodes.values()
                   if not n.eof and n.proc.stdout is not None}  # fmt: skip
        if not readers:
            time.sleep(timeout)
            return
        with selectors.DefaultSelector() as selector:
            for fd in readers:
                selector.register(fd, selectors.EVENT_READ)
            for key, _ in selector.select(timeout):
                node = readers[key.fd]
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    node.feed(chunk)
                else:
                    node.eof = True

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> float | None:
        """Pump until ``predicate()``; returns ``time.time()`` then, None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.pump(min(left, 0.05))
        return time.time()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> float:
        """Pump until ``predicate()``; returns ``time.time()`` then, fails after ``timeout``."""
        at = self.wait_until(predicate, timeout)
        if at is None:
            pytest.fail(f"not within {timeout} s: {what}\n{self.describe()}")
        return at

    def settle(self, seconds: float) -> None:
        """Keep reading for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.pump(min(left, 0.05))

    def describe(self) -> str:
        lines = []
        for node in self.nodes.values():
            view = node.view
            age = time.time() - view["t"] if node.views else float("inf")
            state = f"pid {node.proc.pid}, exit {node.proc.poll()}, last view {age:.1f} s ago"
            lines.append(f"  {node.name} ({state}): {view['members']} {view['services']}")
            for log in sorted(self.logs.glob(f"{node.name}-*.err")):
                text = log.read_text(errors="replace").strip()
                if text:
                    lines.append(f"    {log.name}: {text[-1500:]}")
        return "\n".join(lines)

    def wait_ready(self, nodes: Iterable[LanNode], timeout: float = 30.0) -> float:
        """Wait for the ready line of ``nodes``; returns the latest ready time."""
        chosen = list(nodes)
        self.wait("ready lines", lambda: all(n.ready is not None for n in chosen), timeout)
        return max(float(n.ready["t"]) for n in chosen if n.ready is not None)

    def call(self, node: LanNode, target: str, *args: Any, timeout: float = 10.0) -> dict[str, Any]:
        seq = node.send(" ".join(["call", target, *(json.dumps(a) for a in args)]))
        self.wait(f"{node.name}: answer to {target}", lambda: seq in node.answers, timeout)
        return node.answers[seq]

    def others(self, name: str) -> list[LanNode]:
        return [n for n in self.nodes.values() if n.name != name]


def full_view(names: Iterable[str], providers: dict[str, list[str]]) -> Check:
    """A view where exactly ``names`` are alive and ``providers`` offer the services."""
    want = dict.fromkeys(names, "alive")

    def check(view: dict[str, Any]) -> bool:
        return bool(view["members"] == want and view["services"] == providers)

    return check


def first_time(node: LanNode, check: Check, after: float) -> float | None:
    """``t`` of the first view of ``node`` after ``after`` that passes ``check``."""
    return next((float(v["t"]) for v in node.views if v["t"] >= after and check(v)), None)


def seen_by_all(nodes: Iterable[LanNode], check: Check, after: float) -> float:
    times = [first_time(n, check, after) for n in nodes]
    assert None not in times, times
    return max(t for t in times if t is not None)
