"""One frozen Config for everything tunable, and ``Config.from_env()`` for ``MESH_*``."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from ._errors import ConfigError
from ._util.keys import decode_key

__all__ = [
    "ENV_VARS",
    "PROFILES",
    "SEED_ADDRESS",
    "Config",
    "Limits",
    "MembershipSettings",
    "SupervisionSettings",
    "Timings",
]

T = TypeVar("T")


# -- field checks: each takes the label to name in errors and the value ---------------------


def _string(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a string, got {value!r}")
    return value


def _node_name(label: str, value: object) -> str:
    text = _string(label, value)
    if not 1 <= len(text) <= 63 or not text.isprintable():
        raise ConfigError(f"{label}: a node name is 1 to 63 printable characters, got {text!r}")
    return text


def _mesh_name(label: str, value: object) -> str:
    text = _string(label, value)
    if not _MESH_NAME.fullmatch(text):
        raise ConfigError(
            f"{label}: a mesh name is 1 to 63 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {text!r}"
        )
    return text


def _host(label: str, value: object) -> str:
    text = _string(label, value)
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise ConfigError(f"{label}: expected a host name or IP address, got {text!r}")
    return text


def _optional_host(label: str, value: object) -> str | None:
    return None if value is None else _host(label, value)


def _optional_interface(label: str, value: object) -> str | None:
    if value is None:
        return None
    text = _string(label, value)
    if not 1 <= len(text) <= 15 or any(c.isspace() or c == "/" for c in text):
        raise ConfigError(f"{label}: expected a network interface name, got {text!r}")
    return text


def _interfaces(label: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ConfigError(
            f"{label}: expected a list of interface names or addresses, got {value!r}"
        )
    checked = tuple(_optional_interface(label, item) or "" for item in value)
    if "" in checked:
        raise ConfigError(f"{label}: expected interface names or addresses, got {value!r}")
    return checked


def _flag(label: str, value: object) -> bool:
    if type(value) is not bool:
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    return value


def _port(label: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= 65535:
        raise ConfigError(f"{label}: expected a port number 0..65535, got {value!r}")
    return value


def _positive_int(label: str, value: object) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{label}: expected a positive integer, got {value!r}")
    return value


def _positive_float(label: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{label}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _seeds(label: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ConfigError(f"{label}: expected a list of tcp://host:port addresses, got {value!r}")
    for seed in value:
        if not isinstance(seed, str) or not (m := SEED_ADDRESS.fullmatch(seed)):
            raise ConfigError(f"{label}: {seed!r} is not of the form tcp://host:port[#PUBLICKEY]")
        if not 1 <= int(m["port"]) <= 65535:
            raise ConfigError(f"{label}: {seed!r} needs a port number 1..65535")
        if m["key"] is not None:
            try:
                decode_key(m["key"])
            except ValueError as exc:
                raise ConfigError(f"{label}: {seed!r}: {exc}") from None
    return tuple(value)


def _profile(label: str, value: object) -> str:
    if value not in PROFILES:
        raise ConfigError(f"{label}: expected one of {', '.join(PROFILES)}, got {value!r}")
    return str(value)


def _optional_path(label: str, value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{label}: expected a file system path, got {value!r}")
    return Path(value)


def _synchronous(label: str, value: object) -> str:
    text = _string(label, value).upper()
    if text not in ("FULL", "NORMAL"):
        raise ConfigError(f"{label}: expected FULL or NORMAL, got {value!r}")
    return text


def _pass(label: str, value: T) -> T:
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may send; violations are clear errors, never crashes."""

    #: Largest encoded message, in bytes (checked on encode and decode).
    max_message_size: int = 8 * 1024 * 1024
    #: Deepest nesting of lists and maps inside a message.
    max_depth: int = 64
    #: Most items in one list or map.
    max_collection: int = 100_000
    #: ZeroMQ high-water marks (messages) for RPC and PUB sockets.
    send_hwm: int = 100_000
    recv_hwm: int = 100_000
    #: Calls one peer may have running on this node at once; more are refused
    #: with the retryable Overloaded.
    max_calls_per_peer: int = 1_000
    #: Stream items a caller may have granted and not yet received; grants beyond it
    #: are capped (and counted).
    max_stream_credit: int = 1_024
    #: Largest catalog record (a node's listing: services, methods, docstrings, tags),
    #: encoded; a registration that would pass it is refused with RecordTooLarge.
    max_record_size: int = 32 * 1024
    #: Events of each topic a publisher keeps for late subscribers (``history=N``).
    event_history: int = 100
    #: Events one subscription holds unread; more are dropped (and counted).
    max_subscription_queue: int = 10_000
    #: Bytes of events a publisher keeps for replay, over all its topics together (each
    #: event's encoded data + 200, each topic holding events + 2,000): past it the
    #: oldest events go first. 64 MiB: more than twice a topic per member of a
    #: 10,000-node mesh keeping 2 events of 200 bytes (28 MB; docs/configuration.md).
    event_history_bytes: int = 64 * 1024 * 1024
    #: Topics whose sequence numbers a publisher keeps; past it the counter of a topic
    #: with no event kept is forgotten (its next event is numbered above any it had).
    #: 100,000: five topics for each member of a 10,000-node mesh, twice.
    event_topics: int = 100_000
    #: (publisher, topic) pairs whose last sequence number a subscriber keeps (for the
    #: node, and for each replaying subscription); past it the least recently seen is
    #: forgotten. 100,000: five topics of every member of a 10,000-node mesh, twice.
    event_arrivals: int = 100_000

    # Sockets (docs/configuration.md, "Sockets"): what a stranger's announcements and a
    # large mesh may cost this node.
    #: ZeroMQ sockets one node's context may hold; fewer when the process's fd limit
    #: (raised toward its hard limit at start) cannot carry them. libzmq's own default
    #: is 1,023. A 10,000-node mesh needs about 3,500 (below), this is over four times that.
    max_sockets: int = 16_384
    #: Gossip DEALERs kept open (3 sockets each, with the monitor); past it the least
    #: recently used one is closed and reopened when next needed. They take at most half
    #: the sockets above. A node of a 10,000-node mesh talks to about 500 peers a minute.
    max_gossip_peers: int = 1_024
    #: A gossip DEALER unused this many seconds is closed.
    gossip_idle: int = 60
    #: Join attempts in flight to gossip addresses that are not members yet (zeroconf
    #: sightings, seeds); more are skipped until one is answered, refused or timed out.
    #: At most half of ``max_gossip_peers``. A node needs one to answer to learn the mesh.
    max_pending_joins: int = 256

    # -- callers: sessions and slots of callers gone without a GOODBYE --
    #: Percent of a service's slots (``concurrency``) and of its queue that one caller
    #: (a node id) may hold at once; its calls beyond its share of the slots wait, and
    #: beyond its share of the queue are refused with Overloaded. 100 turns it off.
    caller_share: int = 50
    #: Bytes of a caller's HELLO (name, services listed) that its session keeps; a
    #: larger one is accepted, but its services are not kept and its name is cut.
    max_session_hello: int = 16 * 1024

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _positive_int(f"limits.{f.name}", getattr(self, f.name))
        if self.caller_share > 100:
            raise ConfigError(f"limits.caller_share: a percent, 1 to 100, got {self.caller_share}")


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    """SWIM + Lifeguard tuning: times in seconds, counts, and the gossip budget.

    The defaults are memberlist's LAN set (the ``lan`` profile). Timeouts named
    "mult" scale with the mesh size; see docs/architecture.md, "Membership".
    """

    #: One probe of one peer per period (scaled up by the local health score).
    probe_interval: float = 1.0
    #: How long a direct probe waits for its ack before asking others to probe.
    probe_timeout: float = 0.5
    #: How many peers probe a silent peer on our behalf (0 turns this off).
    indirect_checks: int = 3
    #: Suspicion lasts at least ``suspicion_mult * max(1, log10(N)) * probe_interval``.
    suspicion_mult: int = 4
    #: ... and starts at ``suspicion_max_mult`` times that, shrinking with confirmations.
    suspicion_max_mult: int = 6
    #: Each update is sent ``retransmit_mult * ceil(log10(N + 1))`` times.
    retransmit_mult: int = 4
    #: The gossip timer: every ``gossip_interval``, updates go to ``gossip_nodes`` peers.
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    #: Full-state sync with one random peer this often (scaled up above 32 members).
    push_pull_interval: float = 30.0
    #: Dead and left members are forgotten this long after they died or left.
    dead_ttl: float = 60.0
    #: The local health score (Lifeguard awareness) goes from 0 to this.
    awareness_max: int = 8
    #: Gossip bandwidth budget of one node, bytes per second (probes and acks always go;
    #: piggybacked updates, gossip and syncs fit in what is left).
    budget: int = 20_000
    #: Most bytes of updates one message carries.
    max_updates_size: int = 1_400

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float":
                _positive_float(f"membership.{f.name}", value)
            elif f.name != "indirect_checks" or value != 0:
                _positive_int(f"membership.{f.name}", value)
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("membership.probe_timeout: must be less than probe_interval")


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    """How a node supervises services with a lifecycle (``start``/``run``/``stop``):
    restarts with backoff, and when to give up (docs/guide-service-bus.md)."""

    #: A service that crashes more than ``max_restarts`` times within
    #: ``restart_window`` seconds is marked ``failed`` and no longer restarted.
    max_restarts: int = 5
    restart_window: float = 60.0
    #: The wait before the first restart after a crash; it doubles with each crash
    #: within the window, up to ``backoff_max``.
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    #: How long a ``start()`` or ``stop()`` hook may take; a ``start()`` that takes
    #: longer counts as a crash, a ``stop()`` is abandoned.
    hook_timeout: float = 30.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.type == "float":
                _positive_float(f"supervision.{f.name}", getattr(self, f.name))
            else:
                _positive_int(f"supervision.{f.name}", getattr(self, f.name))
        if self.backoff_initial > self.backoff_max:
            raise ConfigError("supervision.backoff_initial: must not be more than backoff_max")


