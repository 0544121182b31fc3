"""An in-memory key/value store that announces every change as an event.

MESH_NAME=demo python -m nodes.kv

``kv.set(key, value)``, ``kv.get(key, default=None)``, ``kv.delete(key)`` (True if the
key was there) and ``kv.keys(prefix="")`` (sorted). Each change is published on
``kv.changed`` as ``{"key": str, "op": "set" | "delete", "value": the new value, or
None after a delete}``: one topic, whatever the key, so a subscriber to ``kv.`` sees
them all and topics stay short (at most 255 bytes). The data lives in the process and
goes with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mesh import Node, method, service
from nodes._program import run

#: The topic of change events.
TOPIC = "kv.changed"

Publish = Callable[[str, Any], Awaitable[object]]


@service("kv", version="1.0.0")
class KV:
    """Keys (strings) to values (anything mesh can send), in memory."""

    def __init__(self, publish: Publish | None = None) -> None:
        #: Where change events go (``node.publish``); None publishes nothing.
        self._publish = publish
        self._data: dict[str, Any] = {}

    @method(idempotent=True)
    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it has none."""
        return self._data.get(_checked(key), default)

    @method
    async def set(self, key: str, value: Any) -> None:
        """Give ``key`` the value ``value``; publishes ``kv.changed`` (op ``set``)."""
        self._data[_checked(key)] = value
        await self._changed(key, "set", value)

    @method
    async def delete(self, key: str) -> bool:
        """Remove ``key``: True if it was there (then ``kv.changed``, op ``delete``)."""
        if self._data.pop(_checked(key), _MISSING) is _MISSING:
            return False
        await self._changed(key, "delete", None)
        return True

    @method(idempotent=True)
    async def keys(self, prefix: str = "") -> list[str]:
        """The keys that start with ``prefix``, sorted."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        return sorted(k for k in self._data if k.startswith(prefix))

    async def _changed(self, key: str, op: str, value: Any) -> None:
        if self._publish is not None:
            await self._publish(TOPIC, {"key": key, "op": op, "value": value})


_MISSING = object()


def _checked(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a key is a str, got {type(key).__name__}")
    return key


async def setup(node: Node) -> None:
    node.add_service(KV(node.publish))


if __name__ == "__main__":
    run(setup)
