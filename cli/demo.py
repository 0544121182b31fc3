"""``meshctl demo``: a small mesh of node processes on loopback, listed, then stopped."""

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


@click.command()
@click.option(
    "--nodes",
    "count",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="How many node processes to start.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def demo(count: int, as_json: bool) -> None:
    """Start a mesh of node processes on 127.0.0.1, list it, and stop it cleanly.

    The nodes run `python -m nodes.plain` under a mesh name of their own, so
    the demo never mixes with another mesh. Each node after the first joins
    through the first one as its seed.
    """
    mesh_name = f"demo-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[str]] = []
    try:
        readies = [_start(procs, mesh_name, "demo-1", seeds="")]
        for i in range(2, count + 1):
            readies.append(_start(procs, mesh_name, f"demo-{i}", seeds=readies[0]["address"]))
        for proc in procs[1:]:
            joined = _read_json(proc)
            if joined.get("event") != "connected":
                raise click.ClickException(f"a node could not join: {joined.get('error')}")
        listing = asyncio.run(_list(mesh_name, [r["address"] for r in readies]))
        _print(listing, mesh_name, as_json)
    finally:
        codes = _stop(procs)
    if any(code != 0 for code in codes):
        raise click.ClickException(f"nodes exited with {codes}")
    if not as_json:
        click.echo(f"all {len(codes)} nodes left cleanly (exit 0 after SIGTERM)")


def _start(procs: list[subprocess.Popen[str]], mesh_name: str, name: str, seeds: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(
        MESH_NAME=mesh_name,
        MESH_NODE_NAME=name,
        MESH_PROFILE="local",
        MESH_HOST="127.0.0.1",
        MESH_SEEDS=seeds,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodes.plain"],
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


async def _list(mesh_name: str, addresses: list[str]) -> list[dict[str, Any]]:
    """Introduce a short-lived client node to every node and collect who they are."""
    rows = []
    async with mesh.Node(mesh.Config(name="meshctl", mesh=mesh_name, profile="local")) as me:
        for address in addresses:
            started = time.perf_counter()
            peer = await me.connect(address)
            rows.append(
                {
                    "id": peer.id,
                    "name": peer.name,
                    "address": address,
                    "protocol": peer.version,
                    "handshake_ms": round((time.perf_counter() - started) * 1000, 2),
                }
            )
    return rows


def _print(rows: list[dict[str, Any]], mesh_name: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"mesh": mesh_name, "nodes": rows}))
        return
    click.echo(f"mesh {mesh_name}: {len(rows)} nodes\n")
    header = f"{'NAME':<10} {'ID':<14} {'ADDRESS':<24} {'PROTOCOL':>8} {'HANDSHAKE':>10}"
    click.echo(header)
    for row in rows:
        click.echo(
            f"{row['name']:<10} {row['id'][:12]:<14} {row['address']:<24} "
            f"{row['protocol']:>8} {row['handshake_ms']:>8.2f}ms"
        )
    click.echo()


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
