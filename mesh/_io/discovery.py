"""Finding peers on the LAN with zeroconf (mDNS / DNS-SD): a pure TXT codec and a runtime.

Each node registers one ``_zmesh._tcp.local.`` service whose TXT record says who it is
and where to reach it (:class:`Sighting`, :func:`encode_txt`, :func:`decode_txt`) and
browses for the others. A valid sighting of another node of our mesh only *triggers* a
join: liveness comes from membership, never from mDNS (zeroconf keeps a crashed node's
record for many minutes), so removals are ignored on purpose. Records of other meshes,
with the wrong public key or malformed ones are ignored and counted.

Zeroconf runs on exactly the interfaces given (names such as ``eth0`` or IPv4
addresses), on the caller's event loop; this module starts no threads. The details and
the reasons are in docs/discovery.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from zeroconf import DNSQuestionType, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .._errors import ConfigError, ProtocolError, TransportError
from .._util.aio import within
from .._util.keys import decode_key, z85_decode
from .._util.resource import AsyncResource
from .interfaces import ipv4_addresses

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "DiscoveryStatistics",
    "Sighting",
    "decode_txt",
    "encode_txt",
    "instance_name",
]

log = logging.getLogger("mesh.discovery")

#: The DNS-SD service type of mesh nodes (the service name is at most 15 bytes).
SERVICE_TYPE: Final = "_zmesh._tcp.local."

#: A TXT string (``key=value``) is one length byte then at most 255 bytes (RFC 6763 6.1).
MAX_TXT_ITEM: Final = 255
#: The whole TXT record, with length bytes. A typical node needs about 300; this keeps the
#: PTR, SRV, TXT and A answer within one 1,500-byte packet.
MAX_TXT_TOTAL: Final = 900
#: How long to wait for a found service's SRV/TXT/A records (milliseconds).
RESOLVE_TIMEOUT_MS: Final = 1_500
#: How long ``aclose`` waits for the goodbye packets to go out (seconds).
GOODBYE_TIMEOUT: Final = 2.0
#: At most this many resolutions at once; more service events are dropped (and logged).
MAX_RESOLVING: Final = 256

_NODE_ID: Final = re.compile(r"[0-9a-f]{32}")
# The same rule as Config.mesh (mesh/_config.py).
_MESH_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSIONS: Final = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")
_ADDRESS: Final = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+):([0-9]{1,5})")
_HOST_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DOTTED: Final = re.compile(r"[0-9.]+")
_WILDCARD_HOSTS: Final = frozenset({"*", "0.0.0.0", "::", "[::]"})
_NOT_IN_INSTANCE: Final = re.compile(r"[^A-Za-z0-9_-]+")

# TXT keys, short to keep the record small.
_K_ID, _K_NAME, _K_MESH, _K_VERSIONS = "id", "n", "m", "v"
_K_RPC, _K_GOSSIP, _K_PUB, _K_KEY = "r", "g", "p", "k"
_REQUIRED: Final = (_K_ID, _K_NAME, _K_MESH, _K_VERSIONS, _K_RPC, _K_GOSSIP, _K_PUB)


@dataclass(frozen=True, slots=True)
class Sighting:
    """What a node's TXT record says about it (see :func:`decode_txt` for the rules)."""

    #: 32 lowercase hex characters.
    node_id: str
    #: The node's name: 1 to 63 printable characters.
    name: str
    #: The mesh it belongs to (the rule of ``Config.mesh``).
    mesh: str
    #: The protocol versions it speaks, ``(min, max)``.
    protocol: tuple[int, int]
    #: ``tcp://host:port`` of its RPC, gossip and event (PUB) sockets; never a wildcard.
    rpc: str
    gossip: str
    pub: str
    #: Its CURVE public key as 40 Z85 characters, when security is on.
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    """Counters of one :class:`Discovery` (our own record is never counted)."""

    #: Valid sightings of other nodes of our mesh given to ``on_found``.
    found: int
    #: Records of nodes of another mesh (ignored).
    other_mesh: int
    #: Records without the required public key, or with another one (ignored).
    wrong_key: int
    #: Records whose TXT is not a valid sighting (ignored).
    malformed: int


# --------------------------------------------------------------------------- pure part


def _bad(key: str, why: str) -> NoReturn:
    raise ProtocolError(f"discovery TXT key {key!r}: {why}")


