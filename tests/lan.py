"""A LAN in a box for tests, built from Linux network namespaces (root and iproute2 needed).

Each :class:`Lan` owns one bridge namespace ``zmesh-<pid>-<tag>-br`` holding bridge ``br0``
(multicast snooping off, so mDNS floods) and N host namespaces ``zmesh-<pid>-<tag>-h<i>``.
Host ``i`` (1-based) has ``eth0`` with address ``10.<a>.<b>.<i>/24``, a route for multicast
224.0.0.0/4 and ``lo`` up; the other end of its veth pair is ``v<i>`` on ``br0``. The /24 is
unique per Lan in this process: the k-th Lan gets ``10.77.k.0/24`` (then ``10.78.x.0/24``, ...).
There is no default route, so nothing inside can reach the real network. Loaded as a pytest
plugin it provides the ``lan_factory`` and ``lan`` fixtures and removes stale namespaces.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import pytest

__all__ = [
    "NAMESPACE_PREFIX",
    "Host",
    "Lan",
    "ip",
    "lan_unavailable",
    "list_namespaces",
    "remove_stale_namespaces",
]

#: Every namespace this module creates is named ``zmesh-<pid>-...``.
NAMESPACE_PREFIX = "zmesh-"
_NAME_RE = re.compile(r"^zmesh-(\d+)-")
_IP_TIMEOUT = 10.0
_KILL_WAIT = 5.0
_MAX_HOSTS = 250
_lan_counter = itertools.count(1)


@functools.cache
def _ip_binary() -> str | None:
    found = shutil.which("ip")
    if found:
        return found
    for candidate in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _ip_path() -> str:
    path = _ip_binary()
    if path is None:
        raise RuntimeError("the `ip` binary (iproute2) was not found")
    return path


def ip(*args: str, timeout: float = _IP_TIMEOUT, input: str | None = None) -> str:
    """Run ``ip *args`` (``input`` on its standard input, else nothing); return stdout,
    raise RuntimeError with command and stderr on failure."""
    cmd = [_ip_path(), *args]
    try:
        done = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`{' '.join(cmd)}` timed out after {timeout}s") from exc
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(netns: str) -> None:
    """SIGKILL every process still living in ``netns`` (strays such as grandchildren)."""
    for word in ip("netns", "pids", netns).split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            pid = int(word)
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


def _delete_namespace(netns: str) -> None:
    if netns not in list_namespaces():
        return
    _kill_namespace_processes(netns)
    ip("netns", "del", netns)


@functools.cache
def lan_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (cached)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if _ip_binary() is None:
        return "the `ip` binary (iproute2) was not found"
    probe = f"{NAMESPACE_PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
    try:
        ip("netns", "add", probe)
    except (RuntimeError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "v1", "type", "veth", "peer", "name", "v2")
        # `ip netns exec` needs to set up a mount namespace and remount /sys.
        ip("netns", "exec", probe, _ip_path(), "link", "show", "v1")
    except (RuntimeError, OSError) as exc:
        return f"network namespaces unusable (bridge/veth/netns exec): {exc}"
    finally:
        with contextlib.suppress(RuntimeError, OSError):
            ip("netns", "del", probe)
    return None


def remove_stale_namespaces() -> list[str]:
    """Delete ``zmesh-<pid>-...`` namespaces whose pid is not alive; return their names.

    Processes still running inside such a namespace are killed first.
    """
    removed: list[str] = []
    for name in list_namespaces():
        match = _NAME_RE.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        _kill_namespace_processes(name)
        ip("netns", "del", name)
        removed.append(name)
    return removed


class Host:
    """One machine on a :class:`Lan`: a namespace with ``eth0`` on the shared bridge."""

    def __init__(self, lan: Lan, index: int, ip_address: str) -> None:
        self._lan = lan
        self.index = index
        self.name = f"h{index}"
        self.netns = f"{lan.prefix}-h{index}"
        self.ip = ip_address
        self.interface = "eth0"
        #: Name of this host's veth end on the bridge (inside ``lan.bridge_netns``).
        self.bridge_port = f"v{index}"

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r}, ip={self.ip!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so it runs inside this host's namespace."""
        return [_ip_path(), "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in this host; the Lan kills and reaps it at close.

        ``ip netns exec`` execs the program, so ``proc.pid`` is the program's own pid.
        """
        self._lan._check_open()
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.command(argv), **popen_kwargs)
        self._lan._processes.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], timeout: float = 10.0, *, check: bool = False, **run_kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in this host, capturing text output (``run_kwargs``
        such as ``cwd`` or ``env`` go to :func:`subprocess.run`)."""
        self._lan._check_open()
        return subprocess.run(
            self.command(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
            **run_kwargs,
        )

    def cut(self) -> None:
        """Partition this host from the LAN (its bridge port goes down)."""
        ip("-n", self._lan.bridge_netns, "link", "set", self.bridge_port, "down")

    def restore(self) -> None:
        """Heal a :meth:`cut`."""
        ip("-n", self._lan.bridge_netns, "link", "set", self.bridge_port, "up")


class Lan:
    """A bridge namespace plus ``hosts`` host namespaces; see the module docstring."""

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= _MAX_HOSTS:
            raise ValueError(f"hosts must be between 1 and {_MAX_HOSTS}, got {hosts}")
        number = next(_lan_counter)
        #: Common prefix of this Lan's namespace names: ``zmesh-<pid>-<tag>``.
        self.prefix = f"{NAMESPACE_PREFIX}{os.getpid()}-{number}{secrets.token_hex(2)}"
        self.bridge_netns = f"{self.prefix}-br"
        a, b = 77 + (number - 1) // 254, (number - 1) % 254 + 1
        #: This Lan's subnet, e.g. ``10.77.3.0/24``.
        self.subnet = f"10.{a}.{b}.0/24"
        self.hosts = [Host(self, i, f"10.{a}.{b}.{i}") for i in range(1, hosts + 1)]
        self._processes: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []
        self._closed = False
        try:
            self._build()
        except BaseException:
            with contextlib.suppress(RuntimeError):
                self.close()
            raise

    def __repr__(self) -> str:
        return f"Lan({self.prefix!r}, subnet={self.subnet!r}, hosts={len(self.hosts)})"

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)

    def _build(self) -> None:
        br = self.bridge_netns
        self._add_namespace(br)
        ip("-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", br, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_namespace(host.netns)
            ip("-n", br, "link", "add", host.bridge_port, "type", "veth", "peer",
               "name", host.interface, "netns", host.netns)  # fmt: skip
            ip("-n", br, "link", "set", host.bridge_port, "master", "br0")
            ip("-n", br, "link", "set", host.bridge_port, "up")
            ip("-n", host.netns, "link", "set", "lo", "up")
            ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", host.interface)
            ip("-n", host.netns, "link", "set", host.interface, "up")
            ip("-n", host.netns, "route", "add", "224.0.0.0/4", "dev", host.interface)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    @property
    def namespaces(self) -> list[str]:
        """Names of the namespaces this Lan created (bridge first)."""
        return list(self._namespaces)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Kill and reap all started processes, then delete the namespaces (idempotent).

        Every step is attempted; failures are collected and raised as one RuntimeError.
        Pipes of the started processes are closed too.
        """
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in self._processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=_KILL_WAIT)
            except subprocess.TimeoutExpired:
                errors.append(f"pid {proc.pid} did not die within {_KILL_WAIT}s of SIGKILL")
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._processes.clear()
        # Hosts first, the bridge last (deleting it destroys the veth pairs).
        for name in reversed(self._namespaces):
            try:
                _delete_namespace(name)
            except (RuntimeError, OSError) as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise RuntimeError(f"closing {self!r}: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- pytest plugin


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lan: needs network namespaces (root and iproute2); skipped otherwise"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lan") is not None:
        reason = lan_unavailable()
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _zmesh_remove_stale_namespaces() -> None:
    """Once per session: delete namespaces left behind by crashed runs."""
    if lan_unavailable() is None:
        remove_stale_namespaces()


@pytest.fixture
def lan_factory() -> Iterator[Callable[[int], Lan]]:
    """``make(n_hosts) -> Lan``; every Lan made is closed at teardown, even on failure."""
    reason = lan_unavailable()
    if reason is not None:
        pytest.skip(reason)
    made: list[Lan] = []

    def make(n_hosts: int) -> Lan:
        lan = Lan(n_hosts)
        made.append(lan)
        return lan

    yield make
    errors: list[RuntimeError] = []
    for lan in reversed(made):
        try:
            lan.close()
        except RuntimeError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def lan(lan_factory: Callable[[int], Lan]) -> Lan:
    """A fresh 3-host Lan."""
    return lan_factory(3)
