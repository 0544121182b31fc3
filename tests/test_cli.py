"""meshctl as a user runs it: real processes, real output (``meshctl demo``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

MESHCTL = str(Path(sys.executable).parent / "meshctl")
#: ``meshctl demo`` must run end to end within this (it takes about 2 s alone).
DEMO_SECONDS = 20


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``meshctl demo`` with no MESH_* setting of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    started = time.monotonic()
    result = subprocess.run(
        [MESHCTL, "demo", *args],
        capture_output=True,
        text=True,
        timeout=DEMO_SECONDS,
        check=False,
        env=env,
    )
    assert time.monotonic() - started < DEMO_SECONDS
    return result


def processes_of(mesh_name: str) -> list[int]:
    """PIDs of processes that run with MESH_NAME=``mesh_name`` (the demo's nodes)."""
    wanted = f"MESH_NAME={mesh_name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if wanted in environ:
            found.append(int(entry))
    return found


def kept_demo(nodes: int) -> subprocess.Popen[str]:
    """``meshctl demo --keep --json`` running, with no MESH_* setting of the test run."""
    return subprocess.Popen(
        [MESHCTL, "demo", "--keep", "--json", "--nodes", str(nodes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
    )


def assert_none_left(mesh_name: str) -> None:
    assert mesh_name.startswith("demo-")
    assert processes_of(mesh_name) == []


@pytest.mark.timeout(60)
def test_demo_starts_lists_calls_follows_and_stops_a_local_mesh() -> None:
    result = demo("--json")
    assert result.returncode == 0, result.stderr
    listing: dict[str, Any] = json.loads(result.stdout)
    assert_none_left(listing["mesh"])
    assert listing["left_cleanly"] == 4
    assert 0 < listing["seconds"] < DEMO_SECONDS
    nodes = listing["nodes"]
    assert [n["name"] for n in nodes] == ["calc-1", "clock-1", "echo-1", "kv-1"]
    assert len({n["id"] for n in nodes}) == 4
    assert all(n["address"].startswith("tcp://127.0.0.1:") for n in nodes)
    assert all(n["protocol"] == 1 for n in nodes)
    assert [n["services"] for n in nodes] == [
        {"calc": "1.0.0"}, {"clock": "1.0.0"}, {"echo": "0.0.0"}, {"kv": "1.0.0"},
    ]  # fmt: skip
    # the listing is the gossiped one, read through the first node
    assert listing["via"] == nodes[0]["address"]
    assert [n["status"] for n in nodes] == ["alive"] * 4
    assert all(n["rss_bytes"] > 0 and n["uptime"] >= 0 for n in nodes)
    assert [s["name"] for s in listing["services"]] == ["calc", "clock", "echo", "kv"]
    assert [p["node"] for p in listing["services"][3]["providers"]] == ["kv-1"]

    calls = {(c["target"], json.dumps(c["args"])): c for c in listing["calls"]}
    assert calls["calc.add", "[2, 3]"]["result"] == 5
    assert calls["echo.say", '["hello, mesh"]']["result"] == "hello, mesh"
    assert calls["calc.div", "[1, 0]"]["error"]["type"] == "RemoteError"
    assert calls["calc.slow", "[5]"]["error"]["type"] == "CallTimeout"
    assert calls["kv.get", '["greeting"]']["result"] == "hello"
    assert calls["kv.keys", "[]"]["result"] == ["greeting", "visits"]
    assert calls["kv.delete", '["visits"]']["result"] is True
    assert isinstance(calls["clock.now", "[]"]["result"], float)
    assert listing["stream"]["items"] == [0, 1, 2, 3, 4]

    events = listing["events"]
    changes = [e["data"] for e in events if e["topic"] == "kv.changed"]
    assert changes == [
        {"key": "greeting", "op": "set", "value": "hello"},
        {"key": "visits", "op": "set", "value": 1},
        {"key": "visits", "op": "delete", "value": None},
    ]
    ticks = [e for e in events if e["topic"] == "clock.tick"]
    assert len(ticks) == 3
    assert {e["publisher_name"] for e in ticks} == {"clock-1"}
    numbers = [e["data"]["n"] for e in ticks]
    assert numbers == list(range(numbers[0], numbers[0] + 3))
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


@pytest.mark.timeout(60)
def test_demo_for_people_prints_the_nodes_and_services_tables() -> None:
    result = demo("--nodes", "5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    mesh_name = out.split()[1].rstrip(":")
    assert_none_left(mesh_name)
    assert "5 nodes on 127.0.0.1, listed by gossip through tcp://127.0.0.1:" in out
    lines = out.splitlines()
    # meshctl nodes and meshctl services, as they print
    nodes_at = next(i for i, line in enumerate(lines) if line.startswith("$ meshctl nodes --seed"))
    assert f"--mesh {mesh_name}" in lines[nodes_at]
    assert lines[nodes_at + 1].split()[:5] == ["NAME", "ID", "ADDRESS", "STATUS", "SERVICES"]
    rows = {line.split()[0]: line.split() for line in lines[nodes_at + 2 : nodes_at + 7]}
    assert set(rows) == {"calc-1", "clock-1", "echo-1", "kv-1", "plain-1"}
    assert all(row[3] == "alive" for row in rows.values())
    assert rows["plain-1"][4] == "-"
    services_at = lines.index(next(line for line in lines if line.startswith("$ meshctl services")))
    assert lines[services_at + 1].split()[:3] == ["NAME", "VERSIONS", "PROVIDERS"]
    assert [line.split()[0] for line in lines[services_at + 2 : services_at + 6]] == [
        "calc", "clock", "echo", "kv",
    ]  # fmt: skip

    assert "calc.add(2, 3) = 5" in out
    assert "calc.slow(5) -> CallTimeout" in out
    assert "kv.get('greeting') = 'hello'" in out
    assert "stream calc.count(5): 0 1 2 3 4" in out
    assert 'kv.changed kv-1 {"key": "greeting", "op": "set", "value": "hello"}' in out
    assert out.count(" clock.tick clock-1 {") == 3
    assert "all 5 nodes left cleanly (exit 0 after SIGTERM); the demo took" in out


@pytest.mark.timeout(60)
def test_demo_keep_runs_until_interrupted_and_says_what_to_try() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    proc = kept_demo(3)
    mesh_name = ""
    try:
        assert proc.stdout is not None
        running = json.loads(proc.stdout.readline())
        mesh_name = running["mesh"]
        assert [n["name"] for n in running["nodes"]] == ["calc-1", "echo-1", "kv-1"]
        seed = running["via"]
        tries = running["try"]
        assert f"meshctl nodes --seed {seed} --mesh {mesh_name}" in tries
        assert all(t.endswith(f"--seed {seed} --mesh {mesh_name}") for t in tries)
        assert len(processes_of(mesh_name)) == 3
        # the commands it suggests work on the mesh while it runs
        get = next(t for t in tries if " kv.get " in t).split()
        assert get[:4] == ["meshctl", "call", "kv.get", "colour"]
        asked = subprocess.run(
            [MESHCTL, "call", "kv.get", "greeting", *get[4:], "--json"],
            capture_output=True,
            text=True,
            timeout=DEMO_SECONDS,
            check=False,
            env=env,
        )
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout) == "hello"
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, errors = proc.communicate(timeout=DEMO_SECONDS)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, errors
    assert json.loads(rest)["left_cleanly"] == 3
    assert_none_left(mesh_name)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_demo_keep_stopped_by_a_signal_leaves_no_node_running(sig: signal.Signals) -> None:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does (its nodes leave cleanly, exit 0);
    even after a SIGKILL of the demo, its nodes get SIGTERM (they die with their parent)."""
    proc = kept_demo(2)
    mesh_name = ""
    try:
        assert proc.stdout is not None
        mesh_name = json.loads(proc.stdout.readline())["mesh"]
        assert len(processes_of(mesh_name)) == 2
        proc.send_signal(sig)
        rest, errors = proc.communicate(timeout=DEMO_SECONDS)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 0, errors
        assert json.loads(rest)["left_cleanly"] == 2
    deadline = time.monotonic() + DEMO_SECONDS
    while processes_of(mesh_name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_none_left(mesh_name)


def test_enqueue_refuses_node_a_usage_error_before_connecting() -> None:
    meshctl = str(Path(sys.executable).parent / "meshctl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    result = subprocess.run(
        [meshctl, "enqueue", "mailer.send", "x", "--node", "n1", "--no-discovery"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--node is not supported" in result.stderr


#: Nested 5,000 deep: json.loads fails with RecursionError; 70 deep: past Limits.max_depth.
DEEP = "[" * 5000 + "]" * 5000
DEEPISH = '{"a": ' * 70 + "1" + "}" * 70
NOWHERE = ["--seed", "tcp://127.0.0.1:9", "--no-discovery"]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["call", "calc.add", DEEP, *NOWHERE], 2, "nests deeper than 64 levels"),
        (["call", "calc.add", DEEPISH, *NOWHERE], 2, "nests deeper than 64 levels"),
        (["call", "calc.add", "--args-json", DEEP, *NOWHERE], 2, "--args-json: nests deeper"),
        (["call", "calc.add", "--kw", f"a={DEEP}", *NOWHERE], 2, "nests deeper"),
        (["publish", "a.b", DEEP, *NOWHERE], 2, "nests deeper than 64 levels"),
        (["enqueue", "calc.add", "1", "--retries", "-1", *NOWHERE], 2, "--retries: expected"),
        (["enqueue", "calc.add", "1", "--retries", "1,inf", *NOWHERE], 2, "--retries: expected"),
        (["enqueue", "calc.add", "1", "--retries", "abc", *NOWHERE], 2, "--retries: expected"),
        (["nodes", "--seed", "tcp://127.0.0.1:9#zzz"], 2, "not a CURVE public key"),
        (["keygen", "--secret-file", "/proc/x/y"], 1, "cannot write /proc/x"),
        (["keygen", "--keys-dir", "/proc/x/y"], 1, "cannot write /proc/x"),
    ],
    ids=lambda v: v if isinstance(v, int) else None,
)
def test_bad_input_is_one_line_and_the_documented_exit_code_at_once(
    args: list[str], code: int, says: str
) -> None:
    """docs/cli.md, "Exit codes": 2 for bad usage, 1 for a failure; one ``error:`` line
    on stderr, no traceback, and no waiting for a mesh that the input never reaches (a
    seed with a malformed key took 5.3 s and exited 5)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    started = time.monotonic()
    result = subprocess.run(
        [MESHCTL, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    took = time.monotonic() - started
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert says in lines[0], lines
    assert result.stdout == ""
    assert took < 4, f"{took:.1f} s"  # at once: no connecting, no 5 s wait
