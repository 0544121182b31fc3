"""meshctl run, watch, bench and doctor against real nodes on 127.0.0.1.

meshctl runs as a user runs it: the installed entry point, in a subprocess, driven with
asyncio so that the nodes of the test (in its own loop: ``test`` profile, discovery off
unless a test turns it on, on 127.0.0.1 only) keep answering while it runs. Every
meshctl process is waited for, and killed by PID if it has not exited at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import mesh
from mesh import Node
from nodes.calc import Calc

MESHCTL = str(Path(sys.executable).parent / "meshctl")
#: The keys of the line a node program prints once it serves (nodes/_program.py).
READY_KEYS = {"event", "id", "name", "mesh", "address", "pub_address", "gossip_address"}

pytestmark = pytest.mark.timeout(30)

GREETER = """
from mesh import method, service


@service("greeter", version="2.0.0")
class Greeter:
    @method
    async def hello(self, name: str) -> str:
        return f"hello, {name}"


class Plain:
    pass
"""


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(more)
    return env


@asynccontextmanager
async def started(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[Process]:
    """meshctl running with ``args``; killed (by PID) at the end if it has not exited."""
    proc = await asyncio.create_subprocess_exec(
        MESHCTL, *args, stdin=asyncio.subprocess.DEVNULL, stdout=PIPE, stderr=PIPE,
        cwd=cwd, env=env or _env(),
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        await proc.communicate()


async def meshctl(
    *args: str, timeout: float = 20, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run meshctl to the end: (exit code, stdout, stderr)."""
    async with started(*args, cwd=cwd, env=env) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


async def next_json(proc: Process, timeout: float = 15) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "meshctl closed its stdout"
    return dict(json.loads(line))


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def a_mesh() -> str:
    return f"tools-{secrets.token_hex(4)}"


def at(node: Node) -> list[str]:
    """The options that point meshctl at ``node``'s mesh through ``node``."""
    return ["--seed", node.address, "--mesh", node.mesh, "--profile", "test", "--no-discovery"]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def calc_mesh(*names: str, **settings: Any) -> AsyncIterator[list[Node]]:
    """Nodes of a mesh of their own; the first offers calc and is the others' seed."""
    name = a_mesh()
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for node_name in names:
            seeds = (nodes[0].address,) if nodes else ()
            options = {"discovery": False, **settings}
            node = Node(name=node_name, mesh=name, profile="test", seeds=seeds, **options)
            if not nodes:
                node.add_service(Calc())
            nodes.append(await stack.enter_async_context(node))

        def formed() -> bool:
            return all(
                set(names) <= {m.name for m in n.members() if m.status == "alive" and m.record}
                for n in nodes
            )

        await eventually(formed, 10, "the mesh formed")
        yield nodes


# -- meshctl run -------------------------------------------------------------------------


async def test_run_hosts_services_another_node_calls_and_leaves_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    (tmp_path / "greeter.py").write_text(GREETER)
    name = a_mesh()
    args = ["run", "greeter:Greeter", "nodes.echo:shout=loud.shout", "--name", "hosted"]
    args += ["--mesh", name, "--profile", "test", "--no-discovery"]
    async with started(*args, cwd=tmp_path) as proc:  # greeter.py: from the current directory
        ready = await next_json(proc)
        assert set(ready) == READY_KEYS
        assert (ready["event"], ready["name"], ready["mesh"]) == ("ready", "hosted", name)
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", ready["address"])
        other = Node(
            name="caller", mesh=name, profile="test", discovery=False, seeds=(ready["address"],)
        )
        async with other:
            await other.wait_for_service("greeter@2", timeout=10)
            await other.wait_for_service("loud", timeout=10)
            assert await other.call("greeter.hello", "you") == "hello, you"
            assert await other.call("loud.shout", "hi") == "HI"
            hosted = next(m for m in other.members() if m.name == "hosted")
            assert hosted.id == ready["id"]
            assert sorted(hosted.services) == ["greeter", "loud"]

            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0, err
            assert "left the mesh cleanly" in err.decode()

            def left() -> bool:
                return any(m.id == ready["id"] and m.status == "left" for m in other.members())

            await eventually(left, 10, "the caller lists the hosted node as left")


