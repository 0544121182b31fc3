"""Config: defaults, validation naming the field, and MESH_* naming the variable."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from mesh import ENV_VARS, PROFILES, Config, ConfigError, Limits, MeshError, Node, Timings

#: A CURVE public key as addresses carry it (64 hex characters).
KEY = "ab" * 32


def test_defaults_are_safe_and_complete() -> None:
    config = Config()
    assert (config.host, config.port, config.pub_port) == (None, 0, 0)
    assert config.bind_host == config.advertised_host == "127.0.0.1"
    assert config.profile == "lan"
    assert config.timings == PROFILES["lan"]
    assert config.seeds == ()
    assert config.limits == Limits()


def test_config_is_frozen_and_replace_makes_variants() -> None:
    config = Config(name="a")
    with pytest.raises(AttributeError):
        config.name = "b"  # type: ignore[misc]
    assert config.replace(name="b").name == "b"
    assert config.replace(profile="test").timings == PROFILES["test"]
    with pytest.raises(ConfigError, match="unknown setting"):
        config.replace(nmae="typo")


def test_profiles_order_their_timings() -> None:
    assert PROFILES["test"].connect_timeout <= PROFILES["local"].connect_timeout
    assert PROFILES["local"].connect_timeout <= PROFILES["lan"].connect_timeout


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("port", 70000, "port: expected a port number"),
        ("port", "80", "port: expected a port number"),
        ("mesh", "has space", "mesh: a mesh name is"),
        ("mesh", "", "mesh: a mesh name is"),
        ("name", "", "name: a node name is"),
        ("name", "x" * 64, "name: a node name is"),
        ("host", "", "host: expected a host name"),
        ("profile", "fast", "profile: expected one of lan, local, test"),
        ("seeds", "tcp://a:1", "seeds: expected a list"),
        ("seeds", ("a:1",), r"seeds: 'a:1' is not of the form"),
        ("seeds", ("tcp://a:99999",), "seeds: .* needs a port number"),
        ("seeds", ("tcp://a:0",), "seeds: .* needs a port number"),
        ("seeds", ("tcp://a:1#zzz",), "seeds: 'tcp://a:1#zzz': not a CURVE public key"),
        ("seeds", (f"tcp://a:1#{KEY[:-1]}g",), "seeds: .*: not a CURVE public key"),
        ("interface", "eth 0", "interface: expected a network interface"),
        ("timings", "fast", "timings: expected a Timings"),
    ],
)
def test_invalid_fields_raise_config_error_naming_the_field(
    field: str, value: object, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Config(**{field: value})  # type: ignore[arg-type]


def test_limits_and_timings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_depth: expected a positive integer"):
        Limits(max_depth=0)
    with pytest.raises(ConfigError, match=r"timings\.call_timeout"):
        Timings(connect_timeout=1, call_timeout=float("nan"), grace_period=1)


def test_wildcard_host_needs_an_advertised_address() -> None:
    with pytest.raises(ConfigError, match="set advertise"):
        _ = Config(host="0.0.0.0").advertised_host
    assert Config(host="0.0.0.0", advertise="10.0.0.5").advertised_host == "10.0.0.5"


def test_from_env_reads_every_documented_variable(tmp_path: Path) -> None:
    env = {
        "MESH_NAME": "prod",
        "MESH_NODE_NAME": "worker-1",
        "MESH_HOST": "10.0.0.5",
        "MESH_PORT": "7000",
        "MESH_PUB_PORT": "7001",
        "MESH_INTERFACE": "eth0, 10.0.0.5",
        "MESH_GOSSIP_PORT": "7002",
        "MESH_DISCOVERY": "off",
        "MESH_ADVERTISE": "worker-1.lan",
        "MESH_SEEDS": f"tcp://10.0.0.1:7000, tcp://10.0.0.2:7000#{KEY}",
        "MESH_PROFILE": "local",
        "MESH_WORKERS": "4",
        "MESH_SECRET_FILE": str(tmp_path / "secret"),
        "MESH_KEYS_DIR": str(tmp_path / "keys"),
        "MESH_TAGS": "zone=eu-1, rack=7",
        "MESH_JOBS_DB": str(tmp_path / "jobs.db"),
        "MESH_JOBS_SYNCHRONOUS": "normal",
        "MESH_JOBS_LEASE": "2.5",
        "MESH_JOBS_CONCURRENCY": "8",
        "MESH_MAX_MESSAGE_SIZE": "1048576",
        "MESH_MAX_CALLS_PER_PEER": "50",
        "MESH_MAX_SOCKETS": "4096",
    }
    assert set(env) == set(ENV_VARS)
    config = Config.from_env(env)
    assert config == Config(
        mesh="prod",
        name="worker-1",
        host="10.0.0.5",
        port=7000,
        pub_port=7001,
        interfaces=("eth0", "10.0.0.5"),
        gossip_port=7002,
        discovery=False,
        advertise="worker-1.lan",
        seeds=("tcp://10.0.0.1:7000", f"tcp://10.0.0.2:7000#{KEY}"),
        profile="local",
        workers=4,
        secret_file=tmp_path / "secret",
        keys_dir=tmp_path / "keys",
        tags={"zone": "eu-1", "rack": "7"},  # type: ignore[arg-type]
        jobs_db=tmp_path / "jobs.db",
        jobs_synchronous="NORMAL",
        jobs_lease=2.5,
        jobs_concurrency=8,
        limits=Limits(max_message_size=1048576, max_calls_per_peer=50, max_sockets=4096),
    )


def test_tags_are_checked_and_listed_in_the_record() -> None:
    from mesh import Node

    config = Config(tags={"zone": "eu-1", "rack": "7"})  # type: ignore[arg-type]
    assert config.tags == (("rack", "7"), ("zone", "eu-1"))
    assert dict(Node(config).listing().tags) == {"zone": "eu-1", "rack": "7"}
    for bad, match in [
        ({"": "x"}, "tag name"),
        ({"k": "x" * 257}, "at most 256"),
        ({f"k{i}": "" for i in range(65)}, "at most 64"),
        ("zone=eu", "mapping"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Config(tags=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="MESH_TAGS: expected name=value"):
        Config.from_env({"MESH_TAGS": "zone"})


def test_discovery_runs_on_the_chosen_interfaces_else_loopback() -> None:
    assert Config().discovery_interfaces == ("127.0.0.1",)
    assert Config(interface="eth0", interfaces=("eth1", "eth0")).discovery_interfaces == (
        "eth0",
        "eth1",
    )
    with pytest.raises(ConfigError, match="MESH_DISCOVERY: expected on or off"):
        Config.from_env({"MESH_DISCOVERY": "maybe"})
    with pytest.raises(ConfigError, match="interfaces: expected a list"):
        Config(interfaces="eth0")  # type: ignore[arg-type]


def test_an_interface_alone_gives_the_address_to_bind_and_announce() -> None:
    # (a real interface other than loopback: tests/test_lan_readme.py, in a namespace)
    for config in (
        Config(interfaces=("lo",)),
        Config(interface="lo", interfaces=("nosuch0",)),  # the first one counts
        Config.from_env({"MESH_INTERFACE": "lo"}),
        Config(interfaces=("127.0.0.1", "lo")),  # an IPv4 address stands for itself
        Config(host="0.0.0.0", interfaces=("lo",)),  # a wildcard announces the interface
    ):
        assert config.advertised_host == "127.0.0.1", config
    assert Config(interfaces=("lo",)).bind_host == "127.0.0.1"
    assert Config(host="0.0.0.0", interfaces=("lo",)).bind_host == "0.0.0.0"
    # an explicit host wins, whatever the interface
    explicit = Config.from_env({"MESH_HOST": "localhost", "MESH_INTERFACE": "nosuch0"})
    assert explicit.bind_host == explicit.advertised_host == "localhost"


def test_an_interface_that_does_not_exist_is_a_clear_error() -> None:
    config = Config.from_env({"MESH_INTERFACE": "nosuch0", "MESH_DISCOVERY": "off"})
    for attribute in ("bind_host", "advertised_host"):
        with pytest.raises(ConfigError) as caught:
            getattr(config, attribute)
        message = str(caught.value)
        assert "no network interface named 'nosuch0'" in message, message
        assert re.search(r"this machine has: .*\blo\b", message), message
        assert "MESH_HOST" in message, message
    with pytest.raises(ConfigError, match="is IPv6"):
        _ = Config(interfaces=("::1",)).bind_host


async def test_a_node_on_an_interface_that_does_not_exist_does_not_start() -> None:
    node = Node(Config(interfaces=("nosuch0",), discovery=False, profile="test"))
    with pytest.raises(ConfigError, match="no network interface named 'nosuch0'"):
        await node.start()
    with pytest.raises(MeshError, match="not started"):
        _ = node.address


def test_default_names_say_host_program_and_process() -> None:
    host = socket.gethostname().split(".")[0]
    name = Config().name
    assert re.fullmatch(rf"{re.escape(host[:24])}-[A-Za-z0-9_.-]+-{os.getpid()}", name), name
    assert Config.default_name("calc") == f"{host[:24]}-calc-{os.getpid()}"
    assert Config.default_name("my prog/x") == f"{host[:24]}-my-prog-x-{os.getpid()}"
    assert Config.default_name("") == f"{host[:24]}-python-{os.getpid()}"
    assert len(Config.default_name("p" * 100)) <= 63
    assert Config.from_env({"MESH_NODE_NAME": "worker-1"}).name == "worker-1"


def test_from_env_ignores_unset_and_empty_and_applies_overrides() -> None:
    config = Config.from_env({"MESH_NAME": "", "MESH_PORT": "7000"}, port=0, name="x")
    assert (config.mesh, config.port, config.name) == ("mesh", 0, "x")


@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("MESH_PORT", "seventy", "MESH_PORT: expected an integer, got 'seventy'"),
        ("MESH_PORT", "70000", "MESH_PORT: expected a port number"),
        ("MESH_PORT", "7_000", "MESH_PORT: expected an integer, got '7_000'"),
        ("MESH_NAME", "bad name!", "MESH_NAME: a mesh name is"),
        ("MESH_PROFILE", "fast", "MESH_PROFILE: expected one of"),
        ("MESH_SEEDS", "10.0.0.1:7000", "MESH_SEEDS: '10.0.0.1:7000' is not of the form"),
        ("MESH_MAX_MESSAGE_SIZE", "-1", "MESH_MAX_MESSAGE_SIZE: expected a positive integer"),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Config.from_env({variable: value})
