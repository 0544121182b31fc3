"""An echo service from plain functions.

MESH_NAME=demo python -m nodes.echo
"""

from __future__ import annotations

from typing import Any

from mesh import Node
from nodes._program import run


async def say(message: Any) -> Any:
    """Return ``message`` unchanged."""
    return message


def shout(message: str) -> str:
    """Return ``message`` in capitals."""
    return message.upper()


async def setup(node: Node) -> None:
    node.add_service(say, name="echo.say")
    node.add_service(shout, name="echo.shout")


if __name__ == "__main__":
    run(setup)
