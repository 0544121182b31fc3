"""meshctl nodes filters, tables, inspect, call --args-json and call -, stream, ping, and
shell completion, against real nodes on 127.0.0.1.

The nodes run in the test's own loop (``test`` profile, discovery off, joined through
the first as their seed), offering the services of ``nodes/``; meshctl runs as a user
runs it, the installed entry point in a subprocess, driven with asyncio so the nodes
keep answering while it runs. Each test makes a mesh of its own and ends every process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mesh import Node, service, stream
from nodes.calc import Calc
from nodes.echo import say, shout
from tests.programs import node_env, node_program, read_line

MESHCTL = str(Path(sys.executable).parent / "meshctl")

pytestmark = pytest.mark.timeout(30)

#: What ``meshctl nodes --json`` lists of a member (docs/cli.md).
MEMBER_KEYS = {
    "name", "id", "address", "status", "incarnation", "services", "addresses", "tags", "stats",
}  # fmt: skip
#: What ``meshctl services --json`` lists of a service.
SERVICE_KEYS = {
    "name", "versions", "methods", "providers", "states", "requests", "errors", "in_flight",
    "p50", "p99",
}  # fmt: skip
PROVIDER_KEYS = {
    "node", "id", "address", "status", "version", "state", "requests", "errors", "in_flight",
    "p50", "p99", "restarts", "last_crash", "depends_on",
}  # fmt: skip
#: ``meshctl inspect --json``.
INSPECT_KEYS = {"name", "versions", "providers", "methods", "requests", "errors", "in_flight"}
INSPECT_PROVIDER_KEYS = {"node", "id", "address", "status", "version", "state", "stats_taken_at"}
INSPECT_METHOD_KEYS = {
    "name", "kind", "signature", "doc", "idempotent", "versions", "providers",
}  # fmt: skip
INSPECT_LOAD_KEYS = {
    "node", "id", "version", "requests", "errors", "in_flight", "p50", "p90", "p99",
}  # fmt: skip
#: ``meshctl ping --json``.
PING_KEYS = {"name", "id", "address", "rtt_ms", "error"}


@service("text")
class Text:
    """Streams of strings."""

    @stream
    async def words(self, text: str) -> AsyncIterator[str]:
        """Yield the words of ``text``, then one with a space in it."""
        for word in text.split():
            yield word
        yield "two words"

    @stream
    async def broken(self, n: int) -> AsyncIterator[int]:
        """Yield 0 .. n-1, then raise RuntimeError."""
        for i in range(n):
            yield i
        raise RuntimeError("broken on purpose")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}


def at(node: Node) -> list[str]:
    """The options that point meshctl at ``node``'s mesh through ``node``."""
    return ["--seed", node.address, "--mesh", node.mesh, "--profile", "test", "--no-discovery"]


