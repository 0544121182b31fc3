"""Supervision and dependencies of services, the pure part: one state machine per service.

No sockets, no asyncio, no clock: the runtime (mesh/_node/lifecycle.py) passes ``now``
(monotonic seconds) in, tells each :class:`Supervised` what happened (its ``start()``
returned, its ``run()`` raised, the mesh changed) and carries out the actions it gets
back (:class:`Start`, :class:`Stop`, :class:`Lost`), in dependency order.

A service is supervised when it has lifecycle hooks (``async def start/run/stop``) or
dependencies (``@service(..., depends_on=[...])``); others are simply ``up``. States::

    stopped     not started: the node has not started yet, or it stopped the service
    waiting     a dependency has no provider that takes calls: not started, not offered
    starting    start() runs (Start was asked for)
    up          started, run() going (if it has one), every dependency there: offered
    degraded    started, but a dependency lost its last provider: on_dependency_lost(name)
                was called; still offered (its methods answer, and may fail on their own)
    restarting  stopped after a crash (or to restart once its dependencies are back);
                started again at ``due``, if its dependencies are there then
    failed      crashed more than ``max_restarts`` times within ``restart_window`` s:
                stopped for good, not offered

Transitions (``present``: every dependency has a provider that takes calls)::

    stopped    --begin--------------> starting (Start) | waiting
    waiting    --present------------> starting (Start)
    starting   --started------------> up (the runtime then runs run())
    starting   --crashed------------> restarting (due after the backoff) | failed
    up         --a dependency lost--> degraded (Lost per dependency)
    degraded   --another lost-------> degraded (Lost)
    degraded   --present again------> restarting (Stop; due now, no backoff)
    up/degraded--crashed------------> restarting (Stop; due after the backoff) | failed (Stop)
    restarting --due, present-------> starting (Start; restarts + 1)
    restarting --due, not present---> waiting (restarts + 1 when it starts)
    any        --stop---------------> stopped (Stop if started)

The backoff after a crash is ``backoff_initial * 2 ** (crashes in the window - 1)``, at
most ``backoff_max``: it grows while crashes come fast and falls back as they age out.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from .._config import SupervisionSettings

__all__ = [
    "OFFERED",
    "Crash",
    "Dependency",
    "Lost",
    "ServiceStatus",
    "Start",
    "Stop",
    "Supervised",
    "dependency_order",
    "find_cycle",
]

#: States in which a service takes calls (and counts as a provider of a dependency).
OFFERED: Final = frozenset({"up", "degraded"})

_NAME: Final = r"[A-Za-z_][A-Za-z0-9_-]{0,62}"
_DEPENDENCY: Final = re.compile(rf"({_NAME})(?:@(\d+(?:\.\d+){{0,2}}))?")
#: Longest error text kept of a crash (the listing carries it to every node).
ERROR_TEXT: Final = 200


@dataclass(frozen=True, slots=True)
class Dependency:
    """One entry of ``depends_on``: a service name, optionally with a version
    constraint as calls take them (``"cache@2"``: any 2.x.y)."""

    service: str
    constraint: str = ""

    @classmethod
    def parse(cls, text: object) -> Dependency:
        """``"db"`` or ``"cache@2"``; ``ValueError`` for anything else."""
        match = _DEPENDENCY.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"a dependency is 'service' or 'service@VERSION' (VERSION: 1, 1.2 or 1.2.3), "
                f"got {text!r}"
            )
        return cls(match[1], match[2] or "")

    def __str__(self) -> str:
        return f"{self.service}@{self.constraint}" if self.constraint else self.service


@dataclass(frozen=True, slots=True)
class Crash:
    """The last crash of a service: when (the wall clock of its node) and the error
    (``"ValueError: boom"``, at most 200 characters)."""

    time: float
    error: str

    @classmethod
    def of(cls, exc: BaseException, time: float) -> Crash:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if len(text) > ERROR_TEXT:
            text = text[: ERROR_TEXT - 3] + "..."
        return cls(time, text)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What a node lists of a supervised service: its state, how often it was started
    again, and its last crash."""

    state: str = "up"
    restarts: int = 0
    last_crash: Crash | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """Call the service's ``start()``, then report :meth:`Supervised.started` (and run
    its ``run()``) or :meth:`Supervised.crashed`."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Cancel the service's ``run()`` and call its ``stop()``."""


@dataclass(frozen=True, slots=True)
class Lost:
    """Call the service's ``on_dependency_lost(dependency.service)``."""

    dependency: Dependency


Action = Start | Stop | Lost
Present = Callable[[Dependency], bool]