def _check_address(key: str, text: str) -> None:
    match = _ADDRESS.fullmatch(text)
    if match is None:
        _bad(key, f"expected tcp://host:port, got {text[:80]!r}")
    host, port = match.group(1), int(match.group(2))
    if not 1 <= port <= 65535:
        _bad(key, f"port {port} is not 1..65535")
    if host in _WILDCARD_HOSTS:
        _bad(key, f"wildcard host {host!r} is not an address peers can reach")
    if host.startswith("["):
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(
                host[1:-1]
            )
        except ValueError:
            _bad(key, f"bad IPv6 address {host!r}")
    elif _DOTTED.fullmatch(host):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            _bad(key, f"bad IPv4 address {host!r}")
    else:
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in host.split(".")):
            _bad(key, f"bad host name {host[:80]!r}")
        return
    if address.is_unspecified or address.is_multicast:
        _bad(key, f"host {host!r} is not an address peers can reach")


def _check(s: Sighting) -> None:
    """Raise ProtocolError naming the key of the first field of ``s`` that is invalid."""
    if type(s.node_id) is not str or not _NODE_ID.fullmatch(s.node_id):
        _bad(_K_ID, f"expected 32 lowercase hex characters, got {s.node_id!r:.80}")
    if type(s.name) is not str or not 1 <= len(s.name) <= 63 or not s.name.isprintable():
        _bad(_K_NAME, f"expected 1 to 63 printable characters, got {s.name!r:.80}")
    if type(s.mesh) is not str or not _MESH_NAME.fullmatch(s.mesh):
        _bad(_K_MESH, f"not a mesh name: {s.mesh!r:.80}")
    versions = s.protocol
    if not (
        type(versions) is tuple
        and len(versions) == 2
        and all(type(v) is int for v in versions)
        and 1 <= versions[0] <= versions[1] <= 65535
    ):
        _bad(_K_VERSIONS, f"expected versions 1 <= min <= max <= 65535, got {s.protocol!r}")
    for key, address in ((_K_RPC, s.rpc), (_K_GOSSIP, s.gossip), (_K_PUB, s.pub)):
        if type(address) is not str:
            _bad(key, f"expected text, got {address!r:.80}")
        _check_address(key, address)
    if s.public_key is not None:
        try:
            ok = type(s.public_key) is str and len(z85_decode(s.public_key)) == 32
        except ValueError:
            ok = False
        if not ok:
            _bad(_K_KEY, f"expected 40 Z85 characters, got {s.public_key!r:.80}")


def _items(s: Sighting) -> dict[str, str]:
    items = {
        _K_ID: s.node_id,
        _K_NAME: s.name,
        _K_MESH: s.mesh,
        _K_VERSIONS: f"{s.protocol[0]}-{s.protocol[1]}",
        _K_RPC: s.rpc,
        _K_GOSSIP: s.gossip,
        _K_PUB: s.pub,
    }
    if s.public_key is not None:
        items[_K_KEY] = s.public_key
    return items


def _check_sizes(sizes: Mapping[str, int]) -> None:
    """``sizes``: key -> encoded bytes of ``key=value`` (without the length byte)."""
    for key, size in sizes.items():
        if size > MAX_TXT_ITEM:
            _bad(key, f"key=value is {size} bytes, more than {MAX_TXT_ITEM}")
    total = sum(size + 1 for size in sizes.values())
    if total > MAX_TXT_TOTAL:
        raise ProtocolError(f"discovery TXT record is {total} bytes, more than {MAX_TXT_TOTAL}")


def encode_txt(s: Sighting) -> dict[str, str]:
    """The TXT properties advertising ``s``; ProtocolError if ``s`` may not be sent.

    Keys: ``id`` node id, ``n`` name, ``m`` mesh, ``v`` versions ``"min-max"``, ``r``
    RPC, ``g`` gossip, ``p`` PUB address, ``k`` public key (only with security on).
    """
    _check(s)
    items = _items(s)
    _check_sizes({k: len(k) + 1 + len(v.encode()) for k, v in items.items()})
    return items


def _text(properties: Mapping[bytes, bytes | None], key: str) -> str:
    raw = properties.get(key.encode())
    if raw is None:
        _bad(key, "missing" if key.encode() not in properties else "has no value")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        _bad(key, "not UTF-8")