@asynccontextmanager
async def started(*args: str, stdin: int | None = None) -> AsyncIterator[Process]:
    """meshctl running with ``args``; killed (by its PID) at the end if it has not exited."""
    proc = await asyncio.create_subprocess_exec(
        MESHCTL, *args, stdin=stdin, stdout=PIPE, stderr=PIPE, env=_env()
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def meshctl(
    *args: str, stdin: str | None = None, timeout: float = 15
) -> tuple[int, str, str]:
    """Run meshctl to the end: (exit code, stdout, stderr)."""
    async with started(*args, stdin=None if stdin is None else PIPE) as proc:
        data = None if stdin is None else stdin.encode()
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


async def ok_json(*args: str, stdin: str | None = None) -> Any:
    code, out, err = await meshctl(*args, "--json", stdin=stdin)
    assert code == 0, err
    return json.loads(out)


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


def listed(node: Node, names: set[str]) -> bool:
    """``node`` lists every one of ``names`` alive with its record and stats."""
    members = {m.name: m for m in node.members()}
    return all(
        n in members
        and members[n].status == "alive"
        and members[n].record is not None
        and members[n].stats is not None
        for n in names
    )


@asynccontextmanager
async def mesh_of(*names: str) -> AsyncIterator[dict[str, Node]]:
    """Nodes of a mesh of their own, the first the seed of the others: ``calc`` offers
    calc and text, ``echo`` offers echo and has tags zone=eu-1 and role=edge, any
    other name offers nothing."""
    mesh = f"more-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        nodes: dict[str, Node] = {}
        for name in names:
            first = next(iter(nodes.values()), None)
            settings: dict[str, Any] = {
                "name": name,
                "mesh": mesh,
                "profile": "test",
                "discovery": False,
                "seeds": () if first is None else (first.address,),
            }
            if name == "echo":
                node = Node(tags={"zone": "eu-1", "role": "edge"}, **settings)
                node.add_service(say, name="echo.say")
                node.add_service(shout, name="echo.shout")
            else:
                node = Node(**settings)
                if name == "calc":
                    node.add_service(Calc())
                    node.add_service(Text())
            nodes[name] = await stack.enter_async_context(node)
        everyone = set(names)
        await eventually(
            lambda: all(listed(n, everyone) for n in nodes.values()), 15, "mesh formed"
        )
        yield nodes


# -- meshctl nodes: filters and the table ---------------------------------------------------


async def test_nodes_filters_by_status_and_tags() -> None:
    async with mesh_of("calc", "echo", "plain") as nodes:
        calc = nodes["calc"]
        members = await ok_json("nodes", *at(calc))
        assert [m["name"] for m in members] == ["calc", "echo", "plain"]
        assert all(set(m) == MEMBER_KEYS for m in members)
        assert {m["name"]: m["tags"] for m in members}["echo"] == {"zone": "eu-1", "role": "edge"}

        alive = await ok_json("nodes", "--status", "alive", *at(calc))
        assert [m["name"] for m in alive] == ["calc", "echo", "plain"]
        assert await ok_json("nodes", "--status", "dead", "--status", "left", *at(calc)) == []
        tagged = await ok_json("nodes", "--tag", "zone=eu-1", *at(calc))
        assert [m["name"] for m in tagged] == ["echo"]
        both = await ok_json("nodes", "--tag", "zone=eu-1", "--tag", "role=edge", *at(calc))
        assert [m["name"] for m in both] == ["echo"]
        assert await ok_json("nodes", "--tag", "zone=eu-1", "--tag", "role=core", *at(calc)) == []
        assert await ok_json("nodes", "--tag", "zone=eu", *at(calc)) == []

        # the table: one header line, a row per member that matches
        code, out, err = await meshctl("nodes", "--tag", "role=edge", *at(calc))
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == [
            "NAME", "ID", "ADDRESS", "STATUS", "SERVICES", "UPTIME", "CPU", "RSS", "CALLS/S",
            "ERRORS",
        ]  # fmt: skip
        assert len(lines) == 2
        assert lines[1].split()[:5] == [
            "echo", nodes["echo"].id[:12], nodes["echo"].address, "alive", "echo",
        ]  # fmt: skip

        await nodes["plain"].aclose()  # leaves: listed as left, then no longer alive
        await eventually(
            lambda: {m.name: m.status for m in calc.members()}.get("plain") == "left", 10, "left"
        )
        left = await ok_json("nodes", "--status", "left", *at(calc))
        assert [(m["name"], m["status"]) for m in left] == [("plain", "left")]
        alive = await ok_json("nodes", "--status", "alive", *at(calc))
        assert [m["name"] for m in alive] == ["calc", "echo"]
        some = await ok_json("nodes", "--status", "alive", "--status", "left", *at(calc))
        assert [m["name"] for m in some] == ["calc", "echo", "plain"]


async def test_nodes_filter_usage_errors_exit_2() -> None:
    for args in (["--tag", "zone"], ["--tag", "=x"], ["--status", "bogus"]):
        code, out, err = await meshctl("nodes", *args, "--no-discovery")
        assert code == 2, (args, err)
        assert out == ""
        one_error_line(err)


async def test_services_json_is_as_documented_and_the_table_for_people() -> None:
    async with mesh_of("calc", "echo") as nodes:
        calc = nodes["calc"]
        listings = await ok_json("services", *at(calc))
        assert [s["name"] for s in listings] == ["calc", "echo", "text"]
        for listing in listings:
            assert set(listing) == SERVICE_KEYS
            assert all(set(p) == PROVIDER_KEYS for p in listing["providers"])
            assert all(set(m) == {"name", "kind", "signature", "doc"} for m in listing["methods"])
        code, out, err = await meshctl("services", *at(calc))
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == [
            "NAME", "VERSIONS", "PROVIDERS", "STATE", "REQUESTS", "ERRORS", "P50", "P99",
            "IN", "FLIGHT",
        ]  # fmt: skip
        assert [line.split()[:3] for line in lines[1:]] == [
            ["calc", "1.0.0", "calc"], ["echo", "0.0.0", "echo"], ["text", "0.0.0", "calc"],
        ]  # fmt: skip
        assert "\x1b[" not in out  # piped: no colour codes


# -- meshctl inspect ------------------------------------------------------------------------


async def test_inspect_json_lists_methods_and_each_providers_load() -> None:
    async with mesh_of("calc", "echo") as nodes:
        calc = nodes["calc"]
        for _ in range(3):
            assert await ok_json("call", "calc.add", "1", "2", *at(calc)) == 3
        code, _, _ = await meshctl("call", "calc.div", "1", "0", *at(calc))
        assert code == 1

        found = await ok_json("inspect", "calc", "--fresh", *at(calc))
        assert set(found) == INSPECT_KEYS
        assert found["name"] == "calc"
        assert found["versions"] == ["1.0.0"]
        (provider,) = found["providers"]
        assert set(provider) == INSPECT_PROVIDER_KEYS
        assert provider["node"] == "calc"
        assert provider["id"] == calc.id
        assert provider["address"] == calc.address
        assert (provider["status"], provider["version"], provider["state"]) == (
            "alive",
            "1.0.0",
            "up",
        )
        assert isinstance(provider["stats_taken_at"], float)
        methods = {m["name"]: m for m in found["methods"]}
        assert set(methods) == {"add", "mul", "div", "slow", "blocking", "fail", "count", "squares"}
        for method in methods.values():
            assert set(method) == INSPECT_METHOD_KEYS
            assert method["versions"] == ["1.0.0"]
            (load,) = method["providers"]
            assert set(load) == INSPECT_LOAD_KEYS
            assert (load["node"], load["id"], load["version"]) == ("calc", calc.id, "1.0.0")
        add = methods["add"]
        assert (add["kind"], add["idempotent"]) == ("unary", True)
        assert add["doc"] == "Return a + b."
        assert "a:" in add["signature"]
        assert "b:" in add["signature"]
        assert (methods["div"]["kind"], methods["div"]["idempotent"]) == ("unary", False)
        assert methods["count"]["kind"] == "stream"
        load = add["providers"][0]
        assert load["requests"] >= 3
        assert load["errors"] == 0
        assert load["in_flight"] == 0
        assert 0 <= load["p50"] <= load["p90"] <= load["p99"]
        div = methods["div"]["providers"][0]
        assert (div["requests"], div["errors"]) == (1, 1)
        never = methods["slow"]["providers"][0]
        assert (never["requests"], never["p50"], never["p90"], never["p99"]) == (
            0,
            None,
            None,
            None,
        )
        assert found["requests"] >= 4
        assert found["errors"] == 1
        assert found["in_flight"] == 0


async def test_inspect_table_for_people() -> None:
    async with mesh_of("calc") as nodes:
        calc = nodes["calc"]
        assert await ok_json("call", "calc.add", "1", "2", *at(calc)) == 3
        code, out, err = await meshctl("inspect", "calc", "--fresh", *at(calc))
        assert code == 0, err
        lines = out.splitlines()
        assert re.fullmatch(
            r"service calc: version 1\.0\.0; 1 provider; \d+ requests?, 0 errors, 0 in flight",
            lines[0],
        ), lines[0]
        assert lines[2].split() == [
            "NODE", "ID", "ADDRESS", "STATUS", "VERSION", "STATE", "STATS", "AGE",
        ]  # fmt: skip
        assert lines[3].split()[:6] == ["calc", calc.id[:12], calc.address, "alive", "1.0.0", "up"]
        assert any(line.startswith("add(a: ") and "[unary, idempotent]" in line for line in lines)
        assert "    Return a + b." in lines
        assert any(line.startswith("count(") and line.endswith("[stream]") for line in lines)
        header = lines.index(next(line for line in lines if line.startswith("METHOD")))
        assert lines[header].split() == [
            "METHOD", "NODE", "REQUESTS", "ERRORS", "IN", "FLIGHT", "P50", "P90", "P99",
        ]  # fmt: skip
        rows = {line.split()[0]: line.split() for line in lines[header + 1 :]}
        assert rows["add"][1] == "calc"
        assert int(rows["add"][2]) >= 1
        assert rows["slow"][2:] == ["0", "0", "0", "-", "-", "-"]


async def test_inspect_an_unknown_service_exits_3_and_lists_the_services() -> None:
    async with mesh_of("calc", "echo") as nodes:
        code, out, err = await meshctl("inspect", "nosuch", *at(nodes["calc"]))
        assert code == 3, err
        assert out == ""
        line = one_error_line(err)
        assert "'nosuch'" in line
        assert "services: calc, echo, text" in line
        # a method is not a service
        code, out, err = await meshctl("inspect", "calc.add", *at(nodes["calc"]), "--json")
        assert code == 3, err
        assert out == ""
    code, out, err = await meshctl("inspect", "--no-discovery")
    assert code == 2, err
    one_error_line(err)


# -- meshctl call: --args-json and batches from stdin ---------------------------------------


async def test_call_args_json() -> None:
    async with mesh_of("calc", "echo") as nodes:
        calc = nodes["calc"]
        assert await ok_json("call", "calc.add", "--args-json", "[1, 2.5]", *at(calc)) == 3.5
        # strings stay strings, whatever they look like
        assert await ok_json("call", "echo.say", "--args-json", '["42"]', *at(calc)) == "42"
        both = await ok_json("call", "calc.add", "--args-json", "[1]", "--kw", "b=2", *at(calc))
        assert both == 3
        code, out, err = await meshctl("call", "echo.say", "--args-json", '["a b"]', *at(calc))
        assert (code, out) == (0, "a b\n"), err
        for bad, says in (
            ("[1", "not JSON"),
            ('{"a": 1}', "expected a JSON array"),
            ("3", "expected a JSON array"),
            ("", "not JSON"),
        ):
            code, out, err = await meshctl("call", "calc.add", "--args-json", bad, *at(calc))
            assert code == 2, (bad, err)
            assert out == ""
            assert says in one_error_line(err)
        code, out, err = await meshctl("call", "calc.add", "1", "--args-json", "[2]", *at(calc))
        assert code == 2, err
        assert "not both" in one_error_line(err)


async def test_call_batch_from_stdin_keeps_going_after_a_failed_call() -> None:
    async with mesh_of("calc", "echo") as nodes:
        calc = nodes["calc"]
        lines = [
            {"target": "calc.add", "args": [1, 2]},
            {"target": "calc.div", "args": [1, 0]},
            "",  # blank: skipped
            {"target": "echo.say", "args": ["hello"]},
            {"target": "calc.add", "kwargs": {"a": 1, "b": 2.5}},
            "not json",
            ["calc.add", 1, 2],
            {"target": "calc.add", "args": [1, 2], "extra": 1},
            {"target": "calc.add", "args": {"a": 1}},
            {"target": "nodot"},
            {"target": "nosuch.thing"},
            {"target": "calc.nosuch"},
            {"target": "calc.add", "args": [1, 2], "node": "echo"},
            {"target": "calc.add", "args": [1, 2], "kwargs": {"timeout": 1}},
            {"target": "calc.mul", "args": [6, 7], "node": "calc"},
        ]
        stdin = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
        code, out, err = await meshctl("call", "-", *at(calc), stdin=stdin)
        answers = [json.loads(line) for line in out.splitlines()]
        assert len(answers) == len(lines) - 1
        for answer in answers:
            assert set(answer) in ({"result"}, {"error"}), answer
            if "error" in answer:
                assert set(answer["error"]) == {"code", "message", "type"}
        assert answers[0] == {"result": 3}
        assert answers[1]["error"]["type"] == "RemoteError"
        assert answers[1]["error"]["code"] == "remote"
        assert "ZeroDivisionError" in answers[1]["error"]["message"]
        assert answers[2] == {"result": "hello"}
        assert answers[3] == {"result": 3.5}
        for bad in answers[4:9]:
            assert (bad["error"]["code"], bad["error"]["type"]) == ("usage", "BadRequest"), bad
        assert "not JSON" in answers[4]["error"]["message"]
        assert "extra" in answers[6]["error"]["message"]
        assert answers[9]["error"]["type"] == "NoProvider"
        assert answers[10]["error"]["type"] == "UnknownMethod"
        assert answers[11]["error"]["type"] == "NoProvider"  # echo offers no calc
        assert answers[12]["error"]["type"] == "BadRequest"  # a reserved keyword
        assert answers[13] == {"result": 42}
        # the exit code is the first failure's (a remote error: 1); one summary line
        assert code == 1
        line = one_error_line(err)
        assert "10 of 14 calls failed" in line
        assert "line 2" in line

        # all good: exit 0, nothing on stderr; --node is every line's default
        ok = '{"target": "calc.add", "args": [1, 2]}\n{"target": "calc.mul", "args": [2, 3]}\n'
        code, out, err = await meshctl("call", "-", "--node", "calc", *at(calc), stdin=ok)
        assert (code, err) == (0, "")
        assert [json.loads(line) for line in out.splitlines()] == [{"result": 3}, {"result": 6}]
        # the first failure decides: a bad line is a usage error (2), a missing service 3
        code, out, err = await meshctl("call", "-", *at(calc), stdin="[]\n" + ok)
        assert code == 2, err
        assert len(out.splitlines()) == 3
        code, out, err = await meshctl(
            "call",
            "-",
            *at(calc),
            stdin='{"target": "x.y"}\n{"target": "calc.div", "args": [1, 0]}',
        )
        assert code == 3, err
        # an empty batch makes no call
        code, out, err = await meshctl("call", "-", *at(calc), stdin="")
        assert (code, out, err) == (0, "", "")
        # "-" takes its calls from stdin only
        for more in (["1"], ["--args-json", "[1]"], ["--kw", "a=1"]):
            code, out, err = await meshctl("call", "-", *more, *at(calc), stdin=ok)
            assert code == 2, (more, err)
            assert out == ""
            one_error_line(err)


async def test_call_batch_answers_each_line_as_it_comes() -> None:
    """A script can talk to ``meshctl call -`` line by line (a coprocess)."""
    async with (
        mesh_of("calc") as nodes,
        started("call", "-", *at(nodes["calc"]), stdin=PIPE) as proc,
    ):
        assert proc.stdin is not None
        assert proc.stdout is not None
        for i in range(3):
            proc.stdin.write(json.dumps({"target": "calc.add", "args": [i, 1]}).encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert json.loads(line) == {"result": i + 1}
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 10)
        assert proc.returncode == 0


# -- meshctl stream -------------------------------------------------------------------------


async def test_stream_prints_items_as_they_come_and_ends_with_the_stream() -> None:
    async with mesh_of("calc") as nodes:
        calc = nodes["calc"]
        code, out, err = await meshctl("stream", "calc.count", "3", *at(calc))
        assert (code, out) == (0, "0\n1\n2\n"), err
        code, out, err = await meshctl("stream", "calc.squares", "--args-json", "[4]", *at(calc))
        assert (code, out) == (0, "0\n1\n4\n9\n"), err
        code, out, err = await meshctl("stream", "text.words", "a b", *at(calc))
        assert (code, out) == (0, "a\nb\ntwo words\n"), err
        code, out, err = await meshctl("stream", "text.words", "a b", "--json", *at(calc))
        assert code == 0, err
        assert [json.loads(line) for line in out.splitlines()] == ["a", "b", "two words"]
        code, out, err = await meshctl("stream", "calc.count", "0", *at(calc))
        assert (code, out, err) == (0, "", "")
        code, out, err = await meshctl(
            "stream", "calc.count", "2", "--kw", "delay=0.01", "--node", "calc", *at(calc)
        )
        assert (code, out) == (0, "0\n1\n"), err


async def test_stream_errors_and_exit_codes() -> None:
    async with mesh_of("calc") as nodes:
        calc = nodes["calc"]
        # items before the error are printed, then one error line
        code, out, err = await meshctl("stream", "text.broken", "2", *at(calc))
        assert code == 1
        assert out == "0\n1\n"
        assert "broken on purpose" in one_error_line(err)
        code, out, err = await meshctl("stream", "nosuch.items", *at(calc))
        assert code == 3, err
        one_error_line(err)
        code, out, err = await meshctl("stream", "calc.nosuch", *at(calc))
        assert code == 2, err
        one_error_line(err)
        # a unary method is for call, a stream for stream
        code, out, err = await meshctl("stream", "calc.add", "1", "2", *at(calc))
        assert code == 2, err
        assert "not a stream: use meshctl call" in one_error_line(err)
        code, out, err = await meshctl("call", "calc@1.count", "2", *at(calc))
        assert code == 2, err
        assert "is a stream: use meshctl stream" in one_error_line(err)
        for args in (["nodot"], ["calc.count", "--args-json", "{}"], ["calc.count", "--kw", "x"]):
            code, out, err = await meshctl("stream", *args, "--no-discovery")
            assert code == 2, (args, err)
            one_error_line(err)


async def test_stream_ctrl_c_stops_the_producer_and_exits_130() -> None:
    async with mesh_of("calc") as nodes:
        calc = nodes["calc"]
        async with started(
            "stream", "calc.count", "100000", "--kw", "delay=0.02", *at(calc)
        ) as proc:
            assert proc.stdout is not None
            for i in range(3):
                line = await asyncio.wait_for(proc.stdout.readline(), 10)
                assert line == f"{i}\n".encode()
            assert calc.statistics().calls_in_flight == 1
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 130
            assert one_error_line(err.decode()) == "error: interrupted"
        await eventually(lambda: calc.statistics().calls_in_flight == 0, 5, "producer stopped")


# -- meshctl ping ---------------------------------------------------------------------------


async def test_ping_every_live_node_one_by_name_or_id() -> None:
    async with mesh_of("calc", "echo", "plain") as nodes:
        calc = nodes["calc"]
        pings = await ok_json("ping", "--count", "2", *at(calc))
        assert [p["name"] for p in pings] == ["calc", "echo", "plain"]
        for p in pings:
            assert set(p) == PING_KEYS
            node = nodes[p["name"]]
            assert (p["id"], p["address"], p["error"]) == (node.id, node.address, None)
            rtt = p["rtt_ms"]
            assert set(rtt) == {"min", "avg", "max"}
            assert 0 < rtt["min"] <= rtt["avg"] <= rtt["max"] < 5000

        (one,) = await ok_json("ping", "echo", *at(calc))
        assert (one["name"], one["id"]) == ("echo", nodes["echo"].id)
        (by_id,) = await ok_json("ping", nodes["plain"].id, *at(calc))
        assert by_id["name"] == "plain"

        code, out, err = await meshctl("ping", *at(calc))
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "ID", "ADDRESS", "MIN", "AVG", "MAX"]
        rows = [line.split() for line in lines[1:]]
        assert [r[:3] for r in rows] == [[n, nodes[n].id[:12], nodes[n].address] for n in nodes]
        assert all(re.fullmatch(r"\d+(\.\d\d)?ms", cell) for r in rows for cell in r[3:])


