"""``meshctl doctor``: check this host's mesh settings and say what is wrong, in plain words.

Each check is one line, ``ok``, ``warn`` or ``fail``: the settings, the zeroconf
interfaces (they exist, are up, have an IPv4 address, can multicast), the fixed ports
(free to bind), the key files (readable, not readable by others, valid), each seed (a
handshake), and what zeroconf finds of the mesh. The interface and port checks read
``/sys/class/net`` and ``ip -j addr`` (Linux) and bind test sockets: standard library
only. The handshakes and the zeroconf look-up go through ``mesh.Client``, which never
joins the mesh.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import socket
import stat
import subprocess
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli._common import FAILED, Settings, fail, global_options, settings, to_json

if TYPE_CHECKING:
    import mesh

#: ``/sys/class/net/IF/flags`` bits (linux/if.h).
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
#: How long the handshakes and the zeroconf look-up wait, unless --timeout says.
WAIT = 2.0
#: The names of the checks of key files.
KEY_CHECKS = frozenset(
    {"security", "secret file", "keys dir", "node key", "node secret key", "allowed keys"}
)
#: Statuses, from best to worst.
STATUSES = ("ok", "warn", "fail")


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@click.command()
@global_options(group=False)
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check this host's settings for the mesh and say what is wrong.

    One line per check, ok, warn or fail: the settings, each zeroconf interface (exists,
    up, has an IPv4 address, can multicast), fixed ports (free), key files (readable,
    owner-only, valid), each seed (a handshake), and the nodes zeroconf finds. Handshakes
    and zeroconf wait at most 2 s (--timeout). Exits 0 when no check failed, 1 otherwise.
    """
    given = settings(ctx)
    if not given.debug:  # what mesh would log (a key file readable by others, a refused
        # handshake) is what the checks report
        logging.getLogger("mesh").addHandler(logging.NullHandler())
        logging.getLogger("mesh").propagate = False
    try:
        checks = asyncio.run(_all_checks(given))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    if given.as_json:
        click.echo(to_json([c.to_json() for c in checks]))
    else:
        _print(checks)
    if any(c.status == "fail" for c in checks):
        ctx.exit(FAILED)


async def _all_checks(given: Settings) -> list[Check]:
    import mesh

    try:
        config = given.config()
        if config.host is not None:
            config.advertised_host  # noqa: B018  (a wildcard host without advertise raises)
    except mesh.ConfigError as exc:
        return [Check("settings", "fail", str(exc))]
    wait = given.timeout if given.timeout is not None else min(WAIT, config.timings.connect_timeout)
    checks = [_settings(config)]
    if config.discovery:
        table = Interfaces.read()
        for item in config.discovery_interfaces:
            checks += interface_checks(item, table)
    checks += port_checks(config)
    checks += security_checks(config)
    keys_failed = any(c.status == "fail" for c in checks if c.name in KEY_CHECKS)
    interfaces_failed = any(c.status == "fail" for c in checks if c.name.startswith("interface "))
    checking: list[Coroutine[Any, Any, Check]] = []
    for seed in config.seeds:  # with bad keys every handshake would fail the same way
        checking.append(
            _done(_not_tried(f"seed {seed}", "the key settings above"))
            if keys_failed
            else _seed(config, seed, wait)
        )
    if config.discovery and (keys_failed or interfaces_failed):
        what = "the key settings above" if keys_failed else "the interfaces above"
        checking.append(_done(_not_tried("zeroconf", what)))
    else:
        checking.append(_zeroconf(config, wait))
    found = await asyncio.gather(*checking)  # at once: the waits do not add up
    if not config.seeds:
        if config.discovery:
            checks.append(Check("seeds", "ok", "none given: zeroconf alone finds the mesh"))
        else:
            checks.append(
                Check(
                    "seeds",
                    "fail",
                    "none given and discovery is off: nothing can find a mesh "
                    "(give --seed / MESH_SEEDS, or turn discovery on)",
                )
            )
    checks += found
    return checks


async def _done(check: Check) -> Check:
    return check


def _not_tried(name: str, because: str) -> Check:
    return Check(name, "warn", f"not tried: {because} must be put right first")


