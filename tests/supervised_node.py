"""A node program for tests/test_supervision.py: supervised services, chosen by SERVICES.

SERVICES=api,web python -m tests.supervised_node

- ``db``: a plain service (``db.get(key)``), what the others depend on.
- ``api`` (depends on ``db@1``) and ``web`` (depends on ``api`` and ``db``): lifecycle
  hooks that print JSON lines ``{"event": "hook", "service", "hook", ...}``; ``hooks()``
  returns the hooks called so far.
- ``crashy``: its ``run()`` raises ``RuntimeError("crash number N")`` after
  ``CRASH_AFTER`` seconds (default 0.01), every time; ``ping()`` answers while it is up.
- ``steady``: a healthy neighbour: ``ping()``, ``fail()`` (raises ValueError) and
  ``ticks()`` (how often its own ``run()`` loop went round).
- ``cycle``: ``c1`` and ``c2`` that depend on each other: registration fails, the
  program exits 2 naming the cycle.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from mesh import Node, method, service
from nodes._program import run


def say(service: str, hook: str, **fields: Any) -> None:
    print(json.dumps({"event": "hook", "service": service, "hook": hook, **fields}), flush=True)


@service("db", version="1.0.0")
class Db:
    @method(idempotent=True)
    async def get(self, key: str) -> str:
        return f"value of {key}"


class Hooked:
    """Hooks that print and remember themselves."""

    name = ""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _hook(self, hook: str, **fields: Any) -> None:
        self.calls.append(hook if not fields else f"{hook}:{','.join(map(str, fields.values()))}")
        say(self.name, hook, **fields)

    async def start(self) -> None:
        self._hook("start")

    async def run(self) -> None:
        self._hook("run")
        await asyncio.Event().wait()  # until the node cancels it

    async def stop(self) -> None:
        self._hook("stop")

    async def on_dependency_lost(self, name: str) -> None:
        self._hook("lost", dependency=name)

    @method
    async def hooks(self) -> list[str]:
        return self.calls

    @method
    async def hello(self) -> str:
        return f"hello from {self.name}"


@service("api", version="1.0.0", depends_on=["db@1"])
class Api(Hooked):
    name = "api"


@service("web", depends_on=["api", "db"])
class Web(Hooked):
    name = "web"


@service("crashy")
class Crashy:
    def __init__(self) -> None:
        self.crashes = 0
        self.after = float(os.environ.get("CRASH_AFTER", "0.01"))

    async def start(self) -> None:
        say("crashy", "start")

    async def run(self) -> None:
        await asyncio.sleep(self.after)
        self.crashes += 1
        raise RuntimeError(f"crash number {self.crashes}")

    async def stop(self) -> None:
        say("crashy", "stop")

    @method
    async def ping(self) -> str:
        return "pong"


@service("steady")
class Steady:
    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0.01)

    @method
    async def ping(self) -> str:
        return "steady"

    @method
    async def fail(self) -> None:
        raise ValueError("a handler that fails")

    @method
    async def ticks(self) -> int:
        return self.count


@service("c1", depends_on=["c2"])
class C1:
    @method
    async def ping(self) -> str:
        return "c1"


@service("c2", depends_on=["c1"])
class C2:
    @method
    async def ping(self) -> str:
        return "c2"


KINDS: dict[str, list[type]] = {
    "db": [Db],
    "api": [Api],
    "web": [Web],
    "crashy": [Crashy],
    "steady": [Steady],
    "cycle": [C1, C2],
}


async def setup(node: Node) -> None:
    for kind in os.environ.get("SERVICES", "").split(","):
        for cls in KINDS.get(kind.strip(), []):
            node.add_service(cls())


if __name__ == "__main__":
    run(setup)