async def test_ping_an_unknown_node_exits_3_and_bad_usage_2() -> None:
    async with mesh_of("calc", "echo") as nodes:
        code, out, err = await meshctl("ping", "nosuch", *at(nodes["calc"]))
        assert code == 3, err
        assert out == ""
        line = one_error_line(err)
        assert "'nosuch'" in line
        assert "members: calc, echo" in line
    for args in (["--count", "0"], ["a", "b"]):
        code, out, err = await meshctl("ping", *args, "--no-discovery")
        assert code == 2, (args, err)
        one_error_line(err)


async def test_ping_lists_a_node_that_does_not_answer_and_exits_1() -> None:
    async with mesh_of("calc") as nodes:
        calc = nodes["calc"]
        env = node_env(
            MESH_NAME=calc.mesh,
            MESH_NODE_NAME="gone",
            MESH_SEEDS=calc.address,
            MESH_HOST="127.0.0.1",
        )
        with node_program("nodes.plain", env) as proc:
            gone = read_line(proc)
            await eventually(lambda: listed(calc, {"gone"}), 10, "gone listed")
            os.kill(proc.pid, signal.SIGKILL)  # no goodbye: still listed for a while
            proc.wait(5)
            # named, it is pinged whatever its status
            code, out, err = await meshctl("ping", "gone", "--json", *at(calc), "--timeout", "1")
            assert code == 1, err
            (ping,) = json.loads(out)
            assert set(ping) == PING_KEYS
            assert (ping["name"], ping["id"], ping["rtt_ms"]) == ("gone", gone["id"], None)
            # its address, or "" once the dead member's record is dropped
            assert ping["address"] in (gone["address"], "")
            assert ping["error"]
            assert "1 of 1 node did not answer: gone" in one_error_line(err)

            code, out, err = await meshctl("ping", "gone", *at(calc), "--timeout", "1")
            assert code == 1
            lines = out.splitlines()
            assert lines[0].split() == ["NAME", "ID", "ADDRESS", "MIN", "AVG", "MAX", "ERROR"]
            row = lines[1].split()
            assert row[:2] == ["gone", gone["id"][:12]]
            assert row[2] in (gone["address"], "-")
            assert row[3:6] == ["-", "-", "-"]
            assert len(row) > 6  # the error


