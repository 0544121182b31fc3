"""Supervision at runtime: runs services' ``start``/``run``/``stop`` hooks, restarts
crashed ones with backoff, and starts, degrades and restarts services as their
dependencies come and go in the mesh.

The decisions are mesh/_core/supervision.py's (pure, one :class:`Supervised` per service);
this module owns the tasks and reads the clock. One task per node, the supervisor
loop, carries out the actions, one service at a time in dependency order (a service
after those it depends on), so a restart of ``db`` and then of ``api`` that depends on
it happen in that order. It wakes when the mesh's listing changes (the node calls
:meth:`Lifecycle.changed`), when a ``run()`` ends with an exception, and when a restart
is due. Each ``run()`` is a task of its own; an exception there is caught and becomes
a crash of that service only: never of the node or of its other services.

What the node asks of it: :meth:`statuses` for its listing and :attr:`blocked` (the
supervised services that take no calls now, and why) before it serves a call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._config import SupervisionSettings
from .._core.events import SERVICE_CRASHED, SERVICE_FAILED, SERVICE_RESTARTED
from .._core.listing import version_matches
from .._core.supervision import (
    Action,
    Crash,
    Dependency,
    Lost,
    ServiceStatus,
    Start,
    Stop,
    Supervised,
    dependency_order,
)
from .._rpc.services import ServiceRegistry, ServiceSpec
from .._util.aio import wait_set, within

__all__ = ["Lifecycle", "LifecycleHost"]

log = logging.getLogger("mesh.lifecycle")

#: Longest traceback text an event carries (the end is kept).
TRACEBACK_TEXT = 8000


class LifecycleHost(Protocol):
    """What the supervisor uses of its node."""

    @property
    def node_name(self) -> str: ...

    def remote_offers(self, service: str) -> Iterable[str]:
        """Versions of ``service`` that other live members offer and that take calls."""
        ...

    def republish(self) -> None:
        """This node's listing changed (a state, a restart count, a crash)."""
        ...

    def system_event(self, topic: str, data: dict[str, Any]) -> None:
        """Deliver a ``$mesh.service.*`` event to this node's subscriptions (the node
        adds its own fields: node, node_id, status, address)."""
        ...


@dataclass(eq=False)
class _Entry:
    spec: ServiceSpec
    machine: Supervised
    #: The task running ``run()``, while it runs.
    run: asyncio.Task[None] | None = None
    #: ``run()`` raised: the exception and its traceback text, for the loop.
    crash: tuple[BaseException, str] | None = None
    #: Actions decided outside the loop (``add``), carried out by the loop.
    todo: list[Action] = field(default_factory=list)
    #: The status the listing shows (None: not listed yet).
    listed: ServiceStatus | None = None


