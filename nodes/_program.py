"""What every node program shares: settings from ``MESH_*``, a ready line, clean exit."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable

from mesh import Config, ConfigError, MeshError, Node

Setup = Callable[[Node], Awaitable[None]]


def run(setup: Setup | None = None) -> None:
    """Run a node configured from the environment until SIGTERM or SIGINT.

    Prints one JSON line ``{"event": "ready", "id", "name", "mesh", "address",
    "pub_address"}`` on stdout once the node serves, so scripts and tests can wait
    for it, then introduces itself to each seed (``MESH_SEEDS``) and prints a
    ``connected`` or ``connect_failed`` line for each. On SIGTERM: refuse new
    work, finish work in flight within the grace period, say goodbye to peers,
    exit 0. A bad setting exits 2 with one line.
    """
    level = os.environ.get("MESH_LOG_LEVEL", "WARNING").upper()
    if not isinstance(logging.getLevelName(level), int):
        print(
            f"error: MESH_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}",
            file=sys.stderr,
        )
        sys.exit(2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(Config.from_env(), setup))
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


async def _serve(config: Config, setup: Setup | None) -> None:
    async with Node(config) as node:
        if setup is not None:
            await setup(node)
        serving = asyncio.create_task(node.serve_forever())
        await asyncio.sleep(0)  # serve_forever installs its signal handlers before "ready"
        ready = {
            "event": "ready",
            "id": node.id,
            "name": node.name,
            "mesh": node.mesh,
            "address": node.address,
            "pub_address": node.pub_address,
            "gossip_address": node.gossip_address,
        }
        print(json.dumps(ready), flush=True)
        for seed in config.seeds:
            await _introduce(node, seed)
        await serving


async def _introduce(node: Node, address: str) -> None:
    """Handshake with a seed and report it as a JSON line; a failure is reported, not fatal."""
    try:
        peer = await node.connect(address)
    except MeshError as exc:
        line: dict[str, object] = {
            "event": "connect_failed",
            "address": address,
            "error": str(exc),
            "code": exc.code,
        }
    else:
        line = {
            "event": "connected",
            "address": address,
            "id": peer.id,
            "name": peer.name,
            "version": peer.version,
        }
    print(json.dumps(line), flush=True)


def seconds_from_env(name: str, default: float) -> float:
    """Environment variable ``name`` as a positive number of seconds (``default`` when
    unset or empty); :class:`mesh.ConfigError` naming it otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: expected a positive number of seconds, got {text!r}")
    return value