def decode_txt(properties: Mapping[bytes, bytes | None]) -> Sighting:
    """The :class:`Sighting` in TXT ``properties`` (as zeroconf gives them).

    Raises ProtocolError naming the bad key: a required key missing or without value,
    text that is not UTF-8, a bad node id, name, mesh or versions, an address that is not
    ``tcp://host:port`` with a concrete host, a bad public key, a string or the record
    too long. Keys it does not know are ignored (newer nodes may add some).
    """
    sizes: dict[str, int] = {}
    for raw_key, raw_value in properties.items():
        label = raw_key.decode("utf-8", "replace")
        sizes[label] = len(raw_key) + (0 if raw_value is None else 1 + len(raw_value))
    _check_sizes(sizes)
    fields = {key: _text(properties, key) for key in _REQUIRED}
    public_key = _text(properties, _K_KEY) if _K_KEY.encode() in properties else None
    match = _VERSIONS.fullmatch(fields[_K_VERSIONS])
    if match is None:
        _bad(_K_VERSIONS, f"expected min-max, got {fields[_K_VERSIONS]!r:.80}")
    sighting = Sighting(
        node_id=fields[_K_ID],
        name=fields[_K_NAME],
        mesh=fields[_K_MESH],
        protocol=(int(match.group(1)), int(match.group(2))),
        rpc=fields[_K_RPC],
        gossip=fields[_K_GOSSIP],
        pub=fields[_K_PUB],
        public_key=public_key,
    )
    _check(sighting)
    return sighting


def instance_name(s: Sighting) -> str:
    """A DNS-SD instance name unique to the node: ``<name>-<first 12 hex of its id>``.

    The name part keeps letters, digits, ``_`` and ``-`` (runs of anything else become
    one ``-``) and at most 50 characters, so the result is ASCII and at most 63 bytes.
    """
    clean = _NOT_IN_INSTANCE.sub("-", s.name).strip("-")[:50].strip("-") or "node"
    return f"{clean}-{s.node_id[:12]}"


# --------------------------------------------------------------------------- runtime


def _resolve_interfaces(interfaces: Sequence[str]) -> list[str]:
    """IPv4 addresses for ``interfaces`` (names or IPv4 addresses), in order, no repeats."""
    if isinstance(interfaces, str) or not interfaces:
        raise ConfigError(
            f"discovery interfaces: expected a non-empty list of interface names or IPv4 "
            f"addresses, got {interfaces!r}"
        )
    return ipv4_addresses(interfaces, "discovery interfaces")


def _host_of(address: str) -> str:
    match = _ADDRESS.fullmatch(address)
    assert match is not None  # checked by encode_txt
    return match.group(1).strip("[]")