@dataclass(frozen=True, slots=True)
class Timings:
    """Timeouts in seconds. Profiles pick sensible sets; tests use ``test``."""

    #: How long ``Node.connect`` waits for the peer's WELCOME.
    connect_timeout: float
    #: Default deadline of a call that does not give one.
    call_timeout: float
    #: How long a stopping node lets work in flight finish.
    grace_period: float
    #: Failure detection and gossip.
    membership: MembershipSettings = field(default_factory=MembershipSettings)
    #: Restarts of crashed services, and when to give up.
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    # -- callers: sessions and slots of callers gone without a GOODBYE --
    #: A caller's session (its HELLO) ends after this long with no message from it and
    #: no call of its in flight; its next call is refused with SessionLost, and the
    #: caller shakes hands again and sends it once more (docs/architecture.md).
    session_idle: float = 300.0
    #: How often the listener checks its callers: a caller with calls in flight that
    #: sent nothing since the last check is probed, and when its connection is gone at
    #: two checks in a row its session ends and its calls are cancelled.
    caller_check: float = 5.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name not in ("membership", "supervision"):
                _positive_float(f"timings.{f.name}", getattr(self, f.name))
        if not isinstance(self.membership, MembershipSettings):
            raise ConfigError(
                f"timings.membership: expected a MembershipSettings, got {self.membership!r}"
            )
        if not isinstance(self.supervision, SupervisionSettings):
            raise ConfigError(
                f"timings.supervision: expected a SupervisionSettings, got {self.supervision!r}"
            )