async def test_run_a_module_runs_its_setup_and_ctrl_c_leaves_cleanly() -> None:
    name = a_mesh()
    args = ["run", "nodes.calc", "--name", "calc-1", "--mesh", name, "--profile", "test"]
    async with started(*args, "--no-discovery") as proc:
        ready = await next_json(proc)
        assert ready["event"] == "ready"
        seed = ["--seed", ready["address"], "--mesh", name, "--no-discovery"]
        assert await meshctl("call", "calc.add", "2", "3", *seed) == (0, "5\n", "")
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err


async def test_run_says_what_cannot_be_hosted_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "greeter.py").write_text(GREETER)
    (tmp_path / "broken.py").write_text("raise RuntimeError('no way')\n")
    cases = {
        "no_such_module_here": "no module named 'no_such_module_here'",
        "nodes.calc:Nope": "has no attribute 'Nope'",
        "nodes.echo:say": "is a function",
        "nodes.echo:say=nodot": "service.method",
        "greeter:Plain": "Plain is not a service",
        "broken": "importing broken failed: RuntimeError: no way",
        "not-a-module": "expected module",
    }
    runs = [
        meshctl("run", spec, "--no-discovery", "--profile", "test", cwd=tmp_path) for spec in cases
    ]
    for (spec, says), (code, out, err) in zip(
        cases.items(), await asyncio.gather(*runs), strict=True
    ):
        assert code == 2, (spec, err)
        assert out == "", spec  # no ready line: the node never started
        assert says in one_error_line(err), (spec, err)


# -- meshctl watch -----------------------------------------------------------------------


async def test_watch_json_gives_one_snapshot_per_refresh_with_the_listing_schemas() -> None:
    async with calc_mesh("w1", "w2") as nodes:
        first = nodes[0]
        code, out, err = await meshctl(
            "watch", "--count", "2", "--json", "--interval", "0.2", *at(first)
        )
        assert code == 0, err
        snapshots = [json.loads(line) for line in out.splitlines()]
        assert len(snapshots) == 2
        for snapshot in snapshots:
            assert set(snapshot) == {"time", "via", "error", "nodes", "services"}
            assert snapshot["error"] is None
            assert snapshot["via"] == first.address
            assert sorted(n["name"] for n in snapshot["nodes"]) == ["w1", "w2"]
            assert [s["name"] for s in snapshot["services"]] == ["calc"]
        assert snapshots[1]["time"] - snapshots[0]["time"] >= 0.15

        # the same schemas as meshctl nodes --json and services --json
        code, out, err = await meshctl("nodes", "--json", *at(first))
        assert code == 0, err
        assert set(json.loads(out)[0]) == set(snapshots[0]["nodes"][0])
        code, out, err = await meshctl("services", "--json", *at(first))
        assert code == 0, err
        assert set(json.loads(out)[0]) == set(snapshots[0]["services"][0])

        # piped without --json: each refresh printed as plain tables
        code, out, err = await meshctl("watch", "--count", "2", "--interval", "0.2", *at(first))
        assert code == 0, err
        headers = [line for line in out.splitlines() if line.startswith(f"mesh {first.mesh} at")]
        assert len(headers) == 2
        assert "2 nodes (2 alive), 1 service" in headers[0]
        assert sum(1 for line in out.splitlines() if line.split()[:2] == ["NAME", "ID"]) == 2

        # Ctrl-C ends the view cleanly
        async with started("watch", "--json", "--interval", "0.2", *at(first)) as proc:
            await next_json(proc)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0, err
            assert err == b""


async def test_watch_without_a_mesh_exits_5() -> None:
    code, out, err = await meshctl(
        "watch", "--count", "1", "--seed", f"tcp://127.0.0.1:{closed_port()}",
        "--no-discovery", "--timeout", "0.5",
    )  # fmt: skip
    assert code == 5, err
    assert out == ""
    one_error_line(err)


