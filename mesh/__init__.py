"""mesh: a brokerless service mesh for Python on ZeroMQ."""

from ._config import ENV_VARS, PROFILES, Config, Limits, Timings
from ._errors import (
    CallError,
    CallTimeout,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    IncompatibleVersion,
    MeshError,
    NoProvider,
    ProtocolError,
    RemoteError,
    TransportError,
    WrongMesh,
)
from ._node import Node, NodeStatistics, PeerInfo
from ._wire import PROTOCOL_MAX, PROTOCOL_MIN, TypeRegistry, register_type

__version__ = "0.1.0"

__all__ = [
    "ENV_VARS",
    "PROFILES",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "CallError",
    "CallTimeout",
    "Config",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "IncompatibleVersion",
    "Limits",
    "MeshError",
    "NoProvider",
    "Node",
    "NodeStatistics",
    "PeerInfo",
    "ProtocolError",
    "RemoteError",
    "Timings",
    "TransportError",
    "TypeRegistry",
    "WrongMesh",
    "__version__",
    "register_type",
]