#: Named sets of timings: ``lan`` for real networks (memberlist's LAN defaults for
#: membership), ``local`` for one machine, ``test`` for test suites (tens of ms).
PROFILES: Mapping[str, Timings] = {
    "lan": Timings(connect_timeout=5.0, call_timeout=30.0, grace_period=10.0),
    "local": Timings(
        connect_timeout=2.0,
        call_timeout=10.0,
        grace_period=5.0,
        membership=MembershipSettings(
            probe_interval=0.5,
            probe_timeout=0.2,
            gossip_interval=0.1,
            push_pull_interval=10.0,
            dead_ttl=30.0,
            budget=200_000,
        ),
    ),
    "test": Timings(
        connect_timeout=2.0,
        call_timeout=5.0,
        grace_period=1.0,
        membership=MembershipSettings(
            probe_interval=0.05,
            probe_timeout=0.025,
            suspicion_mult=3,
            gossip_interval=0.02,
            push_pull_interval=0.5,
            dead_ttl=3.0,
            budget=1_000_000,
        ),
        supervision=SupervisionSettings(
            restart_window=10.0, backoff_initial=0.02, backoff_max=0.5, hook_timeout=5.0
        ),
    ),
}

_MESH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _name_part(text: str) -> str:
    return _NOT_IN_NAME.sub("-", text).strip("-.")


