"""Tests of the LAN-in-a-box in tests/lan.py (real namespaces, real sockets)."""

from __future__ import annotations

import errno
import functools
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.lan import (
    NAMESPACE_PREFIX,
    Host,
    Lan,
    ip,
    lan_unavailable,
    list_namespaces,
    remove_stale_namespaces,
)

pytestmark = pytest.mark.timeout(60)

PORT = 40001
MCAST_GROUP = "239.255.77.77"
MCAST_PORT = 40000

ECHO_SERVER = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(conn.recv(1024))
"""

ECHO_CLIENT = """
import socket, sys
try:
    addr = (sys.argv[1], int(sys.argv[2]))
    with socket.create_connection(addr, timeout=float(sys.argv[3])) as s:
        s.sendall(b"ping")
        print(s.recv(1024).decode())
except OSError as exc:
    print(type(exc).__name__, exc.errno)
    sys.exit(1)
"""

SLEEPER = """
import os, subprocess, time
child = subprocess.Popen(["sleep", "600"])
print(os.getpid(), child.pid, flush=True)
time.sleep(600)
"""

MCAST_RECEIVER = """
import socket, sys
group, port, iface = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
mreq = socket.inet_aton(group) + socket.inet_aton(iface)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(10)
print("ready", flush=True)
try:
    data, addr = s.recvfrom(1024)
except TimeoutError:
    print("timeout", flush=True)
else:
    print(data.decode(), addr[0], flush=True)
"""

# No IP_MULTICAST_IF: the 224.0.0.0/4 route on eth0 must pick the interface.
MCAST_SENDER = """
import socket, sys, time
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(5):
    s.sendto(b"hello-group", (group, port))
    time.sleep(0.1)
"""


def read_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """One line from ``proc.stdout`` (a pipe), without blocking past ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no line from pid {proc.pid} in {timeout}s: {buf!r}")
            chunk = os.read(fd, 1)
            if not chunk:
                raise EOFError(f"pid {proc.pid} closed stdout (exit {proc.poll()}): {buf!r}")
            buf += chunk
    return buf.decode().strip()


def start_echo_server(host: Host) -> subprocess.Popen[bytes]:
    proc = host.popen([sys.executable, "-c", ECHO_SERVER, host.ip, str(PORT)],
                      stdout=subprocess.PIPE)  # fmt: skip
    assert read_line(proc) == "ready"
    return proc


