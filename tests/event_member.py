"""A node program for event tests: subscribes to ``EVENT_PREFIX`` (in queue group
``EVENT_GROUP`` if set) and prints one JSON line per event it receives.

python -m tests.event_member   (settings from MESH_*, as every node program)
"""

from __future__ import annotations

import asyncio
import json
import os

from mesh import Node, Subscription
from nodes._program import run


async def _print_events(subscription: Subscription) -> None:
    async for event in subscription:
        line = {"event": "got", "topic": event.topic, "seq": event.seq, "data": event.data}
        print(json.dumps(line), flush=True)


async def setup(node: Node) -> None:
    prefix = os.environ.get("EVENT_PREFIX", "")
    group = os.environ.get("EVENT_GROUP") or None
    subscription = node.subscribe(prefix, group=group)
    node._spawn(_print_events(subscription), "print events")
    await asyncio.sleep(0)


if __name__ == "__main__":
    run(setup)