def _program_name() -> str:
    """What this process runs: the module of ``python -m`` (its last part; a package's
    name for its ``__main__``), else the file name of ``sys.argv[0]`` without suffix."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    module = getattr(spec, "name", None)
    if isinstance(module, str) and module:
        parts = [p for p in module.split(".") if p not in ("__main__", "__mp_main__")]
        if parts:
            return parts[-1]
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 in ("", "-", "-c", "-m"):
        return ""
    return Path(argv0).stem


#: A seed or peer address, ``tcp://host:port[#PUBLICKEY]`` (groups ``host``, ``port``, ``key``);
#: use ``fullmatch`` and check the port is 1..65535 (the pattern takes up to 5 digits).
SEED_ADDRESS: Final = re.compile(
    r"tcp://(?P<host>[^:/#\s]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})(?:#(?P<key>\S+))?"
)
_WILDCARD_HOSTS = {"0.0.0.0", "*", "::", "[::]"}


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a node can be told. Immutable: derive variants with :meth:`replace`.

    Invalid values raise :class:`ConfigError` naming the field (or, from
    :meth:`from_env`, the environment variable).
    """

    #: Human label of this node; not required to be unique (the id is). The default,
    #: :meth:`default_name`, is ``<host>-<program>-<pid>``: unique on a LAN.
    name: str = field(default_factory=lambda: Config.default_name())
    #: Name of the mesh; nodes of other meshes are refused at handshake.
    mesh: str = "mesh"
    #: Address to bind the node's sockets to; None (the default): the first IPv4
    #: address of the first interface given (``interface``, ``interfaces``), else
    #: ``127.0.0.1`` (see :attr:`bind_host`).
    host: str | None = None
    #: RPC (ROUTER) port; 0 picks a free one.
    port: int = 0
    #: Event (PUB) port; 0 picks a free one.
    pub_port: int = 0
    #: Network interface for discovery (zeroconf); None means loopback only. Without
    #: ``host``, the node binds its address.
    interface: str | None = None
    #: Interfaces (names such as ``eth0``, or IPv4 addresses) that discovery announces
    #: and browses on, with ``interface``; none at all means loopback only. Without
    #: ``host``, the node binds the first one's address.
    interfaces: tuple[str, ...] = ()
    #: Gossip (membership and catalog ROUTER) port; 0 picks a free one.
    gossip_port: int = 0
    #: Find peers with zeroconf (mDNS) on ``interfaces``; seeds work either way.
    discovery: bool = True
    #: Host name or IP that peers should use to reach this node, when ``host``
    #: is a wildcard such as ``0.0.0.0``.
    advertise: str | None = None
    #: Addresses of known nodes to join through, ``tcp://host:port[#PUBLICKEY]``.
    seeds: tuple[str, ...] = ()
    #: Threads that run sync handlers (a slow one never blocks the loop).
    workers: int = 16
    #: Timing profile: one of :data:`PROFILES`.
    profile: str = "lan"
    #: Timings; ``None`` takes the profile's.
    timings: Timings = None  # type: ignore[assignment]
    limits: Limits = field(default_factory=Limits)
    #: Shared-secret file for CURVE security (one secret for the whole mesh).
    secret_file: Path | None = None
    #: Directory holding this node's keypair and the allowed public keys.
    keys_dir: Path | None = None
    #: Free labels listed in this node's catalog record (``meshctl nodes --tag k=v``):
    #: a mapping, kept as sorted ``(key, value)`` pairs; at most 64, keys 1 to 63
    #: printable characters, values up to 256.
    tags: tuple[tuple[str, str], ...] = ()
    #: Durable queues (docs/guide-service-bus.md): the node's job database (sqlite,
    #: its outbox, inbox and dead letters); None: this node neither enqueues nor runs
    #: jobs. ``":memory:"`` keeps nothing after the process (tests only).
    jobs_db: Path | None = None
    #: sqlite ``synchronous`` of the job database: ``FULL`` (an fsync per commit: a
    #: stored job survives a power cut) or ``NORMAL`` (survives a crash of the process).
    jobs_synchronous: str = "FULL"
    #: Seconds a provider holds a handed-off job without answering its sender before
    #: the sender hands it to another provider (renewed every third of it).
    jobs_lease: float = 30.0
    #: Jobs one node runs at once.
    jobs_concurrency: int = 16
    #: The idempotency window: the last ``jobs_dedup_keys`` jobs done or dead, none
    #: older than ``jobs_dedup_window`` seconds.
    jobs_dedup_keys: int = 100_000
    jobs_dedup_window: float = 86_400.0

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            checked = check(name, value)
            if checked is not value:
                object.__setattr__(self, name, checked)
        if self.timings is None:
            object.__setattr__(self, "timings", PROFILES[self.profile])
        if not isinstance(self.timings, Timings):
            raise ConfigError(f"timings: expected a Timings, got {self.timings!r}")
        if not isinstance(self.limits, Limits):
            raise ConfigError(f"limits: expected a Limits, got {self.limits!r}")

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (``profile`` also resets the timings)."""
        if "profile" in changes and "timings" not in changes:
            changes["timings"] = None
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def discovery_interfaces(self) -> tuple[str, ...]:
        """Where zeroconf runs: ``interface`` and ``interfaces``, else loopback."""
        return self._chosen_interfaces() or ("127.0.0.1",)

    @property
    def bind_host(self) -> str:
        """The address the node binds: ``host`` when given (it wins), else the first
        IPv4 address of the first interface given, else ``127.0.0.1``.

        Looks the interface up on this machine: :class:`ConfigError` when it does not
        exist or has no IPv4 address. A node reads it once, at start.
        """
        if self.host is not None:
            return self.host
        chosen = self._chosen_interfaces()
        if not chosen:
            return "127.0.0.1"
        return self._interface_address(chosen[0])

    @property
    def advertised_host(self) -> str:
        """The host part of the addresses this node gives to peers: ``advertise``, else
        :attr:`bind_host`; for a wildcard host, the first interface's address."""
        if self.advertise:
            return self.advertise
        host = self.bind_host
        if host in _WILDCARD_HOSTS:
            chosen = self._chosen_interfaces()
            if chosen:
                return self._interface_address(chosen[0])
            raise ConfigError(
                f"host: {host!r} binds every interface; set advertise (MESH_ADVERTISE) "
                "to the address peers should use, or an interface (MESH_INTERFACE)"
            )
        return host

    def _chosen_interfaces(self) -> tuple[str, ...]:
        """``interface`` then ``interfaces``, as given (no loopback fallback)."""
        chosen = (*((self.interface,) if self.interface else ()), *self.interfaces)
        return tuple(dict.fromkeys(chosen))

    @staticmethod
    def _interface_address(item: str) -> str:
        from ._io.interfaces import ipv4_addresses

        try:
            return ipv4_addresses([item])[0]
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}; the node binds the first interface's address unless host "
                "(MESH_HOST) is given"
            ) from None

    @staticmethod
    def default_name(program: str | None = None) -> str:
        """``<host>-<program>-<pid>``: this machine's host name (its first label), the
        program (``python -m nodes.calc`` -> ``calc``, a script's or command's file name
        without suffix, else ``python``) and the process id, so no two processes of a
        LAN share it (nodes in one process do: name them). Characters other than letters,
        digits, ``_``, ``.`` and ``-`` become ``-``; at most 63 characters."""
        host = _name_part(socket.gethostname().split(".")[0]) or "host"
        program = _name_part(program if program is not None else _program_name()) or "python"
        return f"{host[:24]}-{program[:24]}-{os.getpid()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a Config from ``MESH_*`` variables (see :data:`ENV_VARS`), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for var, (target, parse) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = parse(raw.strip())
                if target.startswith("limits."):
                    limits[target.removeprefix("limits.")] = _positive_int(var, value)
                else:
                    values[target] = _CHECKS[target](var, value)
            except ConfigError:
                raise
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{var}: {exc}") from None
        if limits:
            values["limits"] = Limits(**limits)
        values.update(overrides)
        return cls(**values)


