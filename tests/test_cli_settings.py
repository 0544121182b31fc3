"""Every meshctl command, with its settings from flags, from ``MESH_*`` alone, or from
nothing but discovery (the mesh's name, no seed, no option): each prints what it is for.

docs/getting-started.md has a user ``export MESH_SEEDS=... MESH_NAME=...`` and then try
the commands; several of them used to crash there (they read the settings before the
run had made them). One mesh of two node processes serves every case: calc (with an
in-memory job store) as the seed, and clock publishing ``clock.tick`` ten times a second.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mesh
from cli._common import Settings
from cli.main import COMMANDS
from tests.programs import ROOT, before_exec, node_env, node_program, read_line

MESHCTL = str(Path(sys.executable).parent / "meshctl")
MODES = ("flags", "env", "discovery")
#: Commands that read no mesh settings: they make their own mesh or only files.
NO_MESH_SETTINGS = {"demo": "starts a mesh of its own", "keygen": "writes key files only"}


@dataclass(frozen=True)
class Mesh:
    name: str
    seed: str


@pytest.fixture(scope="module")
def running() -> Iterator[Mesh]:
    """calc (the seed, with a job store) and clock, discoverable on 127.0.0.1."""
    name = f"cli-settings-{secrets.token_hex(4)}"
    common = {"MESH_NAME": name, "MESH_DISCOVERY": "on", "MESH_INTERFACE": "127.0.0.1"}
    calc_env = node_env(MESH_NODE_NAME="calc", MESH_JOBS_DB=":memory:", **common)
    with node_program("nodes.calc", calc_env) as calc:
        seed = read_line(calc)["address"]
        clock_env = node_env(MESH_NODE_NAME="clock", MESH_SEEDS=seed, CLOCK_INTERVAL="0.1")
        with node_program("nodes.clock", {**clock_env, **common}) as clock:
            read_line(clock)
            ready = Mesh(name, seed)
            _settled(ready)
            yield ready


def _settled(running: Mesh, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = meshctl(running, "flags", "nodes", "--json")
        if result.returncode == 0:
            members = json.loads(result.stdout)
            if {m["name"] for m in members if m["status"] == "alive"} == {"calc", "clock"}:
                return
        assert time.monotonic() < deadline, f"the mesh did not settle: {result}"
        time.sleep(0.2)


def settings_of(running: Mesh, mode: str) -> tuple[list[str], dict[str, str]]:
    """The options after the command and the environment of one way to give settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    if mode == "flags":
        return ["--mesh", running.name, "--seed", running.seed, "--profile", "test"], env
    if mode == "env":
        env.update(MESH_NAME=running.name, MESH_SEEDS=running.seed, MESH_PROFILE="test")
        return [], env
    assert mode == "discovery"
    env["MESH_NAME"] = running.name  # which mesh to look for: nothing else is said
    return [], env


