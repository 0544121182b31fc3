"""mesh: a brokerless service mesh for Python on ZeroMQ."""

import logging

from . import sync
from ._client import RoutedStream, Stream
from ._config import (
    ENV_VARS,
    PROFILES,
    Config,
    Limits,
    MembershipSettings,
    SupervisionSettings,
    Timings,
)
from ._context import CallContext, current_call
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
from ._eventbus import EventStatistics, Subscription
from ._events import SYSTEM_TOPICS, Event, TopicStatistics
from ._handshake import PeerInfo
from ._listing import MemberInfo, MeshChange, Provider, ServiceListing
from ._node import Node, NodeStatistics, Proxy, ProxyMethod
from ._remote import Client, Ping
from ._security import write_keypair, write_secret
from ._server import Worker, WorkerStatus
from ._services import MethodSpec, ServiceSpec, method, on_event, service, stream
from ._stats import (
    HistogramSnapshot,
    MethodStatistics,
    ProcessStatistics,
    ServiceStatistics,
)
from ._wire import PROTOCOL_MAX, PROTOCOL_MIN, TypeRegistry, register_type

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