class Lifecycle:
    """The supervisor of one node's supervised services (those with lifecycle hooks or
    dependencies; the others are always ``up`` and never pass through here)."""

    def __init__(
        self, host: LifecycleHost, registry: ServiceRegistry, settings: SupervisionSettings
    ) -> None:
        self._host = host
        self._registry = registry
        self.settings = settings
        self._entries: dict[str, _Entry] = {}
        self._order: list[str] | None = None
        #: Supervised services that take no calls now, by name: why, in words.
        self.blocked: dict[str, str] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._dirty = False

    # -- what the node calls ----------------------------------------------------------------

    def statuses(self) -> dict[str, ServiceStatus]:
        """State, restarts and last crash of each supervised service, by name."""
        return {name: e.machine.status for name, e in self._entries.items()}

    def add(self, spec: ServiceSpec) -> None:
        """A service was registered: supervise it if it has hooks or dependencies."""
        if not spec.supervised or self._closed:
            return
        entry = _Entry(spec, Supervised(spec.name, spec.depends_on, self.settings))
        self._entries[spec.name] = entry
        self._order = None
        if self._started:
            entry.todo.extend(entry.machine.begin(self._present, time.monotonic()))
            self._ensure_loop()
            self._poke()
        self._mark(entry)

    def remove(self, name: str) -> None:
        """A service was removed: stop it (in the background) if it runs."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        self._order = None
        self.blocked.pop(name, None)
        actions = entry.machine.stop()
        if actions or entry.run is not None:
            task = asyncio.get_running_loop().create_task(
                self._stop_hooks(entry, call_stop=bool(actions)),
                name=f"{self._host.node_name}: stop {name}",
            )
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._poke()  # its dependents look again

    def begin(self) -> None:
        """The node started: start what can start, and the supervisor loop (once there
        is something to supervise)."""
        if self._started or self._closed:
            return
        self._started = True
        self._wake = asyncio.Event()
        now = time.monotonic()
        for name in self._ordered():
            entry = self._entries[name]
            entry.todo.extend(entry.machine.begin(self._present, now))
            self._mark(entry)
        if self._entries:
            self._ensure_loop()

    def _ensure_loop(self) -> None:
        if self._loop is None and not self._closed:
            self._loop = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"{self._host.node_name}: supervisor"
            )

    def changed(self) -> None:
        """The mesh's listing changed: dependencies are looked at again."""
        if self._entries:
            self._poke()

    async def aclose(self) -> None:
        """Stop supervising, and stop every service that runs, dependents first."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        for name in reversed(self._ordered()):
            entry = self._entries.get(name)
            if entry is None:  # removed meanwhile: remove() stops it
                continue
            running = bool(entry.machine.stop())
            if running or entry.run is not None:
                await self._stop_hooks(entry, call_stop=running)
            self._mark(entry)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    # -- the loop ---------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _ordered(self) -> list[str]:
        if self._order is None:
            graph = {n: [d.service for d in e.spec.depends_on] for n, e in self._entries.items()}
            self._order = dependency_order(graph)
        return self._order

    async def _supervise(self) -> None:
        assert self._wake is not None
        while True:
            await asyncio.sleep(0)  # what set the wake-up (a republish, say) runs first
            self._wake.clear()
            try:
                for name in self._ordered():
                    entry = self._entries.get(name)
                    if entry is not None:
                        await self._step(entry)
                self._publish()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end supervision
                log.exception("node %s: supervisor", self._host.node_name)
                await asyncio.sleep(0.1)
            due = [e.machine.due for e in self._entries.values() if e.machine.due is not None]
            timeout = None if not due else max(0.0, min(due) - time.monotonic())
            await wait_set(self._wake, timeout)

    async def _step(self, entry: _Entry) -> None:
        """Everything that is due for one service, until nothing more is."""
        machine = entry.machine
        for _ in range(8):  # each round settles one thing; a few rounds settle them all
            if self._entries.get(entry.spec.name) is not entry:
                return  # removed meanwhile
            restarts = machine.restarts
            actions, entry.todo = entry.todo, []
            if entry.crash is not None:
                (exc, text), entry.crash = entry.crash, None
                actions += self._crashed(entry, exc, text)
            now = time.monotonic()
            actions += machine.dependencies(self._present, now)
            actions += machine.tick(self._present, now)
            if machine.restarts > restarts:
                self._event(entry, SERVICE_RESTARTED, {})
            self._mark(entry)
            if not actions:
                return
            for action in actions:
                await self._do(entry, action)

    async def _do(self, entry: _Entry, action: Action) -> None:
        if isinstance(action, Start):
            await self._start(entry)
        elif isinstance(action, Stop):
            await self._stop_hooks(entry, call_stop=True)
        elif isinstance(action, Lost):
            await self._lost(entry, action.dependency)

    async def _start(self, entry: _Entry) -> None:
        self._publish()  # "starting" shows while start() runs
        hooks = entry.spec.hooks
        if hooks.start is not None:
            limit = self.settings.hook_timeout
            try:
                async with asyncio.timeout(limit) as timer:
                    await hooks.start()
            except TimeoutError as exc:
                if not timer.expired():
                    self._crash_later(entry, exc)
                    return
                late = TimeoutError(f"start() did not return within {limit:g} s")
                entry.todo += self._crashed(entry, late, "")
                return
            except (Exception, SystemExit) as exc:
                self._crash_later(entry, exc)
                return
        if self._entries.get(entry.spec.name) is not entry:  # removed while it started
            await self._call_stop(entry)
            return
        entry.machine.started(time.monotonic())
        self._mark(entry)
        if hooks.run is not None:
            entry.run = asyncio.get_running_loop().create_task(
                self._run(entry), name=f"{self._host.node_name}: {entry.spec.name}.run"
            )

    def _crash_later(self, entry: _Entry, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc))
        entry.todo += self._crashed(entry, exc, text)

    async def _run(self, entry: _Entry) -> None:
        """``run()``, its exception caught: a crash of this service, never more."""
        assert entry.spec.hooks.run is not None
        try:
            await entry.spec.hooks.run()
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:
            entry.crash = (exc, "".join(traceback.format_exception(exc)))
            self._poke()
        else:
            log.info("node %s: %s.run() returned", self._host.node_name, entry.spec.name)

    async def _stop_hooks(self, entry: _Entry, *, call_stop: bool) -> None:
        """Cancel ``run()`` (if it still runs), then call ``stop()``."""
        task, entry.run = entry.run, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if call_stop:
            await self._call_stop(entry)

    async def _call_stop(self, entry: _Entry) -> None:
        stop = entry.spec.hooks.stop
        if stop is None:
            return
        try:
            await within(stop(), self.settings.hook_timeout)
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit):
            log.exception("node %s: %s.stop() failed", self._host.node_name, entry.spec.name)

    async def _lost(self, entry: _Entry, dependency: Dependency) -> None:
        hook = entry.spec.hooks.on_dependency_lost
        log.warning(
            "node %s: %s is degraded: no provider of %s",
            self._host.node_name,
            entry.spec.name,
            dependency,
        )
        if hook is None:
            return
        try:
            result = hook(dependency.service)
            if inspect.isawaitable(result):
                await within(result, self.settings.hook_timeout)
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit):
            log.exception(
                "node %s: %s.on_dependency_lost(%r) failed",
                self._host.node_name,
                entry.spec.name,
                dependency.service,
            )

    def _crashed(self, entry: _Entry, exc: BaseException, text: str) -> list[Action]:
        """Tell the machine; announce the crash (and the give-up)."""
        machine = entry.machine
        crash = Crash.of(exc, time.time())
        actions = machine.crashed(crash, time.monotonic())
        if machine.last_crash is not crash:  # not started (removed, stopped): no crash
            return actions
        name = entry.spec.name
        log.warning("node %s: %s crashed: %s", self._host.node_name, name, crash.error)
        self._event(
            entry,
            SERVICE_CRASHED,
            {
                "error": crash.error,
                "traceback": text[-TRACEBACK_TEXT:] or None,
                "time": crash.time,
            },
        )
        if machine.state == "failed":
            log.error(
                "node %s: %s failed: %d crashes within %g s; it is not restarted",
                self._host.node_name,
                name,
                self.settings.max_restarts + 1,
                self.settings.restart_window,
            )
            self._event(entry, SERVICE_FAILED, {"error": crash.error})
        self._mark(entry)
        return actions

    def _event(self, entry: _Entry, topic: str, data: dict[str, Any]) -> None:
        spec = entry.spec
        fields = {"service": spec.name, "version": spec.version}
        self._host.system_event(topic, {**fields, "restarts": entry.machine.restarts, **data})

    # -- dependencies and state -------------------------------------------------------------

    def _present(self, dependency: Dependency) -> bool:
        """Whether ``dependency`` has a provider that takes calls: here, or elsewhere."""
        name, constraint = dependency.service, dependency.constraint
        entry = self._entries.get(name)
        if entry is not None:
            if entry.machine.offered and version_matches(constraint, entry.spec.version):
                return True
        else:
            spec = self._registry.get(name)
            if spec is not None and version_matches(constraint, spec.version):
                return True
        return any(version_matches(constraint, v) for v in self._host.remote_offers(name))

    def _mark(self, entry: _Entry) -> None:
        """The entry may have changed: calls see it at once, the listing once per pass."""
        name = entry.spec.name
        reason = None if entry.machine.offered else self._why(entry)
        if self._entries.get(name) is entry:
            if reason is None:
                self.blocked.pop(name, None)
            else:
                self.blocked[name] = reason
        status = entry.machine.status
        if status != entry.listed:
            entry.listed = status
            self._dirty = True

    def _why(self, entry: _Entry) -> str:
        machine = entry.machine
        who = f"service {entry.spec.name!r} on node {self._host.node_name!r}"
        crash = machine.last_crash
        if machine.state == "waiting":
            return f"{who} is waiting for {', '.join(str(d) for d in machine.missing)}"
        if machine.state == "restarting":
            return f"{who} is restarting" + (f" after a crash ({crash.error})" if crash else "")
        if machine.state == "failed":
            s = self.settings
            return (
                f"{who} failed: it crashed more than {s.max_restarts} times within "
                f"{s.restart_window:g} s" + (f" (last: {crash.error})" if crash else "")
            )
        return f"{who} is {machine.state}"

    def _publish(self) -> None:
        if self._dirty and not self._closed:
            self._dirty = False
            self._host.republish()
