"""mesh.testing: the pytest plugin's fixtures, call(), call_handler(), and the guide's examples."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import mesh
from mesh import Config, MeshError, Node, NoProvider, method, service, stream
from mesh.testing import TEST_CALLER, Cluster, call, call_context, call_handler, fresh_config

GUIDE = Path(__file__).parent.parent / "docs" / "guide-testing.md"


@service("probe", version="2.1.0")
class Probe:
    """Handlers that report the call they run in."""

    @method
    async def here(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        return _seen()

    @method(name="renamed")
    def sync_here(self, a: int, b: int = 0) -> tuple[int, dict[str, Any]]:
        return a + b, _seen()

    @stream
    def items(self, n: int) -> Any:
        for i in range(n):
            yield i, mesh.current_call().method

    @stream
    async def async_items(self, n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0)
            yield i, mesh.current_call().service

    @method
    def wait_for_cancel(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if mesh.current_call().cancelled:
                return True
            time.sleep(0.005)
        return False


def _seen() -> dict[str, Any]:
    c = mesh.current_call()
    return {
        "service": c.service,
        "method": c.method,
        "caller": c.caller,
        "trace_id": c.trace_id,
        "attempt": c.attempt,
        "deadline": c.deadline,
        "remaining": c.remaining,
    }


def plain(x: int) -> int:
    return x * 2 + (mesh.current_call().attempt - 1)


# -- the plugin -------------------------------------------------------------------------------


def test_the_plugin_is_loaded_from_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("mesh")
    import mesh.testing as module

    assert set(module.__all__) == {
        "TEST_CALLER", "Cluster", "call", "call_context", "call_handler", "fresh_config",
    }  # fmt: skip
    for name in ("mesh_config", "mesh_cluster", "mesh_node"):
        assert callable(getattr(module, name))


def test_mesh_config_is_a_fresh_mesh_on_loopback(mesh_config: Config) -> None:
    assert re.fullmatch(r"test-[0-9a-f]{8}", mesh_config.mesh)
    assert mesh_config.host == "127.0.0.1"
    assert mesh_config.profile == "test"
    assert mesh_config.discovery is False
    assert fresh_config().mesh != mesh_config.mesh
    assert fresh_config(workers=2).workers == 2


async def test_mesh_cluster_starts_nodes_that_list_each_other(
    mesh_cluster: Cluster, mesh_config: Config
) -> None:
    a, b, c = await mesh_cluster(3)
    assert [n.name for n in (a, b, c)] == ["n1", "n2", "n3"]
    assert {n.mesh for n in (a, b, c)} == {mesh_config.mesh}
    for node in (a, b, c):
        alive = {m.name for m in node.members() if m.status == "alive" and m.record is not None}
        assert alive == {"n1", "n2", "n3"}
        assert node.address.startswith("tcp://127.0.0.1:")
    (d,) = await mesh_cluster(1, workers=2)  # more nodes join through the first
    assert d.name == "n4"
    assert d.config.seeds == (a.address,)
    assert d.config.workers == 2
    assert mesh_cluster.nodes == [a, b, c, d]
    assert len(c.members()) == 4


async def test_mesh_node_is_one_started_node(mesh_node: Node, mesh_cluster: Cluster) -> None:
    assert mesh_cluster.nodes == [mesh_node]
    assert [m.name for m in mesh_node.members()] == ["n1"]
    async with mesh_node.subscribe("t.") as sub:
        await mesh_node.publish("t.x", {"a": 1})
        assert (await anext(sub)).data == {"a": 1}


async def test_a_cluster_closes_its_nodes() -> None:
    async with Cluster() as cluster:
        nodes = await cluster(2, wait=False)
        await cluster.wait_settled(timeout=5.0)
    assert cluster.nodes == []
    for node in nodes:
        with pytest.raises(MeshError, match="closed"):
            node.members()
    with pytest.raises(ValueError, match="positive"):
        await Cluster()(0)


# -- call -----------------------------------------------------------------------------------


async def test_call_waits_for_a_provider_gossip_makes_known(mesh_cluster: Cluster) -> None:
    provider, caller = await mesh_cluster(2)

    async def offer_later() -> None:
        await asyncio.sleep(0.2)
        provider.add_service(Probe())

    later = asyncio.create_task(offer_later())
    seen = await call(caller, "probe@2.here", timeout=5.0)
    await later
    assert seen["service"] == "probe"
    assert seen["caller"] == caller.id
    total, pinned = await call(caller, "probe.renamed", 1, b=2, node="n1")  # to the handler
    assert total == 3
    assert pinned["method"] == "renamed"
    assert pinned["trace_id"] != seen["trace_id"]
    with pytest.raises(NoProvider):
        await call(caller, "nobody.here", timeout=0.2)
    with pytest.raises(ValueError, match=r"service\.method"):
        await call(caller, "nodot")


# -- call_handler ------------------------------------------------------------------------------


async def test_call_handler_runs_an_async_handler_with_a_made_up_context() -> None:
    seen = await call_handler(Probe().here, trace_id="feedface", caller="c" * 32, attempt=3)
    assert seen == {
        "service": "probe",
        "method": "here",
        "caller": "c" * 32,
        "trace_id": "feedface",
        "attempt": 3,
        "deadline": None,
        "remaining": None,
    }
    with pytest.raises(MeshError, match="only available inside a service handler"):
        mesh.current_call()  # never set outside the handler


def test_call_handler_runs_a_sync_handler_and_takes_keywords() -> None:
    total, seen = call_handler(Probe().sync_here, 1, b=2, timeout=10.0)
    assert total == 3
    assert seen["method"] == "renamed"  # as @method(name=...) says
    assert seen["caller"] == TEST_CALLER
    assert re.fullmatch(r"[0-9a-f]{16}", seen["trace_id"])
    assert 9.0 < seen["remaining"] <= 10.0
    deadline = time.monotonic() + 3
    assert call_handler(Probe().sync_here, 1, deadline=deadline)[1]["deadline"] == deadline
    assert call_handler(plain, 5) == 10
    assert call_handler(plain, 5, attempt=2) == 11
    assert call_context(plain).service == "test"
    assert call_context(plain).method == "plain"
    with pytest.raises(MeshError):
        mesh.current_call()


async def test_call_handler_streams_sync_and_async_generators() -> None:
    items = call_handler(Probe().items, 3)
    assert list(items) == [(0, "items"), (1, "items"), (2, "items")]
    async_items = call_handler(Probe().async_items, 2)
    assert [x async for x in async_items] == [(0, "probe"), (1, "probe")]
    # a stream left early is closed, and the context does not leak out of it
    partial = call_handler(Probe().items, 10)
    assert next(partial) == (0, "items")
    partial.close()
    with pytest.raises(MeshError):
        mesh.current_call()


def test_call_handler_with_a_context_the_test_cancels() -> None:
    probe = Probe()
    ctx = call_context(probe.wait_for_cancel, service="other", attempt=4)
    assert (ctx.service, ctx.method, ctx.attempt, ctx.call_id) == ("other", "wait_for_cancel", 4, 1)
    timer = threading.Timer(0.05, ctx.cancel)
    timer.start()
    try:
        assert call_handler(probe.wait_for_cancel, 5.0, context=ctx) is True
    finally:
        timer.join()
    assert call_handler(probe.wait_for_cancel, 0.01) is False
    with pytest.raises(TypeError, match="not both"):
        call_context(plain, deadline=1.0, timeout=1.0)
    with pytest.raises(TypeError, match="not both"):
        call_handler(plain, 1, context=ctx, timeout=1.0)


# -- the guide ------------------------------------------------------------------------------


def _guide_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def test_the_guides_test_file_passes(pytester: pytest.Pytester) -> None:
    files = {b.splitlines()[0][2:]: b for b in _guide_blocks() if b.startswith("# test_")}
    assert list(files) == ["test_greeter.py"]
    pytester.makepyfile(**{name.removesuffix(".py"): code for name, code in files.items()})
    settings = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(settings) == 1
    pytester.makepyprojecttoml(settings[0])
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=3)


def test_the_guides_snippets_run() -> None:
    snippets = [b for b in _guide_blocks() if not b.startswith("# test_")]
    assert snippets
    for code in snippets:
        exec(compile(code, str(GUIDE), "exec"), {})
    for thread in threading.enumerate():  # the snippet's Timer has finished
        if isinstance(thread, threading.Timer):
            thread.join()