# -- shell completion -----------------------------------------------------------------------


def complete(words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash completion offers for the command line ``words`` (the last word is
    being completed; end with a space to complete a new word)."""
    parts = words.split(" ")
    result = subprocess.run(
        [MESHCTL],
        env={
            **_env(),
            **(env or {}),
            "_MESHCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
        },
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line.partition(",")[2] for line in result.stdout.splitlines() if line]


def test_shell_completion_of_commands_and_choices() -> None:
    script = subprocess.run(
        [MESHCTL],
        env={**_env(), "_MESHCTL_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert script.returncode == 0, script.stderr
    assert "_meshctl_completion()" in script.stdout
    assert complete("meshctl ins") == ["inspect"]
    assert {"inspect", "stream", "ping"} <= set(complete("meshctl "))
    assert complete("meshctl nodes --status ") == ["alive", "suspect", "dead", "left"]
    assert "--count" in complete("meshctl ping --c")


async def test_shell_completion_asks_the_mesh_for_services_targets_and_nodes() -> None:
    async with mesh_of("calc", "echo") as nodes:
        where = " ".join(at(nodes["calc"]))

        async def offered(words: str, env: dict[str, str] | None = None) -> list[str]:
            return await asyncio.to_thread(complete, words, env)

        assert await offered(f"meshctl inspect {where} ") == ["calc", "echo", "text"]
        assert await offered(f"meshctl stream {where} calc.") == ["calc.count", "calc.squares"]
        assert await offered(f"meshctl call {where} calc.a") == ["calc.add"]
        assert await offered(f"meshctl ping {where} e") == ["echo"]
        env = {"MESH_SEEDS": nodes["calc"].address, "MESH_NAME": nodes["calc"].mesh}
        assert await offered("meshctl call --node ", env) == ["calc", "echo"]
    # no mesh: nothing offered, soon
    began = time.monotonic()
    assert (
        await asyncio.to_thread(
            complete, "meshctl inspect --seed tcp://127.0.0.1:9 --no-discovery "
        )
        == []
    )
    assert time.monotonic() - began < 5