# -- meshctl bench -----------------------------------------------------------------------


async def test_bench_json_counts_every_call_and_reports_latencies() -> None:
    async with calc_mesh("b1") as (node,):
        code, out, err = await meshctl(
            "bench", "calc.add", "1", "2", "--calls", "500", "--concurrency", "20", "--json",
            *at(node),
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert set(result) == {
            "target", "calls", "ok", "errors", "error_examples", "concurrency", "seconds",
            "calls_per_second", "latency_ms", "histogram",
        }  # fmt: skip
        assert (result["target"], result["calls"], result["ok"]) == ("calc.add", 500, 500)
        assert (result["errors"], result["concurrency"]) == ({}, 20)
        assert result["seconds"] > 0
        assert result["calls_per_second"] == pytest.approx(500 / result["seconds"], rel=0.01)
        latency = result["latency_ms"]
        assert set(latency) == {"min", "p50", "p90", "p99", "max", "mean"}
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert latency["p99"] <= latency["max"]
        assert latency["min"] <= latency["mean"] <= latency["max"]
        buckets = result["histogram"]
        assert sum(b["count"] for b in buckets) == 500
        bounds = [b["le_ms"] for b in buckets if b["le_ms"] is not None]
        assert bounds == sorted(bounds)
        assert buckets[0]["count"] > 0
        assert buckets[-1]["count"] > 0
        assert latency["max"] <= (buckets[-1]["le_ms"] or float("inf"))
        served = node.statistics().services["calc"].methods["add"].requests
        assert served == 501  # and the warm-up call, not counted


async def test_bench_reports_failed_calls_by_code_and_exits_1() -> None:
    async with calc_mesh("b1") as (node,):
        code, out, err = await meshctl(
            "bench", "calc.div", "1", "0", "--calls", "50", "--concurrency", "5", "--json",
            *at(node),
        )  # fmt: skip
        assert code == 1
        assert one_error_line(err) == "error: 50 of 50 calls failed"
        result = json.loads(out)
        assert (result["calls"], result["ok"], result["errors"]) == (50, 0, {"remote": 50})
        assert "ZeroDivisionError" in result["error_examples"]["remote"]
        assert (result["latency_ms"], result["histogram"]) == (None, [])

        code, out, err = await meshctl("bench", "calc.add", "1", "2", "--calls", "200", *at(node))
        assert code == 0, err
        lines = out.splitlines()
        assert re.fullmatch(
            r"calc\.add: 200 calls in [\d.]+ s, [\d,]+ calls/s, 50 in flight, 0 failed", lines[0]
        ), lines[0]
        assert lines[1].startswith("latency (ms): p50 ")
        assert any(re.match(r"\s+<= [\d.]+ ms\s+\d+\s+[\d.]+%", line) for line in lines[2:])

        for args, expected in (
            (["calc.nosuch"], 2),
            (["nosuch.add"], 3),
            (["calc.count", "3"], 2),
            (["calc.add", "--calls", "0"], 2),
            (["nodot"], 2),
        ):
            code, out, err = await meshctl("bench", *args, *at(node))
            assert code == expected, (args, err)
            assert out == ""
            one_error_line(err)


# -- meshctl doctor ----------------------------------------------------------------------


def checks_of(out: str) -> dict[str, dict[str, str]]:
    checks = json.loads(out)
    for check in checks:
        assert set(check) == {"name", "status", "detail"}
        assert check["status"] in ("ok", "warn", "fail")
    return {c["name"]: c for c in checks}


async def test_doctor_passes_a_good_setup_and_names_what_is_wrong_in_a_bad_one(
    tmp_path: Path,
) -> None:
    secret = mesh.write_secret(tmp_path / "mesh.secret")
    async with calc_mesh("d1", secret_file=secret) as (node,):
        options = [*at(node), "--secret-file", str(secret)]
        code, out, err = await meshctl("doctor", "--json", *options)
        assert code == 0, err
        checks = checks_of(out)
        assert all(c["status"] == "ok" for c in checks.values()), checks
        assert {"settings", "host", "ports", "secret file", "security", "zeroconf"} <= set(checks)
        assert "node d1 answered" in checks[f"seed {node.address}"]["detail"]

        # the same for people: a line per check, then the counts
        code, out, err = await meshctl("doctor", *options)
        assert code == 0, err
        lines = out.splitlines()
        assert [line.split()[:2] for line in lines[:2]] == [["ok", "settings"], ["ok", "host"]]
        assert lines[-1] == f"{len(checks)} ok, 0 warnings, 0 failed"

        # a missing secret file: the handshakes are not even tried
        missing = tmp_path / "nosuch.secret"
        code, out, err = await meshctl("doctor", "--json", *at(node), "--secret-file", str(missing))
        assert code == 1, err
        checks = checks_of(out)
        assert checks["secret file"]["status"] == "fail"
        assert "does not exist" in checks["secret file"]["detail"]
        assert checks[f"seed {node.address}"]["status"] == "warn"

        # another secret: the handshake fails; a seed where nothing listens: no answer
        other = mesh.write_secret(tmp_path / "other.secret")
        unreachable = f"tcp://127.0.0.1:{closed_port()}"
        code, out, err = await meshctl(
            "doctor", "--json", *at(node), "--seed", unreachable, "--secret-file", str(other),
            "--timeout", "0.5",
        )  # fmt: skip
        assert code == 1, err
        checks = checks_of(out)
        assert checks["security"]["status"] == "ok"
        assert checks[f"seed {node.address}"]["status"] == "fail"
        assert "security handshake" in checks[f"seed {node.address}"]["detail"]
        assert checks[f"seed {unreachable}"]["status"] == "fail"
        assert "no answer" in checks[f"seed {unreachable}"]["detail"]

        # a secret readable by others is a warning; a fixed port in use is a failure
        secret.chmod(0o644)
        port = node.address.rpartition(":")[2]
        code, out, err = await meshctl(
            "doctor", "--json", *options, env=_env(MESH_PORT=port)
        )  # fmt: skip
        assert code == 1, err
        checks = checks_of(out)
        assert checks["secret file"]["status"] == "warn"
        assert "chmod 600" in checks["secret file"]["detail"]
        assert checks[f"port {port}"]["status"] == "fail"
        assert "in use" in checks[f"port {port}"]["detail"]

    # no seeds and no discovery: nothing can find a mesh
    code, out, err = await meshctl("doctor", "--json", "--no-discovery")
    assert code == 1, err
    assert checks_of(out)["seeds"]["status"] == "fail"

    # a bad setting is a failed check, not a crash
    code, out, err = await meshctl("doctor", "--json", "--seed", "nonsense")
    assert code == 1, err
    assert checks_of(out)["settings"]["status"] == "fail"


async def test_doctor_checks_the_interface_and_finds_the_mesh_with_zeroconf_on_loopback() -> None:
    async with calc_mesh("z1", discovery=True, interfaces=("127.0.0.1",)) as (node,):
        code, out, err = await meshctl(
            "doctor", "--json", "--mesh", node.mesh, "--profile", "test", "--discovery",
            "--interface", "127.0.0.1", "--timeout", "5",
        )  # fmt: skip
        assert code == 0, err
        checks = checks_of(out)
        assert checks["interface 127.0.0.1"]["status"] == "ok"
        assert "127.0.0.1 on lo" in checks["interface 127.0.0.1"]["detail"]
        assert checks["multicast 127.0.0.1"]["status"] == "ok"
        assert checks["zeroconf"]["status"] == "ok", checks["zeroconf"]
        assert f"found z1 at {node.address}" in checks["zeroconf"]["detail"]

    code, out, err = await meshctl(
        "doctor", "--json", "--discovery", "--interface", "nosuch0", "--profile", "test"
    )
    assert code == 1, err
    checks = checks_of(out)
    assert checks["interface nosuch0"]["status"] == "fail"
    assert "no interface named 'nosuch0'" in checks["interface nosuch0"]["detail"]
    assert checks["zeroconf"]["status"] == "warn"  # not tried