def _tags(label: str, value: object) -> tuple[tuple[str, str], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    if isinstance(pairs, str) or not isinstance(pairs, Iterable):
        raise ConfigError(f"{label}: expected a mapping of tag names to values, got {value!r}")
    checked: dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ConfigError(f"{label}: expected (name, value) pairs, got {pair!r}")
        key, text = pair
        if not (isinstance(key, str) and 1 <= len(key) <= 63 and key.isprintable()):
            raise ConfigError(f"{label}: a tag name is 1 to 63 printable characters, got {key!r}")
        if not (isinstance(text, str) and len(text) <= 256):
            raise ConfigError(f"{label}: tag {key!r}: a value is text of at most 256 characters")
        checked[key] = text
    if len(checked) > 64:
        raise ConfigError(f"{label}: at most 64 tags, got {len(checked)}")
    return tuple(sorted(checked.items()))


def _split_tags(raw: str) -> list[tuple[str, str]]:
    """``zone=eu-1,rack=7`` -> pairs."""
    pairs = []
    for item in (t for t in re.split(r"[,\s]+", raw) if t):
        key, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"expected name=value, got {item!r}")
        pairs.append((key, value))
    return pairs


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "name": _node_name,
    "mesh": _mesh_name,
    "host": _optional_host,
    "port": _port,
    "pub_port": _port,
    "interface": _optional_interface,
    "interfaces": _interfaces,
    "gossip_port": _port,
    "discovery": _flag,
    "advertise": _optional_host,
    "seeds": _seeds,
    "workers": _positive_int,
    "profile": _profile,
    "timings": _pass,
    "limits": _pass,
    "secret_file": _optional_path,
    "keys_dir": _optional_path,
    "tags": _tags,
    "jobs_db": _optional_path,  # ":memory:" too: a path like any other here
    "jobs_synchronous": _synchronous,
    "jobs_lease": _positive_float,
    "jobs_concurrency": _positive_int,
    "jobs_dedup_keys": _positive_int,
    "jobs_dedup_window": _positive_float,
}


