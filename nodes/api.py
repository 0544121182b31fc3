"""A front service that depends on ``kv``: offered only while a kv store is in the mesh.

MESH_NAME=demo python -m nodes.api      (then, in another shell: python -m nodes.kv)

The ``api`` service (``depends_on=["kv@1"]``) is ``waiting`` until some node offers
``kv`` 1.x; then its ``start()`` runs and it is ``up``. Its ``run()`` loop counts the
keys in kv every ``API_INTERVAL`` seconds (default 1.0). When the last kv provider goes
it is ``degraded`` (its ``on_dependency_lost("kv")`` notes it); when one is back it is
restarted (``stop()``, then ``start()``). ``api.put(key, value)`` and
``api.get(key)`` go through to kv; ``api.status()`` says what the service has seen.
Each lifecycle step is also printed as a JSON line (``{"event": "api", "hook": ...}``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mesh import MeshError, Node, method, service
from nodes._program import run, seconds_from_env

DEFAULT_INTERVAL = 1.0


@service("api", version="1.0.0", depends_on=["kv@1"])
class Api:
    """A front end to the kv store, with a background loop that counts its keys."""

    def __init__(self, node: Node, interval: float = DEFAULT_INTERVAL) -> None:
        self.node = node
        self.interval = interval
        #: Keys in kv at the last count (None: not counted yet).
        self.keys: int | None = None
        self.starts = 0
        self.lost: list[str] = []

    async def start(self) -> None:
        """Called once every dependency has a provider, and again after a restart."""
        self.starts += 1
        self._say("start", starts=self.starts)

    async def run(self) -> None:
        """The background loop: cancelled when the service stops; an exception here
        is a crash, and the node restarts the service with backoff."""
        while True:
            try:
                self.keys = len(await self.node.call("kv.keys", timeout=self.interval))
            except MeshError as exc:  # kv went away meanwhile: the node tells us apart
                self._say("count_failed", error=str(exc))
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Called when the node restarts the service or closes."""
        self._say("stop")

    def on_dependency_lost(self, name: str) -> None:
        """The last provider of ``name`` went: the service is ``degraded`` until it is back."""
        self.lost.append(name)
        self._say("dependency_lost", dependency=name)

    @method
    async def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in kv."""
        await self.node.call("kv.set", key, value)

    @method(idempotent=True)
    async def get(self, key: str) -> Any:
        """The value of ``key`` in kv (None if it has none)."""
        return await self.node.call("kv.get", key)

    @method(idempotent=True)
    async def status(self) -> dict[str, Any]:
        """What the service has seen: starts, dependencies lost, keys at the last count."""
        return {"starts": self.starts, "lost": self.lost, "keys": self.keys}

    @staticmethod
    def _say(hook: str, **fields: Any) -> None:
        print(json.dumps({"event": "api", "hook": hook, **fields}), flush=True)


def interval_from_env() -> float:
    """``API_INTERVAL`` in seconds (default 1.0); :class:`mesh.ConfigError` if it is not a
    positive number."""
    return seconds_from_env("API_INTERVAL", DEFAULT_INTERVAL)


async def setup(node: Node) -> None:
    node.add_service(Api(node, interval_from_env()))


if __name__ == "__main__":
    run(setup)
