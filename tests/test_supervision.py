"""Supervision and dependencies with real nodes: crash loops, restarts with backoff, the
give-up, services waiting for a dependency on another process, degraded when it is
killed, restarted in dependency order when it is back, cycles refused, meshctl deps.

Node programs (tests/supervised_node.py) run as processes joined through a node of this
process (the seed and observer), with the ``test`` profile on 127.0.0.1; each is ended
by PID (SIGTERM, or SIGKILL where the test kills it). Their hooks print JSON lines,
read here in a thread so the observer's loop keeps running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mesh import (
    PROFILES,
    Event,
    MeshError,
    Node,
    NoProvider,
    RemoteError,
    Subscription,
    SupervisionSettings,
    Unavailable,
    method,
    service,
)
from mesh.testing import fresh_config
from nodes.kv import KV
from tests.programs import node_env, node_program, read_line, stop

MESHCTL = str(Path(sys.executable).parent / "meshctl")


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def listed(node: Node, member: str, service: str) -> Any:
    """``service`` as ``node`` sees it listed by the live member named ``member``."""
    for info in node.members():
        if info.name == member and info.status == "alive" and info.record is not None:
            return info.record.service(service)
    return None


def state(node: Node, member: str, service: str) -> str | None:
    found = listed(node, member, service)
    return None if found is None else found.state


class Lines:
    """The JSON lines a program prints, read in a thread; ``seen`` keeps them all."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []

    async def until(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line within {timeout} s; seen: {self.seen}")
            line = await asyncio.to_thread(read_line, self.proc, left)
            self.seen.append(line)
            if wanted(line):
                return

    def hooks(self, service: str) -> list[str]:
        return [
            line["hook"] + (f":{line['dependency']}" if "dependency" in line else "")
            for line in self.seen
            if line.get("event") == "hook" and line.get("service") == service
        ]


def hook(service: str, name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("service") == service and line.get("hook") == name


def api_hook(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == "api" and line.get("hook") == name


@asynccontextmanager
async def program(
    observer: Node, name: str, module: str = "tests.supervised_node", **settings: str
) -> AsyncIterator[Lines]:
    """``module`` (by default tests/supervised_node.py) as node ``name``, joined through
    ``observer``. What
    waits for the process runs in a thread: the observer's loop must keep answering
    probes (a loop blocked for a second is a node that others declare dead)."""
    env = node_env(
        MESH_NAME=observer.mesh,
        MESH_HOST="127.0.0.1",
        MESH_NODE_NAME=name,
        MESH_SEEDS=observer.address,
        **settings,
    )
    with node_program(module, env) as proc:
        lines = Lines(proc)
        ready = await asyncio.to_thread(read_line, proc)
        assert ready["event"] == "ready", ready
        yield lines


async def stopped(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM ``proc`` and wait (in a thread) for its exit code."""
    return await asyncio.to_thread(stop, proc)


@asynccontextmanager
async def observer() -> AsyncIterator[Node]:
    async with Node(fresh_config(name="here")) as node:
        yield node


async def drain(sub: Subscription) -> list[Event]:
    """The events that arrived so far, without waiting for more."""
    events = []
    while sub.pending():
        events.append(await anext(sub))
    return events


async def meshctl(*args: str, seed: str, mesh_name: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update({"MESH_SEEDS": seed, "MESH_NAME": mesh_name, "MESH_DISCOVERY": "off"})
    return await asyncio.to_thread(
        subprocess.run,
        [MESHCTL, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


# -- crashes -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_crash_loop_restarts_then_fails_and_the_neighbours_live_on() -> None:
    async with (
        observer() as here,
        here.subscribe("$mesh.service.") as events,
        program(here, "prog", SERVICES="crashy,steady", CRASH_AFTER="0.2") as lines,
    ):
        proc = lines.proc
        await here.wait_for_service("steady", timeout=10.0)
        calls = 0
        started = time.monotonic()
        while state(here, "prog", "crashy") != "failed":
            assert time.monotonic() - started < 20, "crashy never failed"
            # the neighbour answers all along, a failing handler included
            assert await here.call("steady.ping") == "steady"
            with pytest.raises(RemoteError, match="a handler that fails"):
                await here.call("steady.fail")
            calls += 1
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        print(f"crashy failed after {took:.2f} s; {calls} rounds of calls to steady meanwhile")
        crashy = listed(here, "prog", "crashy")
        settings = PROFILES["test"].supervision
        assert crashy.restarts == settings.max_restarts == 5
        assert crashy.last_crash.error == "RuntimeError: crash number 6"
        # each crash stopped it (stop() after run() raised), each restart started it
        await lines.until(lambda _: lines.hooks("crashy").count("stop") == 6, 10.0)
        assert lines.hooks("crashy") == ["start", "stop"] * 6
        # a failed service takes no calls; the node and its other service live on
        with pytest.raises((NoProvider, Unavailable), match="crashy"):
            await here.call("crashy.ping", timeout=1.0)
        ticks = await here.call("steady.ticks")
        await asyncio.sleep(0.1)
        assert await here.call("steady.ticks") > ticks
        assert proc.poll() is None
        # the observer derived the events from the listings it saw
        await eventually(lambda: events.pending() > 0, 5.0, "events")
        got = [e for e in await drain(events) if e.data["service"] == "crashy"]
        topics = [e.topic for e in got]
        assert topics.count("$mesh.service.failed") == 1
        assert topics.count("$mesh.service.crashed") >= 1
        assert topics.count("$mesh.service.restarted") >= 1
        crashed = next(e.data for e in got if e.topic == "$mesh.service.crashed")
        assert crashed["error"].startswith("RuntimeError: crash number ")
        assert crashed["traceback"] is None  # a remote crash: the listing has no traceback
        assert crashed["node"] == "prog"
        failed = next(e.data for e in got if e.topic == "$mesh.service.failed")
        assert failed["error"] == "RuntimeError: crash number 6"
        assert failed["restarts"] == 5
        restarts = [e.data["restarts"] for e in got if e.topic == "$mesh.service.restarted"]
        assert restarts == sorted(restarts)
        assert await stopped(proc) == 0


def supervised_config(**supervision: Any) -> Any:
    """A fresh mesh's config with these supervision settings (and a short hook timeout)."""
    timings = dataclasses.replace(
        PROFILES["test"],
        supervision=SupervisionSettings(**{"hook_timeout": 2.0, **supervision}),
    )
    return fresh_config(timings=timings)


@service("boom")
class Boom:
    def __init__(self) -> None:
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1

    async def run(self) -> None:
        raise RuntimeError(f"boom after start {self.starts}")


@service("quiet")
class Quiet:
    @method
    async def ping(self) -> str:
        return "quiet"


async def test_restarts_back_off_exponentially_and_local_events_carry_the_traceback() -> None:
    config = supervised_config(max_restarts=3, backoff_initial=0.1, backoff_max=0.25)
    async with Node(config.replace(name="a")) as node, node.subscribe("$mesh.service.") as sub:
        node.add_service(Quiet())
        boom = Boom()
        node.add_service(boom)
        got: list[Event] = []
        while not got or got[-1].topic != "$mesh.service.failed":
            got.append(await asyncio.wait_for(anext(sub), 10.0))
        got = [e for e in got if e.data["service"] == "boom"]
        crashed = [e.data for e in got if e.topic == "$mesh.service.crashed"]
        restarted = [e.data for e in got if e.topic == "$mesh.service.restarted"]
        assert len(crashed) == 4  # max_restarts + 1
        assert [r["restarts"] for r in restarted] == [1, 2, 3]
        assert [c["error"] for c in crashed] == [
            f"RuntimeError: boom after start {n}" for n in (1, 2, 3, 4)
        ]
        assert "Traceback (most recent call last)" in crashed[0]["traceback"]
        assert "in run" in crashed[0]["traceback"]
        assert crashed[0]["node"] == "a"
        assert crashed[0]["node_id"] == node.id
        gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(crashed)]
        print("gaps between crashes:", [round(g, 3) for g in gaps])
        for gap, backoff in zip(gaps, (0.1, 0.2, 0.25), strict=True):
            assert backoff * 0.9 <= gap < backoff + 2.0
        assert boom.starts == 4
        info = node.listing().service("boom")
        assert (info.state, info.restarts) == ("failed", 3)
        assert await node.call("quiet.ping") == "quiet"
        with pytest.raises(NoProvider):
            await node.call("boom.x", timeout=0.5)


@service("hooks")
class Hooks:
    def __init__(self, log: list[str], *, fail_stop: bool = False, hang: bool = False) -> None:
        self.log = log
        self.fail_stop = fail_stop
        self.hang = hang

    async def start(self) -> None:
        self.log.append("start")
        if self.hang:
            await asyncio.sleep(60)

    async def run(self) -> None:
        self.log.append("run")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.log.append("run cancelled")
            raise

    async def stop(self) -> None:
        self.log.append("stop")
        if self.fail_stop:
            raise OSError("stop failed")

    @method
    async def ping(self) -> str:
        return "pong"


@service("needs_hooks", depends_on=["hooks"])
class NeedsHooks:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def start(self) -> None:
        self.log.append("needs start")

    async def stop(self) -> None:
        self.log.append("needs stop")

    def on_dependency_lost(self, name: str) -> None:
        self.log.append(f"lost {name}")
        raise ValueError("a hook that fails")

    @method
    async def ping(self) -> str:
        return "pong"


async def test_start_run_and_stop_are_called_and_failing_hooks_take_nothing_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mesh")
    log: list[str] = []
    async with Node(supervised_config().replace(name="a")) as node:
        node.add_service(Hooks(log, fail_stop=True))
        node.add_service(NeedsHooks(log))
        await eventually(lambda: "needs start" in log and "run" in log, 5.0, "started")
        assert log.index("start") < log.index("needs start")  # dependency order
        await node.wait_for_service("needs_hooks", timeout=1.0)
        node.remove_service("hooks")  # its run() is cancelled, then stop() (which fails)
        await eventually(lambda: "lost hooks" in log, 5.0, "dependency lost")
        await eventually(lambda: "stop" in log, 5.0, "stopped")
        assert log.index("run cancelled") < log.index("stop")
        assert node.listing().service("needs_hooks").state == "degraded"
        assert await node.call("needs_hooks.ping") == "pong"  # degraded still answers
        assert "stop() failed" in caplog.text
        assert "on_dependency_lost('hooks') failed" in caplog.text
        # it comes back: the dependent restarts (stop, start)
        log.clear()
        node.add_service(Hooks(log))
        await eventually(
            lambda: node.listing().service("needs_hooks").restarts == 1, 5.0, "restarted"
        )
        assert log.index("start") < log.index("needs stop") < log.index("needs start")
        assert node.listing().service("needs_hooks").state == "up"
        log.clear()
    # the node closed: dependents stop first
    assert log.index("needs stop") < log.index("stop")


async def test_a_start_that_never_returns_is_a_crash() -> None:
    log: list[str] = []
    config = supervised_config(hook_timeout=0.2, max_restarts=1, backoff_initial=0.05)
    async with Node(config.replace(name="a")) as node:
        node.add_service(Hooks(log, hang=True))
        await eventually(lambda: node.listing().service("hooks").state == "failed", 10.0, "failed")
        info = node.listing().service("hooks")
        assert info.last_crash.error == "TimeoutError: start() did not return within 0.2 s"
        assert "stop" not in log  # start() never returned: nothing to stop
        assert log.count("start") == 2


# -- dependencies --------------------------------------------------------------------------


@service("db", version="1.0.0")
class Db:
    @method
    async def get(self, key: str) -> str:
        return key


@service("api", depends_on=["db@1"])
class Api:
    @method
    async def hello(self) -> str:
        return "hello"


async def test_wait_for_service_waits_until_a_provider_takes_calls() -> None:
    config = fresh_config()
    async with (
        Node(config.replace(name="a")) as a,
        Node(config.replace(name="b", seeds=(a.address,))) as b,
        Node(config.replace(name="c", seeds=(a.address,))) as c,
    ):
        a.add_service(Api())
        await eventually(lambda: state(b, "a", "api") == "waiting", 5.0, "b sees api waiting")
        for node in (a, b):
            with pytest.raises(NoProvider, match="api"):
                await node.wait_for_service("api", timeout=0.2)
            with pytest.raises((NoProvider, Unavailable)):
                await node.call("api.hello", timeout=0.5)
        assert b.services()["api"].providers[0].state == "waiting"
        waiting = asyncio.ensure_future(b.wait_for_service("api", timeout=10.0))
        here = asyncio.ensure_future(a.wait_for_service("api", timeout=10.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert not here.done()
        c.add_service(Db())
        took = time.monotonic()
        await asyncio.gather(waiting, here)
        print(f"api up {time.monotonic() - took:.3f} s after db was added on another node")
        assert await b.call("api.hello") == "hello"
        assert await a.call("api.hello") == "hello"
        with pytest.raises(NoProvider):
            await b.wait_for_service("api@2", timeout=0.2)
        # a dependency in the wrong version does not count
        listing = a.listing().service("api")
        assert (listing.state, listing.depends_on) == ("up", ("db@1",))


@pytest.mark.timeout(90)
async def test_dependencies_across_processes_waiting_degraded_and_restarted_in_order() -> None:
    async with observer() as here, program(here, "front", SERVICES="api,web") as front:
        await eventually(
            lambda: (
                state(here, "front", "api") == "waiting"
                and state(here, "front", "web") == "waiting"
            ),
            10.0,
            "api and web waiting",
        )
        with pytest.raises(NoProvider):
            await here.wait_for_service("api", timeout=0.3)
        deps = await meshctl("deps", "--json", seed=here.address, mesh_name=here.mesh)
        assert deps.returncode == 0, deps.stderr
        (web,) = [t for t in json.loads(deps.stdout) if t["service"] == "web"]
        assert web["state"] == "waiting"
        assert [d["requires"] for d in web["depends_on"]] == ["api", "db"]
        api = web["depends_on"][0]
        assert (api["state"], api["depends_on"][0]["requires"]) == ("waiting", "db@1")
        assert api["depends_on"][0]["state"] == "missing"
        services = await meshctl("services", seed=here.address, mesh_name=here.mesh)
        rows = {line.split()[0]: line.split() for line in services.stdout.splitlines()[1:]}
        assert rows["api"][3] == "waiting"
        assert front.hooks("api") == []  # not started while waiting

        async with program(here, "store", SERVICES="db") as store:
            took = time.monotonic()
            await here.wait_for_service("web", timeout=10.0)
            print(f"api and web up {time.monotonic() - took:.3f} s after db appeared")
            await front.until(hook("web", "run"))
            assert front.hooks("api")[:2] == ["start", "run"]
            assert front.hooks("web")[:2] == ["start", "run"]
            starts = [i for i, line in enumerate(front.seen) if line.get("hook") == "start"]
            assert [front.seen[i]["service"] for i in starts] == ["api", "web"]
            assert await here.call("web.hello") == "hello from web"
            deps = await meshctl("deps", "web", seed=here.address, mesh_name=here.mesh)
            assert deps.returncode == 0, deps.stderr
            text = deps.stdout.splitlines()
            assert text[0] == "web  up  front up"
            assert text[1] == "├── api  up  front up"
            assert text[2] == "│   └── db@1  up  store up"
            assert text[3] == "└── db  up  store up"
            os.kill(store.proc.pid, signal.SIGKILL)  # db loses its only provider
            await asyncio.to_thread(store.proc.wait, 5)
            await front.until(hook("web", "lost"), 15.0)
            assert "lost:db" in front.hooks("api")  # told first: dependency order
            assert "lost:db" in front.hooks("web")
            await eventually(lambda: state(here, "front", "api") == "degraded", 5.0, "api degraded")
            assert await here.call("api.hello") == "hello from api"  # still answers

        mark = len(front.seen)
        async with program(here, "store2", SERVICES="db"):
            await front.until(hook("web", "start"), 15.0)
            await eventually(
                lambda: (
                    state(here, "front", "web") == "up"
                    and listed(here, "front", "web").restarts == 1
                ),
                10.0,
                "web up again",
            )
            again = [
                (line["service"], line["hook"])
                for line in front.seen[mark:]
                if line["hook"] in ("start", "stop")
            ]
            # restarted in dependency order: api, then web that depends on it
            assert again == [
                ("api", "stop"), ("api", "start"), ("web", "stop"), ("web", "start"),
            ]  # fmt: skip
            assert listed(here, "front", "api").restarts == 1
            assert listed(here, "front", "api").last_crash is None
            assert await here.call("web.hello") == "hello from web"
            assert await stopped(front.proc) == 0
            stops = []
            while True:  # what it printed before it exited
                try:
                    line = await asyncio.to_thread(read_line, front.proc, 1.0)
                except (EOFError, TimeoutError, ValueError):
                    break
                if line.get("hook") == "stop":
                    stops.append(line["service"])
            assert stops == ["web", "api"]  # dependents stop first


def test_a_cycle_is_refused_when_the_program_registers_it() -> None:
    env = node_env(MESH_HOST="127.0.0.1", SERVICES="cycle")
    with node_program("tests.supervised_node", env) as proc:
        assert proc.wait(20) == 2
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert "error: service 'c2' would close a dependency cycle: c2 -> c1 -> c2" in err


async def test_a_cycle_is_refused_at_add_service_and_nothing_is_offered() -> None:
    @service("x", depends_on=["y"])
    class X:
        @method
        async def ping(self) -> None: ...

    @service("y", depends_on=["z"])
    class Y:
        @method
        async def ping(self) -> None: ...

    @service("z", depends_on=["x"])
    class Z:
        @method
        async def ping(self) -> None: ...

    async with Node(fresh_config(name="a")) as node:
        node.add_service(X())
        node.add_service(Y())
        with pytest.raises(MeshError, match=r"dependency cycle: z -> x -> y -> z"):
            node.add_service(Z())
        assert "z" not in node.local_services
        assert node.listing().service("z") is None


async def test_the_api_node_program_waits_for_kv_and_follows_it() -> None:
    """nodes.api, as docs/guide-service-bus.md runs it, with kv on the observer."""
    async with (
        observer() as here,
        program(here, "front", "nodes.api", API_INTERVAL="0.05") as api,
    ):
        await eventually(lambda: state(here, "front", "api") == "waiting", 10.0, "waiting")
        here.add_service(KV(here.publish))
        await here.wait_for_service("api", timeout=10.0)
        await api.until(api_hook("start"))
        await here.call("api.put", "greeting", "hello")
        assert await here.call("api.get", "greeting") == "hello"
        await eventually_async(
            lambda: here.call("api.status"), lambda s: s["keys"] == 1, 5.0, "counted"
        )
        here.remove_service("kv")  # its only provider: api is degraded
        await api.until(api_hook("dependency_lost"), 10.0)
        await eventually(lambda: state(here, "front", "api") == "degraded", 5.0, "degraded")
        assert (await here.call("api.status"))["lost"] == ["kv"]
        here.add_service(KV(here.publish))  # back: api restarts
        await api.until(api_hook("start"), 10.0)
        assert [line["hook"] for line in api.seen if line["event"] == "api"][-2:] == [
            "stop", "start",
        ]  # fmt: skip
        await eventually(lambda: state(here, "front", "api") == "up", 5.0, "up again")
        assert (await here.call("api.status"))["starts"] == 2
        assert await stopped(api.proc) == 0


async def eventually_async(
    get: Callable[[], Any], check: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    """Await ``get()`` until ``check`` holds for what it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = await get()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {value!r})")
        await asyncio.sleep(0.02)