def _split_seeds(raw: str) -> list[str]:
    return [s for s in re.split(r"[,\s]+", raw) if s]


def _on_off(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "on", "true", "yes"}:
        return True
    if value in {"0", "off", "false", "no"}:
        return False
    raise ValueError(f"expected on or off, got {raw!r}")


def _int(raw: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise ValueError(f"expected an integer, got {raw!r}")
    return int(raw, 10)


#: Environment variables that :meth:`Config.from_env` reads: variable -> (field, parser).
ENV_VARS: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "MESH_NAME": ("mesh", str),
    "MESH_NODE_NAME": ("name", str),
    "MESH_HOST": ("host", str),
    "MESH_PORT": ("port", _int),
    "MESH_PUB_PORT": ("pub_port", _int),
    "MESH_INTERFACE": ("interfaces", _split_seeds),
    "MESH_GOSSIP_PORT": ("gossip_port", _int),
    "MESH_DISCOVERY": ("discovery", _on_off),
    "MESH_ADVERTISE": ("advertise", str),
    "MESH_SEEDS": ("seeds", _split_seeds),
    "MESH_PROFILE": ("profile", str),
    "MESH_WORKERS": ("workers", _int),
    "MESH_SECRET_FILE": ("secret_file", str),
    "MESH_KEYS_DIR": ("keys_dir", str),
    "MESH_TAGS": ("tags", _split_tags),
    "MESH_JOBS_DB": ("jobs_db", str),
    "MESH_JOBS_SYNCHRONOUS": ("jobs_synchronous", str),
    "MESH_JOBS_LEASE": ("jobs_lease", float),
    "MESH_JOBS_CONCURRENCY": ("jobs_concurrency", _int),
    "MESH_MAX_MESSAGE_SIZE": ("limits.max_message_size", _int),
    "MESH_MAX_CALLS_PER_PEER": ("limits.max_calls_per_peer", _int),
    "MESH_MAX_SOCKETS": ("limits.max_sockets", _int),
}
