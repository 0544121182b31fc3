"""Testing code that uses mesh: pytest fixtures for in-process meshes, and helpers.

Installed as a pytest plugin (entry point ``pytest11``: ``mesh = "mesh.testing"``), so
in any project with mesh and pytest-asyncio installed these fixtures are there with no
import:

- ``mesh_config``: a :class:`~mesh.Config` for a fresh mesh of this test only (its own
  random name, 127.0.0.1, the ``test`` profile, discovery off);
- ``mesh_cluster``: ``nodes = await mesh_cluster(3)`` starts nodes of that mesh, each
  joined through the first, and waits until they all list each other; they are closed
  after the test;
- ``mesh_node``: one started node of such a mesh.

Helpers, usable with or without pytest:

- :func:`call`: wait until a node knows a provider, then call it;
- :func:`call_handler`: run a handler directly, with a :func:`mesh.current_call`
  context made up for the test (:func:`call_context`), sync or async, streams too.

The fixtures are defined only when pytest can be imported; importing this module costs
little more than ``import mesh`` (docs/guide-testing.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ._config import Config
from ._errors import MeshError
from ._node.node import Node
from ._rpc.context import CALL_CONTEXT, CallContext
from ._rpc.services import _METHOD_ATTR, _SERVICE_ATTR, _MethodMeta, _ServiceMeta
from ._util.resource import AsyncResource

# The fixtures (mesh_config, mesh_cluster, mesh_node) are found by pytest, not imported.
__all__ = ["TEST_CALLER", "Cluster", "call", "call_context", "call_handler", "fresh_config"]

#: The caller id of a made-up call context, unless one is given.
TEST_CALLER = "0" * 32
#: How long :class:`Cluster` waits, by default, for its nodes to list each other.
SETTLE_TIMEOUT = 10.0


def fresh_config(**overrides: Any) -> Config:
    """A :class:`Config` for a mesh of its own: a random mesh name, 127.0.0.1, the
    ``test`` profile (timeouts of seconds, probes every 50 ms), discovery off. The
    ``MESH_*`` environment is not read; ``overrides`` are applied last."""
    settings: dict[str, Any] = {
        "mesh": f"test-{secrets.token_hex(4)}",
        "host": "127.0.0.1",
        "profile": "test",
        "discovery": False,
    }
    settings.update(overrides)
    return Config(**settings)


class Cluster(AsyncResource):
    """Nodes of one mesh in this process: ``nodes = await cluster(3)``.

    Every node after the first joins through the first (its seed). :meth:`aclose`
    closes them all; the ``mesh_cluster`` fixture does that after the test.
    """

    def __init__(self, config: Config | None = None) -> None:
        #: What every node starts from (each gets its own name, and the first as seed).
        self.config: Config = config if config is not None else fresh_config()
        #: The nodes started so far, in order.
        self.nodes: list[Node] = []

    async def __call__(
        self,
        count: int = 1,
        *,
        wait: bool = True,
        timeout: float = SETTLE_TIMEOUT,
        **overrides: Any,
    ) -> list[Node]:
        """Start ``count`` more nodes (named ``n1``, ``n2``, ...; ``overrides`` apply to
        their Config) and, with ``wait``, wait until every node of the cluster lists
        every other alive with its record. Returns the nodes started by this call."""
        if type(count) is not int or count < 1:
            raise ValueError(f"count is a positive number of nodes, got {count!r}")
        started = []
        for _ in range(count):
            settings: dict[str, Any] = {"name": f"n{len(self.nodes) + 1}"}
            if self.nodes:
                settings["seeds"] = (self.nodes[0].address,)
            node = Node(self.config.replace(**{**settings, **overrides}))
            await node.start()
            self.nodes.append(node)
            started.append(node)
        if wait:
            await self.wait_settled(timeout=timeout)
        return started

    async def wait_settled(self, *, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until every open node lists every other alive, with its record."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = [n for n in self.nodes if not n._closed]
            ids = {n.id for n in nodes}
            missing = {
                n.name: sorted(ids - {m.id for m in n.members() if _listed_alive(m)}) for n in nodes
            }
            if not any(missing.values()):
                return
            if time.monotonic() > deadline:
                raise MeshError(f"the nodes did not list each other within {timeout:g} s")
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        """Close every node, the last started first."""
        nodes, self.nodes = self.nodes, []
        for node in reversed(nodes):
            await node.aclose(grace=0)


def _listed_alive(member: Any) -> bool:
    return bool(member.status == "alive" and member.record is not None)


async def call(
    node: Node, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
) -> Any:
    """``node.call(target, ...)`` once ``node`` knows a provider of its service
    (:meth:`Node.wait_for_service`): a test need not wait for gossip itself.
    ``timeout`` bounds the wait and then the call (each the profile's call timeout by
    default); other keywords go to :meth:`Node.call` (``node=`` pins a provider) and on
    to the handler."""
    service = target.rpartition(".")[0]
    if not service:
        raise ValueError(f"a target is 'service.method', got {target!r}")
    await node.wait_for_service(service, timeout=timeout)
    return await node.call(target, *args, timeout=timeout, **kwargs)


def call_context(
    handler: Callable[..., Any] | None = None,
    *,
    service: str | None = None,
    method: str | None = None,
    deadline: float | None = None,
    timeout: float | None = None,
    trace_id: str | None = None,
    caller: str = TEST_CALLER,
    attempt: int = 1,
    call_id: int = 1,
) -> CallContext:
    """A :class:`mesh.CallContext` as a node would give ``handler``: ``service`` and
    ``method`` default to what the handler's decorators say (else ``"test"`` and its
    name); ``deadline`` is a ``time.monotonic()`` time, or give ``timeout`` seconds from
    now; ``trace_id`` defaults to a new random one. Call ``.cancel()`` on it to test
    how a handler stops when its caller gives up."""
    if deadline is not None and timeout is not None:
        raise TypeError("give deadline (a time.monotonic() time) or timeout, not both")
    if timeout is not None:
        deadline = time.monotonic() + timeout
    found_service, found_method = _names_of(handler)
    return CallContext(
        service=service if service is not None else found_service,
        method=method if method is not None else found_method,
        call_id=call_id,
        caller=caller,
        trace_id=trace_id if trace_id is not None else f"{random.getrandbits(64):016x}",
        attempt=attempt,
        deadline=deadline,
    )


def call_handler(
    handler: Callable[..., Any],
    /,
    *args: Any,
    context: CallContext | None = None,
    deadline: float | None = None,
    timeout: float | None = None,
    trace_id: str | None = None,
    caller: str = TEST_CALLER,
    attempt: int = 1,
    **kwargs: Any,
) -> Any:
    """Call ``handler(*args, **kwargs)`` as a node would, with :func:`mesh.current_call`
    returning ``context`` (by default :func:`call_context` of the other keywords).

    Returns what calling the handler returns, with the context set while its code
    runs: the result of a sync function; an awaitable of an ``async def`` one; an
    iterator of a generator; an async iterator of an async generator. The deadline is
    only reported (``current_call().remaining``), not enforced: a node enforces it.
    """
    if context is None:
        context = call_context(
            handler,
            deadline=deadline,
            timeout=timeout,
            trace_id=trace_id,
            caller=caller,
            attempt=attempt,
        )
    elif deadline is not None or timeout is not None or trace_id is not None:
        raise TypeError("give a context, or the settings of one, not both")
    target = inspect.unwrap(handler)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(handler):
        return _awaited(context, handler, args, kwargs)
    if inspect.isasyncgenfunction(target):
        return _async_items(context, handler, args, kwargs)
    run_in = contextvars.copy_context()
    run_in.run(CALL_CONTEXT.set, context)
    if inspect.isgeneratorfunction(target):
        return _items(run_in, handler, args, kwargs)
    return run_in.run(handler, *args, **kwargs)


async def _awaited(
    context: CallContext, handler: Callable[..., Any], args: Any, kwargs: dict[str, Any]
) -> Any:
    token = CALL_CONTEXT.set(context)
    try:
        return await handler(*args, **kwargs)
    finally:
        CALL_CONTEXT.reset(token)


async def _async_items(
    context: CallContext, handler: Callable[..., Any], args: Any, kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    items = handler(*args, **kwargs)  # creating it runs none of its code
    try:
        while True:
            token = CALL_CONTEXT.set(context)
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                return
            finally:
                CALL_CONTEXT.reset(token)
            yield item
    finally:
        token = CALL_CONTEXT.set(context)
        try:
            await items.aclose()
        finally:
            CALL_CONTEXT.reset(token)


def _items(
    run_in: contextvars.Context, handler: Callable[..., Any], args: Any, kwargs: dict[str, Any]
) -> Iterator[Any]:
    generator = run_in.run(handler, *args, **kwargs)
    try:
        while True:
            try:
                item = run_in.run(next, generator)
            except StopIteration:
                return
            yield item
    finally:
        run_in.run(generator.close)


def _names_of(handler: Callable[..., Any] | None) -> tuple[str, str]:
    """(service, method) as the handler's decorators name them, else ("test", its name)."""
    if handler is None:
        return "test", "handler"
    name = getattr(handler, "__name__", "handler")
    meta = getattr(handler, _METHOD_ATTR, None)
    if isinstance(meta, _MethodMeta) and meta.name:
        name = meta.name
    owner = getattr(handler, "__self__", None)
    service = getattr(type(owner), _SERVICE_ATTR, None) if owner is not None else None
    return (service.name if isinstance(service, _ServiceMeta) else "test"), name


