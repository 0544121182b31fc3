"""The public surface is what we mean: names, one error tree, typed package, meshctl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import mesh
from cli.main import meshctl


def test_public_names() -> None:
    assert set(mesh.__all__) == {
        # configuration
        "ENV_VARS", "PROFILES", "Config", "Limits", "Timings", "MembershipSettings",
        "SupervisionSettings",
        # the node, services and calls
        "Node", "NodeStatistics", "PeerInfo", "Proxy", "ProxyMethod", "Stream",
        "service", "method", "stream", "current_call", "CallContext",
        "ServiceSpec", "MethodSpec", "sync", "RoutedStream",
        # the mesh as a node sees it, and a client that looks in without joining
        "MemberInfo", "MeshChange", "Provider", "ServiceListing", "Client", "Ping",
        # events
        "Event", "Subscription", "InvalidTopic", "SYSTEM_TOPICS", "on_event",
        # statistics
        "EventStatistics", "TopicStatistics", "Worker", "WorkerStatus",
        "ServiceStatistics", "MethodStatistics", "HistogramSnapshot", "ProcessStatistics",
        # the wire
        "PROTOCOL_MAX", "PROTOCOL_MIN", "TypeRegistry", "register_type",
        # errors
        "MeshError", "ConfigError", "ProtocolError", "TransportError", "ConnectError",
        "ConnectTimeout", "WrongMesh", "IncompatibleVersion", "CallError", "CallTimeout",
        "NoProvider", "UnknownMethod", "Overloaded", "Unavailable", "RemoteError",
        "AuthenticationFailed", "RecordTooLarge", "ProviderLost", "NoMeshFound",
        "Reject", "SessionLost",
        # security
        "write_secret", "write_keypair",
        "__version__",
    }  # fmt: skip
    for name in mesh.__all__:
        assert getattr(mesh, name) is not None


def test_every_error_is_a_mesh_error_with_a_code() -> None:
    errors = [v for v in vars(mesh).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(errors) == 22
    codes = set()
    for cls in errors:
        assert issubclass(cls, mesh.MeshError)
        codes.add(cls.code)
    assert len(codes) == len(errors)
    assert issubclass(mesh.CallTimeout, TimeoutError)
    assert issubclass(mesh.ConnectTimeout, TimeoutError)
    assert mesh.Overloaded.retryable
    assert mesh.Unavailable.retryable
    assert mesh.SessionLost.retryable
    assert not mesh.RemoteError.retryable


def test_package_is_typed() -> None:
    assert (Path(mesh.__file__).parent / "py.typed").exists()


def test_only_the_transport_and_security_import_zmq() -> None:
    package = Path(mesh.__file__).parent
    importers = sorted(
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "import zmq" in p.read_text()
    )
    assert importers == ["_io/security.py", "_io/transport.py"]


def test_meshctl_is_a_click_group_with_a_version() -> None:
    result = CliRunner().invoke(meshctl, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"meshctl, version {mesh.__version__}"


def test_meshctl_console_script_is_installed() -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "meshctl", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: meshctl" in result.stdout