class Supervised:
    """The state of one supervised service, and the decisions about it.

    Each method takes what happened and returns the actions the runtime must carry
    out, in order. When ``restarts`` goes up the service is being started again (the
    runtime announces ``$mesh.service.restarted``)."""

    def __init__(
        self, name: str, depends_on: Iterable[Dependency], settings: SupervisionSettings
    ) -> None:
        self.name = name
        self.depends_on: tuple[Dependency, ...] = tuple(depends_on)
        self.settings = settings
        self.state = "stopped"
        #: Times it was started again (after a crash, or when a dependency came back).
        self.restarts = 0
        self.last_crash: Crash | None = None
        #: Dependencies without a provider at the last look.
        self.missing: tuple[Dependency, ...] = ()
        #: When a restart is due (``restarting``), else None.
        self.due: float | None = None
        #: start() returned and stop() was not asked for since.
        self.running = False
        self._crashes: collections.deque[float] = collections.deque()
        self._again = False  # the next Start is a restart
        self._lost: set[Dependency] = set()  # dependencies told lost since it was up

    @property
    def status(self) -> ServiceStatus:
        return ServiceStatus(self.state, self.restarts, self.last_crash)

    @property
    def offered(self) -> bool:
        """Whether it takes calls (``up`` or ``degraded``)."""
        return self.state in OFFERED

    def _look(self, present: Present) -> tuple[Dependency, ...]:
        self.missing = tuple(d for d in self.depends_on if not present(d))
        return self.missing

    def _start(self) -> list[Action]:
        self.state = "starting"
        self.due = None
        if self._again:
            self._again = False
            self.restarts += 1
        return [Start()]

    def begin(self, present: Present, now: float) -> list[Action]:
        """The node starts the service (when it starts, or when it is added later)."""
        if self.state != "stopped":
            return []
        if self._look(present):
            self.state = "waiting"
            return []
        return self._start()

    def started(self, now: float) -> list[Action]:
        """``start()`` returned: up (the runtime runs ``run()``)."""
        if self.state != "starting":
            return []
        self.state = "up"
        self.running = True
        self._lost = set()
        return []

    def crashed(self, crash: Crash, now: float) -> list[Action]:
        """``start()`` or ``run()`` raised (``crash``): restart after the backoff, or give
        up after too many crashes within the window."""
        if self.state not in ("starting", "up", "degraded"):
            return []
        self.last_crash = crash
        window = self.settings.restart_window
        self._crashes.append(now)
        while self._crashes and self._crashes[0] <= now - window:
            self._crashes.popleft()
        actions: list[Action] = []
        if self.running:  # start() had returned: stop() cleans up
            self.running = False
            actions.append(Stop())
        if len(self._crashes) > self.settings.max_restarts:
            self.state = "failed"
            self.due = None
            return actions
        self.state = "restarting"
        self.due = now + self.backoff()
        self._again = True
        return actions

    def backoff(self) -> float:
        """The wait before the next restart: doubling with each crash in the window."""
        s = self.settings
        crashes = max(1, len(self._crashes))
        return min(s.backoff_max, s.backoff_initial * 2.0 ** min(crashes - 1, 60))

    def dependencies(self, present: Present, now: float) -> list[Action]:
        """The mesh changed: look at the dependencies again."""
        missing = self._look(present)
        if self.state == "waiting" and not missing:
            return self._start()
        if self.state in ("up", "degraded") and missing:
            self.state = "degraded"
            new = [d for d in missing if d not in self._lost]
            self._lost = set(missing)
            return [Lost(d) for d in new]
        if self.state == "degraded":  # every dependency is back: restart, no backoff
            self.state = "restarting"
            self.due = now
            self._again = True
            self.running = False
            return [Stop()]
        return []

    def tick(self, present: Present, now: float) -> list[Action]:
        """Time passed: start it again if a restart is due (and its dependencies are
        there; else it waits for them)."""
        if self.state != "restarting" or self.due is None or now < self.due:
            return []
        if self._look(present):
            self.state = "waiting"
            self.due = None
            return []
        return self._start()

    def stop(self) -> list[Action]:
        """The node stops the service (it is removed, or the node closes)."""
        self.state = "stopped"
        self.due = None
        self._again = False
        if self.running:
            self.running = False
            return [Stop()]
        return []


def find_cycle(graph: Mapping[str, Iterable[str]], start: str) -> list[str] | None:
    """A dependency cycle through ``start`` in ``graph`` (service -> services it depends
    on; names not in ``graph`` end a path), as ``[start, ..., start]``; None if there is
    none. The shortest such cycle, found breadth first, so the error is stable."""
    paths: collections.deque[list[str]] = collections.deque([[start]])
    seen = {start}
    while paths:
        path = paths.popleft()
        for nxt in sorted(set(graph.get(path[-1], ()))):
            if nxt == start:
                return [*path, start]
            if nxt in graph and nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return None


def dependency_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """The services of ``graph`` with each after the services it depends on (by name
    where the order is free); what is left in a cycle comes last, by name."""
    order: list[str] = []
    placed: set[str] = set()
    pending = sorted(graph)
    while pending:
        ready = [
            s for s in pending if all(d in placed or d not in graph or d == s for d in graph[s])
        ]
        if not ready:  # a cycle (refused at registration, but do not hang on one)
            ready = pending[:1]
        for service in ready:
            order.append(service)
            placed.add(service)
        pending = [s for s in pending if s not in placed]
    return order