# -- the pytest plugin -----------------------------------------------------------------------

try:
    import pytest
except ImportError:  # helpers only: no fixtures without pytest
    _HAVE_PYTEST = False
else:
    _HAVE_PYTEST = True

if _HAVE_PYTEST:
    # pytest-asyncio's own decorator runs the async fixtures in its strict mode too.
    _async_fixture: Callable[..., Any] = pytest.fixture
    try:
        import pytest_asyncio
    except ImportError:  # another plugin may run async fixtures (docs/guide-testing.md)
        pass
    else:
        _async_fixture = pytest_asyncio.fixture

    @pytest.fixture
    def mesh_config() -> Config:
        """A Config for a fresh mesh of this test only (:func:`fresh_config`)."""
        return fresh_config()

    @_async_fixture
    async def mesh_cluster(mesh_config: Config) -> AsyncIterator[Cluster]:
        """``nodes = await mesh_cluster(3)``: started nodes of the test's mesh, joined
        through the first and listing each other; closed after the test."""
        async with Cluster(mesh_config) as cluster:
            yield cluster

    @_async_fixture
    async def mesh_node(mesh_cluster: Cluster) -> Node:
        """One started node of the test's mesh (the first of ``mesh_cluster``)."""
        (node,) = await mesh_cluster(1)
        return node