def echo(client: Host, server: Host, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", ECHO_CLIENT, server.ip, str(PORT), str(timeout)]
    return client.run(argv, timeout=timeout + 10)


def pid_dead(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie (killed, not yet reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_lan_layout(lan: Lan, lan_factory: Callable[[int], Lan]) -> None:
    assert lan_unavailable() is None
    assert [h.name for h in lan.hosts] == ["h1", "h2", "h3"]
    assert lan.prefix.startswith(f"{NAMESPACE_PREFIX}{os.getpid()}-")
    existing = set(list_namespaces())
    assert set(lan.namespaces) <= existing
    assert lan.bridge_netns in lan.namespaces
    subnet = lan.subnet.removesuffix("0/24")
    for i, host in enumerate(lan.hosts, start=1):
        assert host.netns == f"{lan.prefix}-h{i}"
        assert host.interface == "eth0"
        assert host.ip == f"{subnet}{i}"
        assert len(host.bridge_port) <= 15
        addrs = ip("-n", host.netns, "-o", "-4", "addr", "show", "dev", "eth0")
        assert f"inet {host.ip}/24" in addrs
        assert "UP" in ip("-n", host.netns, "link", "show", "lo")
        assert "224.0.0.0/4 dev eth0" in ip("-n", host.netns, "route", "show")
        assert "master br0" in ip("-n", lan.bridge_netns, "link", "show", host.bridge_port)
    assert "mcast_snooping 0" in ip("-n", lan.bridge_netns, "-d", "link", "show", "br0")

    other = lan_factory(2)
    assert other.subnet != lan.subnet
    assert other.prefix != lan.prefix
    assert not set(other.namespaces) & set(lan.namespaces)


def test_hosts_reach_each_other(lan: Lan) -> None:
    h1, h2, h3 = lan.hosts
    start_echo_server(h1)
    for client in (h2, h3):
        done = echo(client, h1)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == "ping"


def test_lan_is_isolated_from_the_real_network(lan: Lan) -> None:
    h1 = lan.hosts[0]
    # The LAN addresses do not exist in the test's own namespace (a purely local check:
    # a connect would follow the machine's default route out to the real network).
    eaddrnotavail = re.escape(f"[Errno {errno.EADDRNOTAVAIL}]")
    with socket.socket() as s, pytest.raises(OSError, match=eaddrnotavail):
        s.bind((h1.ip, 0))
    # Inside, there is no default route: anything off the /24 is unreachable at once.
    started = time.monotonic()
    done = h1.run([sys.executable, "-c", ECHO_CLIENT, "203.0.113.1", "80", "5"])
    assert done.returncode == 1
    assert done.stdout.split() == ["OSError", str(errno.ENETUNREACH)]
    assert time.monotonic() - started < 5


def test_cut_and_restore(lan: Lan) -> None:
    h1, h2, h3 = lan.hosts
    start_echo_server(h2)
    assert echo(h1, h2).returncode == 0

    h2.cut()
    started = time.monotonic()
    done = echo(h1, h2, timeout=1.0)
    assert done.returncode == 1, done.stdout
    assert time.monotonic() - started < 5
    assert echo(h3, h2, timeout=1.0).returncode == 1
    # The rest of the LAN still works.
    start_echo_server(h1)
    assert echo(h3, h1).returncode == 0

    h2.restore()
    done = echo(h1, h2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ping"


def test_popen_pid_and_close(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(2)
    procs = [h.popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE) for h in lan.hosts]
    grandchildren = []
    for proc in procs:
        own_pid, child_pid = map(int, read_line(proc).split())
        assert own_pid == proc.pid  # `ip netns exec` execs the program
        grandchildren.append(child_pid)
    namespaces = lan.namespaces
    assert len(namespaces) == 3

    lan.close()
    assert lan.closed
    for proc in procs:
        assert proc.returncode == -9
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)  # reaped: no zombie left
    # Processes the program started itself die with the namespace too.
    for pid in grandchildren:
        assert wait_until(functools.partial(pid_dead, pid)), f"grandchild {pid} survived"
    assert not set(namespaces) & set(list_namespaces())

    lan.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        lan.hosts[0].popen(["true"])


@pytest.mark.lan
def test_context_manager() -> None:
    with Lan(1) as lan:
        done = lan.hosts[0].run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        assert lan.hosts[0].ip in done.stdout
        namespaces = lan.namespaces
    assert lan.closed
    assert not set(namespaces) & set(list_namespaces())


def test_multicast_floods_across_the_bridge(lan: Lan) -> None:
    h1, _, h3 = lan.hosts
    receiver_argv = [sys.executable, "-c", MCAST_RECEIVER, MCAST_GROUP, str(MCAST_PORT), h3.ip]
    receiver = h3.popen(receiver_argv, stdout=subprocess.PIPE)
    assert read_line(receiver) == "ready"

    sent = h1.run([sys.executable, "-c", MCAST_SENDER, MCAST_GROUP, str(MCAST_PORT)])
    assert sent.returncode == 0, sent.stderr

    assert read_line(receiver, timeout=15) == f"hello-group {h1.ip}"
    assert receiver.wait(timeout=10) == 0


@pytest.mark.lan
def test_remove_stale_namespaces() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait(timeout=10)
    dead_pid = finished.pid
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    stale = f"{NAMESPACE_PREFIX}{dead_pid}-x"
    live = f"{NAMESPACE_PREFIX}{os.getpid()}-live{os.urandom(2).hex()}"
    ip("netns", "add", stale)
    # A leftover program still running in the stale namespace is killed with it.
    leftover = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "600"])
    try:
        ip("netns", "add", live)
        try:
            removed = remove_stale_namespaces()
            assert leftover.wait(timeout=10) == -9
            assert stale in removed
            assert live not in removed
            names = list_namespaces()
            assert stale not in names
            assert live in names
        finally:
            ip("netns", "del", live)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait(timeout=10)
        if stale in list_namespaces():
            ip("netns", "del", stale)


def test_unavailable_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = lan_unavailable.__wrapped__()  # bypass the cache
    assert reason is not None
    assert "root" in reason


@pytest.mark.lan
def test_ip_errors_name_the_command() -> None:
    with pytest.raises(RuntimeError, match=r"netns del zmesh-nonexistent.*No such file"):
        ip("netns", "del", "zmesh-nonexistent")
