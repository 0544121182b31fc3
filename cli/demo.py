"""``meshctl demo``: a small mesh of node processes on loopback: listed, called, stopped."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

import click

import mesh

READY_TIMEOUT = 20.0
#: The node programs the demo runs, in order; more nodes than these run nodes.plain.
PROGRAMS = ("nodes.calc", "nodes.echo")


@click.command()
@click.option(
    "--nodes",
    "count",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="How many node processes to start (calc, echo, then plain ones).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def demo(count: int, as_json: bool) -> None:
    """Start a mesh of node processes on 127.0.0.1, list it, call it, stop it cleanly.

    The nodes run under a mesh name of their own, so the demo never mixes with
    another mesh; each node after the first joins through the first as its seed (and
    zeroconf on 127.0.0.1 finds them too). The listing is the gossiped one, read
    through the first node as ``meshctl nodes`` reads it.
    """
    mesh_name = f"demo-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[str]] = []
    try:
        readies: list[dict[str, Any]] = []
        for i in range(count):
            program = PROGRAMS[i] if i < len(PROGRAMS) else "nodes.plain"
            seeds = readies[0]["address"] if readies else ""
            readies.append(_start(procs, program, mesh_name, f"demo-{i + 1}", seeds))
        for proc in procs[1:]:
            joined = _read_json(proc)
            if joined.get("event") != "connected":
                raise click.ClickException(f"a node could not join: {joined.get('error')}")
        result = asyncio.run(_tour(mesh_name, readies[0]["address"], count))
    finally:
        codes = _stop(procs)
    if any(code != 0 for code in codes):
        raise click.ClickException(f"nodes exited with {codes}")
    result["left_cleanly"] = len(codes)
    _print(result, as_json)


def _start(
    procs: list[subprocess.Popen[str]], program: str, mesh_name: str, name: str, seeds: str
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(
        MESH_NAME=mesh_name,
        MESH_NODE_NAME=name,
        MESH_PROFILE="local",
        MESH_HOST="127.0.0.1",
        MESH_SEEDS=seeds,
        MESH_INTERFACE="127.0.0.1",  # zeroconf on loopback only, never on a network
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", program],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    ready = _read_json(proc)
    if ready.get("event") != "ready":
        raise click.ClickException(f"node {name} did not start: {ready}")
    return ready


def _read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise click.ClickException(f"node process {proc.pid} exited with {proc.wait()}")
        if line.startswith("{"):
            return dict(json.loads(line))
    raise click.ClickException(f"node process {proc.pid} said nothing in {READY_TIMEOUT} s")


async def _tour(mesh_name: str, seed: str, count: int) -> dict[str, Any]:
    """Look in as meshctl does (a :class:`mesh.Client` through the first node, which
    never joins): wait until gossip lists every node with its stats, then make some calls
    and read a stream, each routed to the node that offers it."""
    config = mesh.Config(mesh=mesh_name, profile="local", seeds=(seed,), discovery=False)
    started = time.perf_counter()
    async with mesh.Client(config) as client:
        members = await client.members(fresh=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _settled(members, count):
            if time.monotonic() > deadline:
                raise click.ClickException(f"the mesh listed {len(members)} of {count} nodes")
            await asyncio.sleep(0.05)
            members = await client.members(fresh=True)
        listed_ms = _ms(started)
        nodes = [_node_row(m) for m in sorted(members, key=lambda m: m.name)]
        offered = {name for n in nodes for name in n["services"]}
        calls = []
        if "calc" in offered:
            calls += [
                await _call(client, "calc.add", 2, 3),
                await _call(client, "calc.mul", 6, 7),
                await _call(client, "calc.div", 1, 0),
                await _call(client, "calc.slow", 5, timeout=0.2),
            ]
        if "echo" in offered:
            calls.append(await _call(client, "echo.say", "hello, mesh"))
        stream = None
        if "calc" in offered:
            async with await client.stream("calc.count", 5) as items:
                stream = {"target": "calc.count", "args": [5], "items": [x async for x in items]}
    return {
        "mesh": mesh_name,
        "via": seed,
        "listed_ms": listed_ms,
        "nodes": nodes,
        "calls": calls,
        "stream": stream,
    }


def _settled(members: list[mesh.MemberInfo], count: int) -> bool:
    """Every node listed alive, with its record and its stats."""
    return len(members) == count and all(
        m.status == "alive" and m.record is not None and m.stats is not None for m in members
    )


def _node_row(member: mesh.MemberInfo) -> dict[str, Any]:
    record, stats = member.record, member.stats
    assert record is not None
    assert stats is not None  # _settled checked both
    return {
        "id": member.id,
        "name": member.name,
        "address": member.address,
        "status": member.status,
        "protocol": record.protocol[1],
        "services": {s.name: s.version for s in record.services},
        "uptime": round(stats.node.uptime, 2),
        "rss_bytes": stats.node.rss,
    }


async def _call(
    client: mesh.Client, target: str, *args: Any, timeout: float = 5.0
) -> dict[str, Any]:
    started = time.perf_counter()
    row: dict[str, Any] = {"target": target, "args": list(args)}
    try:
        row["result"] = await client.call(target, *args, timeout=timeout)
    except mesh.MeshError as exc:
        row["error"] = {"type": type(exc).__name__, "message": str(exc)}
    row["ms"] = _ms(started)
    return row


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
        return
    nodes = result["nodes"]
    click.echo(
        f"mesh {result['mesh']}: {len(nodes)} nodes, listed by gossip through "
        f"{result['via']} in {result['listed_ms']:.0f} ms\n"
    )
    click.echo(
        f"{'NAME':<8} {'ID':<14} {'ADDRESS':<24} {'STATUS':<7} {'SERVICES':<12} "
        f"{'UPTIME':>7} {'RSS':>8}"
    )
    for n in nodes:
        services = ", ".join(f"{k}@{v}" for k, v in n["services"].items()) or "-"
        click.echo(
            f"{n['name']:<8} {n['id'][:12]:<14} {n['address']:<24} {n['status']:<7} "
            f"{services:<12} {n['uptime']:>6.1f}s {n['rss_bytes'] / 2**20:>5.0f}MiB"
        )
    if result["calls"]:
        click.echo("\ncalls:")
        for c in result["calls"]:
            args = ", ".join(repr(a) for a in c["args"])
            if "error" in c:
                outcome = f"-> {c['error']['type']}: {c['error']['message']}"
            else:
                outcome = f"= {c['result']!r}"
            click.echo(f"  {c['target']}({args}) {outcome}   [{c['ms']:.2f} ms]")
    if result["stream"]:
        s = result["stream"]
        items = " ".join(str(x) for x in s["items"])
        click.echo(f"\nstream {s['target']}({', '.join(map(str, s['args']))}): {items}")
    click.echo(f"\nall {result['left_cleanly']} nodes left cleanly (exit 0 after SIGTERM)")


def _stop(procs: list[subprocess.Popen[str]]) -> list[int]:
    """SIGTERM every node, wait for a clean exit; SIGKILL what does not go."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        if proc.stdout is not None:
            proc.stdout.close()
    return codes