def _settings(config: mesh.Config) -> Check:
    ports = [config.port, config.pub_port, config.gossip_port]
    return Check(
        "settings",
        "ok",
        f"mesh {config.mesh!r}, node name {config.name!r}, host {_host(config)}, ports "
        f"{'/'.join(str(p) for p in ports) if any(ports) else 'any free'}, profile "
        f"{config.profile}, discovery {'on' if config.discovery else 'off'}, "
        f"{_count(len(config.seeds), 'seed')}",
    )


def _host(config: mesh.Config) -> str:
    """The address a node would bind; what was asked for when it cannot be looked up
    (the host and interface checks say why)."""
    import mesh

    try:
        return config.bind_host
    except mesh.ConfigError:
        return config.host or f"the address of {config.discovery_interfaces[0]}"


# -- interfaces --------------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    name: str
    #: ``/sys/class/net/NAME/flags``; None where it cannot be read.
    flags: int | None
    ipv4: tuple[str, ...]


@dataclass(frozen=True)
class Interfaces:
    """This machine's network interfaces, by name."""

    by_name: dict[str, Interface]

    @classmethod
    def read(cls) -> Interfaces:
        names = _interface_names()
        addresses = _ipv4_addresses(names)
        return cls({n: Interface(n, _flags(n), tuple(addresses.get(n, ()))) for n in sorted(names)})

    def owner(self, address: str) -> Interface | None:
        """The interface that holds IPv4 ``address``."""
        return next((i for i in self.by_name.values() if address in i.ipv4), None)


def _interface_names() -> list[str]:
    try:
        return os.listdir("/sys/class/net")
    except OSError:
        return [name for _, name in socket.if_nameindex()]


def _flags(name: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def _ipv4_addresses(names: list[str]) -> dict[str, list[str]]:
    """IPv4 addresses by interface, from ``ip -j -4 addr`` (all of them), else from the
    SIOCGIFADDR ioctl (the first of each)."""
    try:
        out = subprocess.run(
            ["ip", "-j", "-4", "addr"], capture_output=True, text=True, timeout=5, check=True
        ).stdout
        found: dict[str, list[str]] = {}
        for item in json.loads(out):
            found[item["ifname"]] = [
                a["local"] for a in item.get("addr_info", ()) if a.get("family") == "inet"
            ]
        return found
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError):
        return {name: [a] for name in names if (a := _ioctl_address(name))}


def _ioctl_address(name: str) -> str | None:
    import fcntl
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(
                sock.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode())
            )
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_checks(item: str, table: Interfaces) -> list[Check]:
    """``interface X`` (exists, up, has IPv4) and ``multicast X``, for one discovery
    interface given as a name or an IPv4 address."""
    name = f"interface {item}"
    try:
        address = ipaddress.ip_address(item)
    except ValueError:
        found = table.by_name.get(item)
        if found is None:
            known = ", ".join(table.by_name) or "none"
            return [Check(name, "fail", f"no interface named {item!r} (this machine has: {known})")]
    else:
        if address.version != 4:
            return [Check(name, "fail", f"{item} is IPv6: zeroconf runs on IPv4 only")]
        found = table.owner(item)
        if found is None:
            return [Check(name, "fail", f"no interface of this machine has the address {item}")]
    if found.flags is not None and not found.flags & IFF_UP:
        return [Check(name, "fail", f"{found.name} is down (ip link set {found.name} up)")]
    if not found.ipv4:
        return [Check(name, "fail", f"{found.name} has no IPv4 address: zeroconf needs one")]
    where = found.name if found.name == item else f"{item} on {found.name}"
    checks = [Check(name, "ok", f"{where}: up, IPv4 {', '.join(found.ipv4)}")]
    multicast = f"multicast {item}"
    if found.flags is None:
        checks.append(Check(multicast, "warn", f"cannot read the flags of {found.name}"))
    elif found.flags & IFF_MULTICAST:
        checks.append(Check(multicast, "ok", f"{found.name} can multicast (mDNS)"))
    elif found.flags & IFF_LOOPBACK:
        checks.append(
            Check(
                multicast,
                "ok",
                f"{found.name} is loopback: no MULTICAST flag, but mDNS is looped back, so "
                "zeroconf finds the nodes of this host (only)",
            )
        )
    else:
        checks.append(
            Check(
                multicast,
                "fail",
                f"{found.name} has no MULTICAST flag: mDNS cannot go out there (ip link set "
                f"{found.name} multicast on), or use seeds",
            )
        )
    return checks