def meshctl(
    running: Mesh, mode: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    options, env = settings_of(running, mode)
    return subprocess.run(
        [MESHCTL, *args, *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def dead_letter(running: Mesh) -> str:
    """A job that failed its one attempt, as ``meshctl jobs`` lists it: its id."""
    job_id = ok(meshctl(running, "flags", "enqueue", "calc.fail", "boom", "--retries", ""))
    job_id = job_id.strip()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listing = ok_json(meshctl(running, "flags", "jobs", "--json"))
        if any(job["id"] == job_id for entry in listing for job in entry.get("dead", [])):
            return job_id
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never became a dead letter")


# Each case runs one command as a person does, with no option but the settings under
# test (``--json`` is a global option too: it made the settings early and hid the crash),
# and checks what it printed.
def rows(out: str) -> dict[str, list[str]]:
    """A table's rows by their first cell (the first such row, where tables follow)."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.strip():
            found.setdefault(line.split()[0], line.split())
    return found


def _nodes(running: Mesh, mode: str) -> None:
    table = rows(ok(meshctl(running, mode, "nodes")))
    assert table["calc"][3:5] == ["alive", "calc"]
    assert table["clock"][3:5] == ["alive", "clock"]


def _services(running: Mesh, mode: str) -> None:
    table = rows(ok(meshctl(running, mode, "services")))
    assert table["calc"][1:4] == ["1.0.0", "calc", "up"]
    assert table["clock"][1:4] == ["1.0.0", "clock", "up"]


def _inspect(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "inspect", "calc"))
    assert out.startswith("service calc: version 1.0.0; 1 provider")
    assert "add(a: 'float', b: 'float') -> 'float'  [unary, idempotent]" in out


def _deps(running: Mesh, mode: str) -> None:
    table = rows(ok(meshctl(running, mode, "deps")))
    assert table["calc"][1] == "up"


def _call(running: Mesh, mode: str) -> None:
    assert ok(meshctl(running, mode, "call", "calc.add", "1", "2")).strip() == "3"


def _stream(running: Mesh, mode: str) -> None:
    assert ok(meshctl(running, mode, "stream", "calc.count", "3")).split() == ["0", "1", "2"]


def _ping(running: Mesh, mode: str) -> None:
    table = rows(ok(meshctl(running, mode, "ping")))
    for name in ("calc", "clock"):
        assert table[name][3].endswith("ms"), table


def _status(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "status", "calc"))
    assert re.match(r"calc \([0-9a-f]{12}\): pool of \d+", out), out


def _publish(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "publish", "settings.test", '{"n": 1}'))
    assert re.fullmatch(r"published settings\.test seq \d+ by \S+\n", out), out


def _subscribe(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "subscribe", "clock.", "--count", "1"))
    assert re.fullmatch(r"\S+ clock\.tick clock \{\"n\": \d+, .*\}\n", out), out


def _enqueue(running: Mesh, mode: str) -> None:
    job_id = ok(meshctl(running, mode, "enqueue", "calc.add", "1", "2")).strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), job_id


def _jobs(running: Mesh, mode: str) -> None:
    job_id = dead_letter(running)
    out = ok(meshctl(running, mode, "jobs"))
    assert any(
        line.split()[:4] == ["calc", "dead", job_id, "calc.fail"] for line in out.splitlines()
    )


def _jobs_retry(running: Mesh, mode: str) -> None:
    job_id = dead_letter(running)
    assert ok(meshctl(running, mode, "jobs", "retry", job_id)) == f"retry: {job_id} on calc\n"


def _jobs_drop(running: Mesh, mode: str) -> None:
    job_id = dead_letter(running)
    assert ok(meshctl(running, mode, "jobs", "drop", job_id)) == f"drop: {job_id} on calc\n"


def _run(running: Mesh, mode: str) -> None:
    options, env = settings_of(running, mode)
    name = f"hosted-{mode}"
    proc = subprocess.Popen(
        [MESHCTL, "run", "nodes.echo", "--name", name, *options],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=before_exec(),
    )
    try:
        assert read_line(proc, timeout=15)["event"] == "ready"
        deadline = time.monotonic() + 15
        while True:  # the mesh lists the new member: it joined with these settings
            members = ok_json(meshctl(running, "flags", "nodes", "--json"))
            if any(m["name"] == name and m["status"] == "alive" for m in members):
                break
            assert time.monotonic() < deadline, f"{name} never listed: {members}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _watch(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "watch", "--count", "1"))
    assert re.match(rf"mesh {running.name} at \S+: \d+ nodes \(\d+ alive\), 2 services", out)
    table = rows(out)
    assert table["calc"][3] == table["clock"][3] == "alive", out


def _bench(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "bench", "calc.add", "1", "2", "--calls", "20"))
    assert re.match(r"calc\.add: 20 calls in .*, 0 failed\n", out), out


def _doctor(running: Mesh, mode: str) -> None:
    out = ok(meshctl(running, mode, "doctor"))
    assert re.match(rf"ok +settings +mesh {running.name!r}", out), out
    assert "0 failed" in out.splitlines()[-1], out


CASES: dict[str, Callable[[Mesh, str], None]] = {
    "nodes": _nodes,
    "services": _services,
    "inspect": _inspect,
    "deps": _deps,
    "call": _call,
    "stream": _stream,
    "ping": _ping,
    "status": _status,
    "publish": _publish,
    "subscribe": _subscribe,
    "enqueue": _enqueue,
    "jobs": _jobs,
    "jobs retry": _jobs_retry,
    "jobs drop": _jobs_drop,
    "run": _run,
    "watch": _watch,
    "bench": _bench,
    "doctor": _doctor,
}


def test_every_command_is_covered_here() -> None:
    covered = {case.split()[0] for case in CASES} | set(NO_MESH_SETTINGS)
    assert covered == set(COMMANDS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("command", list(CASES))
def test_every_command_with_settings_from_flags_env_or_discovery(
    running: Mesh, command: str, mode: str
) -> None:
    CASES[command](running, mode)


def test_timeout_keeps_the_profiles_other_timings() -> None:
    """``--timeout`` (or MESH_TIMEOUT) changes the two timeouts and nothing else: a run
    with ``--profile test`` still supervises with the test profile's settings."""
    config = Settings(timeout=1.5, profile="test").config()
    profile = mesh.PROFILES["test"]
    assert config.timings.connect_timeout == config.timings.call_timeout == 1.5
    assert config.timings.supervision == profile.supervision
    assert config.timings.membership == profile.membership
    assert config.timings.grace_period == profile.grace_period
