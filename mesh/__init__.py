"""mesh: a brokerless service mesh for Python on ZeroMQ."""

import logging

from . import sync
from ._config import (
    ENV_VARS,
    PROFILES,
    Config,
    Limits,
    MembershipSettings,
    SupervisionSettings,
    Timings,
)
from ._core.events import SYSTEM_TOPICS, Event, TopicStatistics
from ._core.listing import MemberInfo, MeshChange, Provider, ServiceListing
from ._core.stats import (
    HistogramSnapshot,
    MethodStatistics,
    ServiceStatistics,
)
from ._errors import (
    AuthenticationFailed,
    CallError,
    CallTimeout,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    IncompatibleVersion,
    InvalidTopic,
    MeshError,
    NoMeshFound,
    NoProvider,
    Overloaded,
    ProtocolError,
    ProviderLost,
    RecordTooLarge,
    Reject,
    RemoteError,
    SessionLost,
    TransportError,
    Unavailable,
    UnknownMethod,
    WrongMesh,
)
from ._io.process import ProcessStatistics
from ._io.security import write_keypair, write_secret
from ._node.eventbus import EventStatistics, Subscription
from ._node.node import Node, NodeStatistics, Proxy, ProxyMethod
from ._node.remote import Client, Ping
from ._rpc.context import CallContext, current_call
from ._rpc.outbound import RoutedStream, Stream
from ._rpc.server import Worker, WorkerStatus
from ._rpc.services import MethodSpec, ServiceSpec, method, on_event, service, stream
from ._wire.codec import PROTOCOL_MAX, PROTOCOL_MIN, TypeRegistry, register_type
from ._wire.handshake import PeerInfo

__version__ = "0.1.0"

# A library logs and lets the application decide where it goes: without this, Python's
# last-resort handler would print mesh's warnings on stderr of every program (meshctl's
# one-line errors got a second line).
logging.getLogger("mesh").addHandler(logging.NullHandler())

__all__ = [
    "ENV_VARS",
    "PROFILES",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "SYSTEM_TOPICS",
    "AuthenticationFailed",
    "CallContext",
    "CallError",
    "CallTimeout",
    "Client",
    "Config",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "Event",
    "EventStatistics",
    "HistogramSnapshot",
    "IncompatibleVersion",
    "InvalidTopic",
    "Limits",
    "MemberInfo",
    "MembershipSettings",
    "MeshChange",
    "MeshError",
    "MethodSpec",
    "MethodStatistics",
    "NoMeshFound",
    "NoProvider",
    "Node",
    "NodeStatistics",
    "Overloaded",
    "PeerInfo",
    "Ping",
    "ProcessStatistics",
    "ProtocolError",
    "Provider",
    "ProviderLost",
    "Proxy",
    "ProxyMethod",
    "RecordTooLarge",
    "Reject",
    "RemoteError",
    "RoutedStream",
    "ServiceListing",
    "ServiceSpec",
    "ServiceStatistics",
    "SessionLost",
    "Stream",
    "Subscription",
    "SupervisionSettings",
    "Timings",
    "TopicStatistics",
    "TransportError",
    "TypeRegistry",
    "Unavailable",
    "UnknownMethod",
    "Worker",
    "WorkerStatus",
    "WrongMesh",
    "__version__",
    "current_call",
    "method",
    "on_event",
    "register_type",
    "service",
    "stream",
    "sync",
    "write_keypair",
    "write_secret",
]
