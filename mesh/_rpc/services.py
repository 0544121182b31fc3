"""Services from plain Python: ``@service``/``@method``/``@stream`` metadata and the registry.

Decorators only attach metadata; a decorated method stays a plain method that
tests can call directly. The registry turns registered objects into
:class:`MethodSpec` entries (what to call, how: coroutine, sync, stream) and
answers introspection (signatures, docstrings, versions). It runs nothing itself.
"""

from __future__ import annotations

import dis
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, overload

from .._core.supervision import Dependency, find_cycle
from .._errors import MeshError

__all__ = [
    "EventHandlerSpec",
    "Hooks",
    "MethodSpec",
    "ServiceRegistry",
    "ServiceSpec",
    "method",
    "on_event",
    "service",
    "stream",
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
_SERVICE_ATTR: Final = "__mesh_service__"
_METHOD_ATTR: Final = "__mesh_method__"
_EVENT_ATTR: Final = "__mesh_event__"
#: Lifecycle hooks a service class may define (``async def``, no arguments but self).
_HOOKS: Final = ("start", "run", "stop")
#: Most dependencies of one service.
MAX_DEPENDENCIES: Final = 64

#: How a handler runs: on the loop (coroutine, async generator) or in the pool.
HandlerKind = Literal["coroutine", "sync", "async_stream", "sync_stream"]

#: Default number of calls of one service that run at once, and that may wait.
DEFAULT_CONCURRENCY: Final = 100
DEFAULT_QUEUE: Final = 1000


@dataclass(frozen=True, slots=True)
class _ServiceMeta:
    name: str
    version: str
    concurrency: int
    queue: int
    depends_on: tuple[Dependency, ...] = ()


@dataclass(frozen=True, slots=True)
class _MethodMeta:
    name: str | None
    idempotent: bool
    stream: bool


def service(
    name: str,
    version: str = "0.0.0",
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    queue: int = DEFAULT_QUEUE,
    depends_on: Iterable[str] = (),
) -> Callable[[C], C]:
    """Mark a class as a service called ``name``.

    ``concurrency`` calls run at once; up to ``queue`` more wait for a slot, and
    calls beyond that fail at once with the retryable :class:`Overloaded`.
    ``depends_on`` names services (``"db"``, or ``"cache@2"`` for any 2.x.y) that must
    have a provider in the mesh before this one is offered (docs/guide-service-bus.md).
    """
    _check_name("service name", name)
    if type(concurrency) is not int or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
    if type(queue) is not int or queue < 0:
        raise ValueError(f"queue must be a non-negative integer, got {queue!r}")
    if isinstance(depends_on, str):
        raise TypeError(f"depends_on takes a list of service names, got {depends_on!r}")
    dependencies = tuple(Dependency.parse(d) for d in depends_on)
    if len(dependencies) > MAX_DEPENDENCIES:
        raise ValueError(f"a service depends on at most {MAX_DEPENDENCIES} services")
    names = [d.service for d in dependencies]
    if len(set(names)) != len(names):
        raise ValueError(f"depends_on names a service twice: {[str(d) for d in dependencies]}")

    def mark(cls: C) -> C:
        if not isinstance(cls, type):
            raise TypeError("@service decorates a class; register functions with add_service")
        meta = _ServiceMeta(name, str(version), concurrency, queue, dependencies)
        setattr(cls, _SERVICE_ATTR, meta)
        return cls

    return mark


@overload
def method(fn: F, /) -> F: ...
@overload
def method(*, idempotent: bool = False, name: str | None = None) -> Callable[[F], F]: ...
def method(
    fn: F | None = None, /, *, idempotent: bool = False, name: str | None = None
) -> F | Callable[[F], F]:
    """Expose a method of a service. ``idempotent=True`` marks it safe to retry."""

    def mark(f: F) -> F:
        if name is not None:
            _check_name("method name", name)
        setattr(f, _METHOD_ATTR, _MethodMeta(name, idempotent, stream=False))
        return f

    return mark(fn) if fn is not None else mark


def stream(fn: F) -> F:
    """Expose a generator or async generator method as a stream of items."""
    if not (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
        raise TypeError(f"@stream needs a generator function; {fn.__qualname__} is not one")
    setattr(fn, _METHOD_ATTR, _MethodMeta(None, idempotent=False, stream=True))
    return fn


@dataclass(frozen=True, slots=True)
class _EventMeta:
    prefix: str
    group: str | None
    history: int


def on_event(prefix: str, *, group: str | None = None, history: int = 0) -> Callable[[F], F]:
    """Run this method of a service for each event whose topic starts with ``prefix``
    (as :meth:`mesh.Node.subscribe` takes them), one at a time, while the service is
    offered. It receives the :class:`mesh.Event`; an exception is logged and counted,
    and the next event still comes."""
    if not isinstance(prefix, str):
        raise TypeError(f"@on_event takes a topic prefix (str), got {prefix!r}")

    def mark(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"@on_event handler {fn.__qualname__} cannot be a generator")
        setattr(fn, _EVENT_ATTR, _EventMeta(prefix, group, history))
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class EventHandlerSpec:
    """One ``@on_event`` handler of a service."""

    service: str
    name: str
    prefix: str
    group: str | None
    history: int
    handler: Callable[..., Any]
    is_coroutine: bool


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One callable method: what to call and how."""

    service: str
    name: str
    handler: Callable[..., Any]
    kind: HandlerKind
    idempotent: bool
    signature: str
    doc: str
    #: An ``async def`` whose body never awaits: it runs to its end at its first step,
    #: so the node runs it inline, without a task (see :func:`never_suspends`).
    inline: bool = False

    @property
    def target(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def is_stream(self) -> bool:
        return self.kind in ("async_stream", "sync_stream")

    def describe(self) -> dict[str, Any]:
        """Introspection data, as it travels in listings."""
        return {
            "name": self.name,
            "signature": self.signature,
            "doc": self.doc,
            "idempotent": self.idempotent,
            "stream": self.is_stream,
        }


@dataclass(frozen=True, slots=True)
class Hooks:
    """The lifecycle hooks of a service instance (bound methods; None where it has
    none): ``async def start(self)``, ``run(self)``, ``stop(self)``, and
    ``on_dependency_lost(self, name)`` (``async def`` or a plain ``def``)."""

    start: Callable[[], Any] | None = None
    run: Callable[[], Any] | None = None
    stop: Callable[[], Any] | None = None
    on_dependency_lost: Callable[[str], Any] | None = None

    def __bool__(self) -> bool:
        return any((self.start, self.run, self.stop, self.on_dependency_lost))


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A registered service: its name, version, limits and methods; the services it
    depends on and its lifecycle hooks."""

    name: str
    version: str
    concurrency: int
    queue: int
    methods: Mapping[str, MethodSpec] = field(default_factory=dict)
    doc: str = ""
    events: tuple[EventHandlerSpec, ...] = ()
    depends_on: tuple[Dependency, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)

    @property
    def supervised(self) -> bool:
        """Whether the node supervises it: it has lifecycle hooks or dependencies."""
        return bool(self.depends_on) or bool(self.hooks)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "doc": self.doc,
            "methods": {name: m.describe() for name, m in sorted(self.methods.items())},
        }


class ServiceRegistry:
    """The services of one node, by name."""

    def __init__(self) -> None:
        self._services: dict[str, ServiceSpec] = {}
        #: Goes up with every service added or removed (for caches of lookups).
        self.version = 0

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def __iter__(self) -> Iterator[ServiceSpec]:
        return iter(list(self._services.values()))

    def __len__(self) -> int:
        return len(self._services)

    def get(self, name: str) -> ServiceSpec | None:
        return self._services.get(name)

    def versions(self) -> dict[str, str]:
        """Service name -> version: the summary sent in HELLO and WELCOME."""
        return {s.name: s.version for s in self._services.values()}

    def add(self, obj: object, name: str | None = None, version: str | None = None) -> ServiceSpec:
        """Register a ``@service`` instance, or a function as ``name="service.method"``."""
        is_service = isinstance(getattr(type(obj), _SERVICE_ATTR, None), _ServiceMeta)
        if callable(obj) and not is_service and not isinstance(obj, type):
            return self._add_function(obj, name, version)
        if isinstance(obj, type):
            raise MeshError(f"register an instance of {obj.__name__}, not the class itself")
        meta = getattr(type(obj), _SERVICE_ATTR, None)
        if not isinstance(meta, _ServiceMeta):
            raise MeshError(
                f"{type(obj).__name__} is not a service: decorate the class with @service(...)"
                " or register a function with add_service(fn, name='service.method')"
            )
        service_name = name or meta.name
        _check_name("service name", service_name)
        if service_name in self._services:
            raise MeshError(f"service {service_name!r} is already registered on this node")
        methods = {}
        events = []
        decorated = set()
        for attr in dir(type(obj)):
            fn = getattr(type(obj), attr, None)
            emeta = getattr(fn, _EVENT_ATTR, None)
            mmeta = getattr(fn, _METHOD_ATTR, None)
            if isinstance(emeta, _EventMeta) or isinstance(mmeta, _MethodMeta):
                decorated.add(attr)
            if isinstance(emeta, _EventMeta):
                bound = getattr(obj, attr)
                events.append(
                    EventHandlerSpec(
                        service_name,
                        attr,
                        emeta.prefix,
                        emeta.group,
                        emeta.history,
                        bound,
                        inspect.iscoroutinefunction(inspect.unwrap(bound)),
                    )
                )
            if isinstance(mmeta, _MethodMeta):
                method_spec = _method_spec(service_name, getattr(obj, attr), mmeta, attr)
                if method_spec.name in methods:
                    raise MeshError(f"{service_name}: two methods are named {method_spec.name!r}")
                methods[method_spec.name] = method_spec
        hooks = _hooks(obj, decorated)
        if not methods and not events and not hooks.run:
            raise MeshError(
                f"service {service_name!r} has no methods: decorate them with @method, @stream"
                " or @on_event (or give it an async def run(self))"
            )
        spec = ServiceSpec(
            name=service_name,
            version=version or meta.version,
            concurrency=meta.concurrency,
            queue=meta.queue,
            methods=MappingProxyType(methods),
            doc=inspect.getdoc(obj) or "",
            events=tuple(events),
            depends_on=meta.depends_on,
            hooks=hooks,
        )
        self._check_cycle(spec)
        self._services[service_name] = spec
        self.version += 1
        return spec

    def _check_cycle(self, spec: ServiceSpec) -> None:
        """Refuse ``spec`` if its dependencies close a cycle among this node's services
        (they would wait for each other for ever)."""
        graph = {**self.dependency_graph(), spec.name: [d.service for d in spec.depends_on]}
        cycle = find_cycle(graph, spec.name)
        if cycle is not None:
            raise MeshError(
                f"service {spec.name!r} would close a dependency cycle: {' -> '.join(cycle)}"
                " (each would wait for the next for ever)"
            )

    def dependency_graph(self) -> dict[str, list[str]]:
        """Service name -> names of the services it depends on (on any node)."""
        return {s.name: [d.service for d in s.depends_on] for s in self._services.values()}

    def _add_function(
        self, fn: Callable[..., Any], name: str | None, version: str | None
    ) -> ServiceSpec:
        if not name or "." not in name:
            raise MeshError(
                f"name the function as 'service.method', e.g. add_service({_qualname(fn)}, "
                "name='echo.say')"
            )
        service_name, _, method_name = name.rpartition(".")
        _check_name("service name", service_name)
        _check_name("method name", method_name)
        existing = self._services.get(service_name)
        if existing is not None and method_name in existing.methods:
            raise MeshError(f"{name} is already registered on this node")
        if existing is not None and version is not None and version != existing.version:
            raise MeshError(
                f"service {service_name!r} has version {existing.version}, not {version}"
            )
        mmeta = getattr(fn, _METHOD_ATTR, None)
        if not isinstance(mmeta, _MethodMeta):
            stream_fn = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
            mmeta = _MethodMeta(None, idempotent=False, stream=stream_fn)
        spec = _method_spec(service_name, fn, mmeta, method_name, force_name=True)
        methods = dict(existing.methods) if existing else {}
        methods[method_name] = spec
        self._services[service_name] = ServiceSpec(
            name=service_name,
            version=existing.version if existing else (version or "0.0.0"),
            concurrency=existing.concurrency if existing else DEFAULT_CONCURRENCY,
            queue=existing.queue if existing else DEFAULT_QUEUE,
            methods=MappingProxyType(methods),
            depends_on=existing.depends_on if existing else (),
            hooks=existing.hooks if existing else Hooks(),
        )
        self.version += 1
        return self._services[service_name]

    def remove(self, name: str) -> None:
        """Stop offering service ``name``."""
        if self._services.pop(name, None) is None:
            raise MeshError(f"no service {name!r} on this node")
        self.version += 1

    def lookup(self, target: str) -> tuple[ServiceSpec | None, MethodSpec | None]:
        """The service and method that ``"service.method"`` names (None where unknown)."""
        service_name, _, method_name = target.rpartition(".")
        spec = self._services.get(service_name)
        if spec is None:
            return None, None
        return spec, spec.methods.get(method_name)


def _method_spec(
    service_name: str,
    fn: Callable[..., Any],
    meta: _MethodMeta,
    attr: str,
    force_name: bool = False,
) -> MethodSpec:
    name = attr if force_name else (meta.name or attr)
    _check_name("method name", name)
    target = inspect.unwrap(fn)
    if meta.stream:
        kind: HandlerKind = "async_stream" if inspect.isasyncgenfunction(target) else "sync_stream"
    else:
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise MeshError(f"{service_name}.{name} is a generator: decorate it with @stream")
        kind = "coroutine" if inspect.iscoroutinefunction(target) else "sync"
    try:
        signature = str(inspect.signature(fn))
    except (TypeError, ValueError):
        signature = "(...)"
    return MethodSpec(
        service=service_name,
        name=name,
        handler=fn,
        kind=kind,
        idempotent=meta.idempotent,
        signature=signature,
        doc=inspect.getdoc(fn) or "",
        inline=kind == "coroutine" and never_suspends(fn),
    )


def never_suspends(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is an ``async def`` that cannot suspend: no ``await``, ``async
    for`` or ``async with`` in its own body (each compiles to a YIELD_VALUE; a coroutine
    suspends nowhere else). A wrapper is judged by its own code, not what it wraps."""
    code = getattr(fn, "__code__", None)
    if code is None or not code.co_flags & inspect.CO_COROUTINE:
        return False
    return all(op.opname != "YIELD_VALUE" for op in dis.get_instructions(code))


def _hooks(obj: object, taken: set[str]) -> Hooks:
    """The lifecycle hooks ``obj`` defines: ``start``, ``run`` and ``stop`` when they are
    ``async def`` and take no argument (a method of that name that is not, such as a
    plain ``def start(self, node)``, is no hook), and ``on_dependency_lost``. A name
    exposed with @method (or handling events) is a method, not a hook."""
    found: dict[str, Callable[..., Any]] = {}
    for name in (*_HOOKS, "on_dependency_lost"):
        if name in taken:
            continue
        bound = getattr(obj, name, None)
        if not callable(bound) or isinstance(getattr(type(obj), name, None), type):
            continue
        target = inspect.unwrap(bound)
        arguments = () if name in _HOOKS else ("x",)
        try:
            inspect.signature(bound).bind(*arguments)
        except (TypeError, ValueError):
            continue
        if name in _HOOKS and not inspect.iscoroutinefunction(target):
            continue
        found[name] = bound
    return Hooks(**found)


def _check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} must be 1-63 letters, digits, '_' or '-' (not starting with a digit), "
            f"got {name!r}"
        )


def _qualname(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))