class Discovery(AsyncResource):
    """Advertise ``me`` and report other nodes of ``me.mesh`` found with zeroconf.

    ``interfaces`` are interface names (each stands for its IPv4 addresses) or IPv4
    addresses; zeroconf sends and listens on those only. ``on_found`` is called on the
    event loop with each valid :class:`Sighting` of another node of our mesh, on every
    Added or Updated service event (so possibly more than once: the caller dedups).
    With ``public_key`` (64 hex or 40 Z85 characters) only records carrying that key are
    reported; with ``trusted``, only records carrying a key (raw 32 bytes) it accepts
    (per-node keys: each node has its own, and trusts those in its ``allowed/``). With
    ``announce=False`` it only browses (``me`` names the mesh and the node to skip):
    meshctl finds a node that way and leaves no trace. Use ``async with Discovery(...)``
    or :meth:`start` and :meth:`aclose`.
    """

    def __init__(
        self,
        me: Sighting,
        interfaces: Sequence[str],
        on_found: Callable[[Sighting], None],
        *,
        public_key: str | None = None,
        trusted: Callable[[bytes], bool] | None = None,
        announce: bool = True,
    ) -> None:
        self.announce = announce
        try:
            self._properties = encode_txt(me)
        except ProtocolError as exc:
            raise ConfigError(f"discovery: this node's record is invalid: {exc}") from exc
        self._key: bytes | None = None
        self._trusted = trusted
        if public_key is not None:
            try:
                self._key = decode_key(public_key)
            except ValueError as exc:
                raise ConfigError(f"discovery public_key: {exc}") from exc
        self.me = me
        self.addresses: tuple[str, ...] = tuple(_resolve_interfaces(interfaces))
        self._on_found = on_found
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._registered = False
        self._announcing: asyncio.Future[object] | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._found = self._other_mesh = self._wrong_key = self._malformed = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<Discovery {instance_name(self.me)} on {', '.join(self.addresses)} {state}>"

    @property
    def statistics(self) -> DiscoveryStatistics:
        """The counters so far."""
        return DiscoveryStatistics(
            found=self._found,
            other_mesh=self._other_mesh,
            wrong_key=self._wrong_key,
            malformed=self._malformed,
        )

    def _service_info(self) -> AsyncServiceInfo:
        host = _host_of(self.me.gossip)
        try:
            ipaddress.ip_address(host)
        except ValueError:  # a host name: give the addresses we announce on
            parsed = list(self.addresses)
        else:
            parsed = [host]
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{instance_name(self.me)}.{SERVICE_TYPE}",
            port=int(self.me.gossip.rsplit(":", 1)[1]),
            properties=self._properties,
            server=f"zmesh-{self.me.node_id}.local.",
            parsed_addresses=parsed,
        )

    async def start(self) -> None:
        """Start zeroconf, register our record (announced in the background) and browse.

        Raises TransportError when zeroconf cannot open its sockets.
        """
        if self._started or self._closed:
            raise RuntimeError(f"{self!r} was already started")
        self._started = True
        try:
            self._zc = AsyncZeroconf(interfaces=list(self.addresses))
        except OSError as exc:
            self._closed = True
            raise TransportError(
                f"discovery: cannot start zeroconf on {', '.join(self.addresses)}: {exc}"
            ) from exc
        try:
            if self.announce:
                self._info = self._service_info()
                # With cooperating responders there is no probing: this returns at once
                # and the announcements (about 0.45 s) go out in the returned awaitable.
                announced = await self._zc.async_register_service(
                    self._info, cooperating_responders=True
                )
                self._registered = True
                self._announcing = asyncio.ensure_future(announced)
                self._announcing.add_done_callback(self._announced)
            self._browser = AsyncServiceBrowser(
                self._zc.zeroconf,
                SERVICE_TYPE,
                handlers=[self._on_service_state_change],
                # The default first query asks for a unicast answer, which is lost on
                # loopback (and behind some firewalls): QM finds nodes in ~0.1 s, not ~1.2 s.
                question_type=DNSQuestionType.QM,
            )
        except BaseException:
            await self.aclose()
            raise

    def _announced(self, future: asyncio.Future[object]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning(
                "discovery: announcing %s failed",
                instance_name(self.me),
                exc_info=future.exception(),
            )

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Removed is ignored on purpose: liveness comes from membership, not from mDNS.
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        if self._closed:
            return
        if len(self._resolving) >= MAX_RESOLVING:
            log.debug("discovery: %d resolutions running, dropped %s", MAX_RESOLVING, name)
            return
        task = asyncio.create_task(self._resolve(zeroconf, service_type, name))
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        try:
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(
                zeroconf, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM
            ):
                log.debug("discovery: no complete answer for %s", name)
                return
            self.consider(info.properties)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("discovery: resolving %s failed", name, exc_info=True)

    def _key_ok(self, text: str | None) -> bool:
        if self._key is None and self._trusted is None:
            return True
        if text is None:
            return False
        key = z85_decode(text)
        if self._key is not None and key != self._key:
            return False
        return self._trusted is None or self._trusted(key)

    def consider(self, properties: Mapping[bytes, bytes | None]) -> Sighting | None:
        """Judge one TXT record: count it, report it to ``on_found`` if it is a valid
        sighting of another node of our mesh (with our key, if required) and return it;
        None when ignored. Never raises (what ``on_found`` raises is logged)."""
        try:
            sighting = decode_txt(properties)
        except ProtocolError as exc:
            self._malformed += 1
            log.debug("discovery: malformed record ignored: %s", exc)
            return None
        if sighting.node_id == self.me.node_id:
            return None
        if sighting.mesh != self.me.mesh:
            self._other_mesh += 1
            log.debug("discovery: %s is in mesh %r, ignored", sighting.name, sighting.mesh)
            return None
        if not self._key_ok(sighting.public_key):
            self._wrong_key += 1
            log.debug("discovery: %s has another public key or none, ignored", sighting.name)
            return None
        self._found += 1
        try:
            self._on_found(sighting)
        except Exception:
            log.exception("discovery: on_found raised for %s", sighting.name)
        return sighting

    async def aclose(self) -> None:
        """Stop browsing, say goodbye (bounded wait) and close zeroconf; idempotent."""
        if self._closed:
            return
        self._closed = True
        zc, self._zc = self._zc, None
        browser, self._browser = self._browser, None
        try:
            if browser is not None:
                await browser.async_cancel()
            pending: list[asyncio.Future[Any]] = [*self._resolving]
            if self._announcing is not None:
                pending.append(self._announcing)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if zc is not None and self._registered and self._info is not None:
                self._registered = False
                try:
                    goodbye = await zc.async_unregister_service(self._info)
                    await within(goodbye, GOODBYE_TIMEOUT)
                except Exception:
                    log.debug("discovery: goodbye of %s failed", self._info.name, exc_info=True)
        finally:
            if zc is not None:
                with contextlib.suppress(Exception):
                    await zc.async_close()