# -- ports -------------------------------------------------------------------------------


def port_checks(config: mesh.Config) -> list[Check]:
    """The host is an address of this machine; each fixed port is free to bind."""
    import mesh

    fixed = [(what, p) for what, p in _ports(config) if p]
    try:
        host = config.bind_host
    except mesh.ConfigError as exc:
        return [Check("host", "fail", str(exc))]
    problem = _bind(host, 0)
    if problem is not None:
        return [Check("host", "fail", f"cannot bind {host}: {problem}")]
    checks = [Check("host", "ok", f"{host} can be bound")]
    if not fixed:
        checks.append(Check("ports", "ok", "all 0: each node picks free ports"))
    for what, port in fixed:
        problem = _bind(host, port)
        if problem is None:
            checks.append(Check(f"port {port}", "ok", f"{what} port, free on {host}"))
        else:
            checks.append(Check(f"port {port}", "fail", f"{what} port on {host}: {problem}"))
    return checks


def _ports(config: mesh.Config) -> Iterator[tuple[str, int]]:
    yield "RPC (MESH_PORT)", config.port
    yield "event (MESH_PUB_PORT)", config.pub_port
    yield "gossip (MESH_GOSSIP_PORT)", config.gossip_port


def _bind(host: str, port: int) -> str | None:
    """Why a TCP socket cannot bind ``host:port`` (None: it can), as ZeroMQ binds it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"not an address ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use (another node, or another program, holds it)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return "not an address of this machine"
            if exc.errno == errno.EACCES:
                return "permission denied (ports below 1024 need privileges)"
            return exc.strerror or str(exc)
    return None


# -- key files ---------------------------------------------------------------------------


def security_checks(config: mesh.Config) -> list[Check]:
    """The key files: there, readable, owner-only, valid (as a node would load them)."""
    import mesh

    checks: list[Check] = []
    if config.secret_file is None and config.keys_dir is None:
        loopback = _is_loopback(_host(config))
        return [
            Check(
                "security",
                "ok" if loopback else "warn",
                "off: plain ZeroMQ, no encryption or authentication"
                + (
                    " (fine on loopback)"
                    if loopback
                    else f"; anyone who reaches {_host(config)} can call: use a secret file "
                    "(meshctl keygen --secret-file)"
                ),
            )
        ]
    if config.secret_file is not None:
        checks.append(_file_check("secret file", config.secret_file, secret=True))
    if config.keys_dir is not None:
        checks += _keys_dir_checks(config.keys_dir)
    if any(c.status == "fail" for c in checks):
        return checks
    try:
        node = mesh.Node(config.replace(discovery=False, seeds=()))  # loads the keys; no sockets
    except mesh.ConfigError as exc:
        checks.append(Check("security", "fail", str(exc)))
        return checks
    if node.public_key is not None:
        detail = f"per-node keys; this node's public key {node.public_key.hex()}"
    else:
        detail = "shared secret: the handshakes use CURVE keys derived from it"
    checks.append(Check("security", "ok", detail))
    return checks


def _file_check(name: str, path: Path, *, secret: bool) -> Check:
    try:
        info = path.stat()
    except FileNotFoundError:
        hint = " (meshctl keygen writes one)" if secret else ""
        return Check(name, "fail", f"{path} does not exist{hint}")
    except OSError as exc:
        return Check(name, "fail", f"{path}: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return Check(name, "fail", f"{path} is not a file")
    if not os.access(path, os.R_OK):
        return Check(name, "fail", f"{path} is not readable by this user")
    mode = stat.S_IMODE(info.st_mode)
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check(
            name, "warn", f"{path} is readable by others (mode {mode:o}): chmod 600 {path}"
        )
    return Check(name, "ok", f"{path}, mode {mode:o}")


def _keys_dir_checks(keys_dir: Path) -> list[Check]:
    if not keys_dir.is_dir():
        return [
            Check("keys dir", "fail", f"{keys_dir} is not a directory (meshctl keygen --keys-dir)")
        ]
    checks = [
        _file_check("node key", keys_dir / "node.key", secret=False),
        _file_check("node secret key", keys_dir / "node.key_secret", secret=True),
    ]
    allowed = keys_dir / "allowed"
    if not allowed.is_dir():
        checks.append(Check("allowed keys", "fail", f"{allowed} is missing (meshctl keygen)"))
    else:
        keys = sorted(p.name for p in allowed.glob("*.key"))
        if keys:
            checks.append(Check("allowed keys", "ok", f"{_count(len(keys), 'key')} in {allowed}"))
        else:
            checks.append(
                Check("allowed keys", "warn", f"{allowed} holds no *.key: no peer is admitted")
            )
    return checks


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- the mesh ----------------------------------------------------------------------------


async def _seed(config: mesh.Config, seed: str, wait: float) -> Check:
    """A handshake with ``seed``, then its member list."""
    import mesh

    name = f"seed {seed}"
    started = time.perf_counter()
    try:
        async with mesh.Client(_quick(config, wait).replace(seeds=(seed,), discovery=False)) as c:
            took = time.perf_counter() - started
            members = await c.members()
    except mesh.NoMeshFound as exc:
        message = str(exc).removeprefix("no node of the mesh answered: ")
        return Check(name, "fail", message.removeprefix(f"{seed}: "))
    except mesh.MeshError as exc:
        return Check(name, "fail", str(exc) or type(exc).__name__)
    me = next((m for m in members if m.address.partition("#")[0] == seed.partition("#")[0]), None)
    who = f"node {me.name}" if me is not None else "a node"
    return Check(name, "ok", f"{who} answered in {took * 1000:.0f} ms; {_listing(members)}")


async def _zeroconf(config: mesh.Config, wait: float) -> Check:
    """What zeroconf finds of the mesh on the chosen interfaces: the first node that
    answers, and the members it lists."""
    import mesh

    if not config.discovery:
        return Check(
            "zeroconf",
            "ok",
            "discovery is off (--no-discovery, MESH_DISCOVERY=off): not looked for",
        )
    where = ", ".join(config.discovery_interfaces)
    started = time.perf_counter()
    try:
        async with mesh.Client(_quick(config, wait).replace(seeds=(), discovery=True)) as client:
            took = time.perf_counter() - started
            members = await client.members()
            via = client.via
    except mesh.NoMeshFound:
        return Check(
            "zeroconf",
            "warn",
            f"no node of mesh {config.mesh!r} answered on {where} within {wait:g} s (none runs "
            "there yet, multicast is filtered, or the nodes run with discovery off)",
        )
    except mesh.MeshError as exc:
        return Check("zeroconf", "fail", f"on {where}: {exc}")
    me = next((m for m in members if m.address == via), None)
    who = me.name if me is not None else via
    return Check(
        "zeroconf", "ok", f"on {where}: found {who} at {via} in {took:.2f} s; {_listing(members)}"
    )


def _quick(config: mesh.Config, wait: float) -> mesh.Config:
    """``config`` with handshakes that wait ``wait`` seconds."""
    import mesh

    timings = config.timings
    return config.replace(
        timings=mesh.Timings(
            connect_timeout=wait,
            call_timeout=wait,
            grace_period=timings.grace_period,
            membership=timings.membership,
        )
    )


def _listing(members: list[mesh.MemberInfo]) -> str:
    """``it lists 3 members: alive calc-1, echo-1; left plain-1``."""
    by_status: dict[str, list[str]] = {}
    for m in members:
        by_status.setdefault(m.status, []).append(m.name)
    groups = "; ".join(f"{status} {', '.join(names)}" for status, names in by_status.items())
    return f"it lists {_count(len(members), 'member')}: {groups}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- output ------------------------------------------------------------------------------

COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


def _print(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        status = click.style(f"{c.status:<4}", fg=COLOURS[c.status], bold=c.status != "ok")
        click.echo(f"{status}  {c.name:<{width}}  {c.detail}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in STATUSES}
    click.echo(f"\n{counts['ok']} ok, {_count(counts['warn'], 'warning')}, {counts['fail']} failed")
