"""Runs service handlers within their limits: admission, deadlines, the worker pool, streams.

Knows nothing of sockets: the node hands it calls (from peers or from itself)
and sends what it returns. Coroutine handlers run on the loop and are cancelled
when their deadline passes; sync handlers run on a bounded thread pool and,
since a thread cannot be interrupted, are abandoned instead (result discarded,
slot busy until they return; ``current_call().cancelled`` tells them to stop).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import itertools
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from .._core.stats import MethodStats, ServiceStatistics
from .._errors import (
    CallTimeout,
    MeshError,
    NoProvider,
    Overloaded,
    ProtocolError,
    UnknownMethod,
)
from .._util.deadlines import DeadlineQueue
from .context import CALL_CONTEXT, CallContext
from .services import MethodSpec, ServiceRegistry, ServiceSpec

__all__ = ["Credit", "Dispatcher"]

_END: Final = object()


class Credit:
    """How many stream items the caller can still take (raised by CREDIT messages)."""

    __slots__ = ("_available", "_event", "_limit")

    def __init__(self, initial: int, limit: int | None = None) -> None:
        self._limit = limit
        self._available = initial if limit is None else min(initial, limit)
        self._event = asyncio.Event()

    def add(self, n: int) -> bool:
        """Grant ``n`` more items; False if that went over the limit (capped there)."""
        self._available += n
        self._event.set()
        if self._limit is not None and self._available > self._limit:
            self._available = self._limit
            return False
        return True

    async def take(self) -> None:
        while self._available <= 0:
            self._event.clear()
            await self._event.wait()
        self._available -= 1


class _Limiter:
    """``concurrency`` calls run at once; ``queue`` more wait; the rest are refused.

    One caller (a node id) runs at most ``share`` percent of the slots and waits in at
    most ``share`` percent of the queue, so one caller alone cannot take a service: its
    calls beyond its share of the slots wait while others' run, and beyond its share of
    the queue are refused. A freed slot goes to the first caller in line (callers take
    turns) that is below its share. The caller ``""`` (this node's own calls) has no
    share: it may take every slot.

    Counters and FIFOs of futures: cheaper than asyncio.Semaphore on the hot path,
    where a slot is free and nothing needs to wait.
    """

    __slots__ = (
        "_cap_queue",
        "_cap_run",
        "_concurrency",
        "_queue",
        "_running",
        "_running_by",
        "_waiters",
        "_waiting",
    )

    def __init__(self, concurrency: int, queue: int, share: int = 100) -> None:
        self._concurrency = concurrency
        self._queue = queue
        #: What one caller may hold: running slots (at least one) and places in line.
        self._cap_run = max(1, concurrency * share // 100)
        self._cap_queue = max(1, queue * share // 100) if queue else 0
        self._running = 0
        self._running_by: dict[str, int] = {}
        #: Waiters by caller, callers in the order they take turns; and how many wait.
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._waiting = 0

    def refuses(self, caller: str) -> bool:
        """Whether a call of ``caller`` can neither run now nor wait (Overloaded)."""
        if self._can_run(caller):
            return False
        line = self._waiters.get(caller)
        return self._waiting >= self._queue or (
            bool(caller) and (len(line) if line else 0) >= self._cap_queue
        )

    @property
    def full(self) -> bool:
        """Every slot is taken and the queue is full."""
        return self._running >= self._concurrency and self._waiting >= self._queue

    def running_of(self, caller: str) -> int:
        """Slots ``caller`` holds now."""
        return self._running_by.get(caller, 0)

    @property
    def free(self) -> bool:
        """A slot is free and nobody waits for one."""
        return self._running < self._concurrency and not self._waiting

    def _can_run(self, caller: str) -> bool:
        return (
            self._running < self._concurrency
            and (self._running_by.get(caller, 0) < self._cap_run or not caller)
            and caller not in self._waiters
        )

    async def acquire(self, caller: str) -> None:
        if self._can_run(caller):
            self._running += 1
            by = self._running_by
            by[caller] = by.get(caller, 0) + 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line = self._waiters.get(caller)
        if line is None:
            line = self._waiters[caller] = collections.deque()
        line.append(waiter)
        self._waiting += 1
        try:
            await waiter  # _wake() hands a slot over: counted for this caller already
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(caller)  # got the slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # else _wake() dropped it already
                    line.remove(waiter)
                    self._waiting -= 1
                if not line and self._waiters.get(caller) is line:
                    del self._waiters[caller]
            raise

    def release(self, caller: str) -> None:
        self._running -= 1
        by = self._running_by
        left = by[caller] - 1
        if left:
            by[caller] = left
        else:
            del by[caller]
        if self._waiting:
            self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiting callers below their share, taking turns."""
        while self._running < self._concurrency and self._waiting:
            for caller in self._waiters:
                if self._running_by.get(caller, 0) < self._cap_run or not caller:
                    break
            else:
                return  # every caller that waits holds its share
            line = self._waiters[caller]
            waiter = line.popleft()
            self._waiting -= 1
            del self._waiters[caller]
            if line:
                self._waiters[caller] = line  # its turn is over: to the end of the line
            if waiter.done():  # cancelled while it waited: its task removes nothing more
                continue
            self._running += 1
            self._running_by[caller] = self._running_by.get(caller, 0) + 1
            waiter.set_result(None)


class _Deadline:
    """``asyncio.timeout_at`` for the per-call hot path, with the same semantics.

    When ``when`` passes, the task running the block is cancelled; leaving the block
    with that cancellation (and no other cancel request since entering) raises
    TimeoutError. A plain ``with`` and a timer handle: asyncio's Timeout costs two
    coroutines and a ``current_task()`` lookup per call (measured, ~8% of the server).
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_queue", "_task", "pending", "when")

    def __init__(self, when: float | None, queue: DeadlineQueue[_Deadline]) -> None:
        self.when = when
        #: Until the block is left (a queued deadline of a done block is not expired).
        self.pending = True
        self._queue: DeadlineQueue[_Deadline] | None = queue
        self._expired = False
        self._handle: asyncio.Handle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    def expired(self) -> bool:
        """Did the deadline pass while the block ran?"""
        return self._expired

    def __enter__(self) -> Self:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        when = self.when
        queue, self._queue = self._queue, None
        if when is not None:
            if when <= loop.time():
                self._handle = loop.call_soon(self.on_timeout)
            elif queue is not None and queue.add(loop, when, self):
                self._queue = queue  # queued: tell it when done
            else:
                self._handle = loop.call_at(when, self.on_timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pending = False
        if self._queue is not None:
            self._queue.finished()
            self._queue = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        task, self._task = self._task, None  # a done deadline may wait in the queue a while
        if self._expired:
            assert task is not None
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc  # our cancellation, and no one else's

    def on_timeout(self) -> None:
        assert self._task is not None
        self._task.cancel()
        self._expired = True
        self._handle = None


@dataclass(frozen=True, slots=True)
class Worker:
    """One handler running now: the call (``service.method``), who made it, since when
    (wall clock, seconds since the epoch), and ``abandoned`` for a sync handler whose
    caller gave up (deadline or cancel) while its thread still runs it."""

    call: str
    caller: str
    trace_id: str
    since: float
    abandoned: bool = False
    #: The pool thread running it (sync handlers), else "" (a task on the loop).
    thread: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "call": self.call,
            "caller": self.caller,
            "trace_id": self.trace_id,
            "since": self.since,
            "abandoned": self.abandoned,
            "thread": self.thread,
        }

    @classmethod
    def from_json(cls, obj: object) -> Worker:
        if not isinstance(obj, dict):
            raise ProtocolError(f"a worker is a map, got {obj!r:.80}")
        try:
            return cls(
                str(obj["call"]),
                str(obj["caller"]),
                str(obj["trace_id"]),
                float(obj["since"]),
                bool(obj["abandoned"]),
                str(obj["thread"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"a worker: {exc!r:.80}") from None


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What a node's workers do now: the thread pool's ``pool_size`` slots, of which
    ``threads`` are busy (sync handlers, abandoned ones included), and the handler tasks
    on the event loop (coroutines and async streams)."""

    pool_size: int
    threads: tuple[Worker, ...]
    tasks: tuple[Worker, ...]

    @property
    def pool_free(self) -> int:
        return max(0, self.pool_size - len(self.threads))

    def to_json(self) -> dict[str, Any]:
        """``{"pool_size", "pool_busy", "pool_free", "threads": [worker], "tasks": [worker]}``."""
        return {
            "pool_size": self.pool_size,
            "pool_busy": len(self.threads),
            "pool_free": self.pool_free,
            "threads": [w.to_json() for w in self.threads],
            "tasks": [w.to_json() for w in self.tasks],
        }

    @classmethod
    def from_json(cls, obj: object) -> WorkerStatus:
        if not isinstance(obj, dict) or not isinstance(obj.get("pool_size"), int):
            raise ProtocolError(f"a worker status is a map with pool_size, got {obj!r:.80}")
        threads, tasks = obj.get("threads", []), obj.get("tasks", [])
        if not isinstance(threads, list) or not isinstance(tasks, list):
            raise ProtocolError("a worker status lists threads and tasks")
        return cls(
            obj["pool_size"],
            tuple(Worker.from_json(w) for w in threads),
            tuple(Worker.from_json(w) for w in tasks),
        )


class Dispatcher:
    """The handlers of one node's services, run within limits and counted."""

    def __init__(
        self, registry: ServiceRegistry, workers: int, caller_share: int = 100, local: str = ""
    ) -> None:
        self.registry = registry
        #: Percent of a service's slots and queue one caller may hold (Limits.caller_share);
        #: the calls of ``local`` (this node's id) have no share: they may take them all.
        self._caller_share = caller_share
        self._local = local
        self._pool_size = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="mesh-worker"
        )
        # What runs now (for worker_status()): handler tasks on the loop by a key of
        # their own, and pool threads by name (written from the threads themselves).
        self._tasks: dict[int, tuple[CallContext, float]] = {}
        self._threads: dict[str, tuple[CallContext, float]] = {}
        self._task_keys = itertools.count()
        self._limiters: dict[str, _Limiter] = {}
        self._stats: dict[tuple[str, str], MethodStats] = {}
        # resolve()'s answers by target, while the registry stays the same version
        self._resolved: dict[str, MethodSpec] = {}
        self._resolved_version = -1
        #: Sync handlers still running after their caller gave up.
        self._abandoned: set[concurrent.futures.Future[Any]] = set()
        self._deadlines = DeadlineQueue(_Deadline.on_timeout, operator.attrgetter("pending"))

    @property
    def abandoned(self) -> int:
        """Sync handlers still running (and holding a pool slot) after their caller gave up."""
        return len(self._abandoned)

    def resolve(self, target: str) -> MethodSpec:
        """The method ``"service.method"`` names, or NoProvider / UnknownMethod."""
        if self._resolved_version != self.registry.version:
            self._resolved.clear()  # a service came or went
            self._resolved_version = self.registry.version
        spec = self._resolved.get(target)
        if spec is not None:
            return spec
        service, method = self.registry.lookup(target)
        if service is None:
            raise NoProvider(
                f"no provider of {target.rpartition('.')[0]!r}",
                service=target.rpartition(".")[0],
                method=target.rpartition(".")[2],
            )
        if method is None:
            name = target.rpartition(".")[2]
            raise UnknownMethod(
                f"service {service.name!r} has no method {name!r}; "
                f"it has: {', '.join(sorted(service.methods))}",
                service=service.name,
                method=name,
            )
        self._resolved[target] = method  # only names of methods: as many as they are
        return method

    async def call(
        self, spec: MethodSpec, context: CallContext, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        """Run a unary handler and return its result (or raise what it raised)."""
        return await self._accounted(spec, context, lambda: self._run(spec, context, args, kwargs))

    def can_call_now(self, spec: MethodSpec, context: CallContext) -> bool:
        """Whether :meth:`call_now` may run this call: its handler is inline
        (``spec.inline``), its service has a free slot that nobody waits for, and its
        deadline has not passed. Otherwise :meth:`call` runs it, in a task."""
        if not spec.inline:
            return False
        limiter = self._limiters.get(spec.service)
        if limiter is None:
            service = self.registry.get(spec.service)
            if service is None:
                return False
            limiter = self._limiter(service)
        return limiter.free and (context.deadline is None or context.deadline > time.monotonic())

    def call_now(
        self, spec: MethodSpec, context: CallContext, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        """Run an inline handler to its end, here and now (no task: it cannot suspend,
        so no deadline can pass and no cancel can come while it runs), counted as
        :meth:`call` counts. Only where :meth:`can_call_now` says so."""
        stats = self._method_stats(spec)
        started = time.monotonic()
        stats.started(started)
        error: str | None = None
        token = CALL_CONTEXT.set(context)
        try:
            coroutine = spec.handler(*args, **kwargs)
            try:
                coroutine.send(None)
            except StopIteration as done:
                return done.value
            coroutine.close()  # cannot happen: never_suspends() read its code
            raise RuntimeError(f"{spec.target}: an inline handler suspended")
        except asyncio.CancelledError:
            context.cancel()
            raise
        except BaseException as exc:
            error = _error_text(exc)
            raise
        finally:
            CALL_CONTEXT.reset(token)
            now = time.monotonic()
            stats.finished(now, now - started, error)

    async def stream(
        self,
        spec: MethodSpec,
        context: CallContext,
        args: Any,
        kwargs: dict[str, Any],
        credit: Credit,
        emit: Callable[[Any], None],
    ) -> None:
        """Run a stream handler, calling ``emit(item)`` as credit allows."""
        await self._accounted(
            spec, context, lambda: self._run_stream(spec, context, args, kwargs, credit, emit)
        )

    def worker_status(self) -> WorkerStatus:
        """What the pool threads and the handler tasks run now (a snapshot)."""

        def worker(context: CallContext, since: float, thread: str = "") -> Worker:
            return Worker(
                f"{context.service}.{context.method}",
                context.caller,
                context.trace_id,
                since,
                abandoned=bool(thread) and context.cancelled,
                thread=thread,
            )

        threads = self._threads.copy()  # written by the threads: copy first (atomic)
        return WorkerStatus(
            self._pool_size,
            tuple(worker(c, t, name) for name, (c, t) in sorted(threads.items())),
            tuple(worker(c, t) for c, t in self._tasks.values()),
        )

    def forget(self, service: str) -> None:
        """Drop the limiter and counters of a removed service (a new one starts afresh)."""
        self._limiters.pop(service, None)
        for key in [k for k in self._stats if k[0] == service]:
            del self._stats[key]

    def statistics(self) -> dict[str, ServiceStatistics]:
        """Per-service snapshots, including services that were never called."""
        result = {}
        for service in self.registry:
            methods = {
                name: self._method_stats(spec).snapshot() for name, spec in service.methods.items()
            }
            result[service.name] = ServiceStatistics(service.name, service.version, methods)
        return result

    async def aclose(self) -> None:
        """Stop the pool without waiting for abandoned sync handlers."""
        self._deadlines.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # internals

    def _method_stats(self, spec: MethodSpec) -> MethodStats:
        key = (spec.service, spec.name)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = MethodStats()
        return stats

    def _limiter(self, service: ServiceSpec) -> _Limiter:
        limiter = self._limiters.get(service.name)
        if limiter is None:
            limiter = self._limiters[service.name] = _Limiter(
                service.concurrency, service.queue, self._caller_share
            )
        return limiter

    async def _accounted(
        self, spec: MethodSpec, context: CallContext, run: Callable[[], Any]
    ) -> Any:
        service = self.registry.get(spec.service)
        if service is None:
            raise NoProvider(f"no provider of {spec.service!r}", service=spec.service)
        limiter = self._limiter(service)
        stats = self._method_stats(spec)
        started = time.monotonic()
        caller = context.caller
        if caller == self._local:
            caller = ""
        if limiter.refuses(caller):
            stats.rejected(started, "overloaded")
            raise Overloaded(
                f"{spec.target}: {service.concurrency} calls running and {service.queue} "
                "waiting; try again later"
                if limiter.full
                else f"{spec.target}: this caller runs {limiter.running_of(caller)} calls "
                "and has its share of the queue waiting (limits.caller_share); "
                "try again later",
                service=spec.service,
                method=spec.name,
                call_id=context.call_id,
            )
        stats.started(started)
        error: str | None = None
        timeout = _Deadline(context.deadline, self._deadlines)
        try:
            with timeout:
                await limiter.acquire(caller)
                try:
                    return await run()
                finally:
                    limiter.release(caller)
        except TimeoutError as exc:
            if not timeout.expired():
                error = _error_text(exc)
                raise
            context.cancel()
            raise CallTimeout(
                f"{spec.target}: deadline passed",
                service=spec.service,
                method=spec.name,
                call_id=context.call_id,
            ) from None
        except asyncio.CancelledError:
            context.cancel()  # the caller gave up (or the node stops): not the method's error
            raise
        except BaseException as exc:
            error = _error_text(exc)
            raise
        finally:
            now = time.monotonic()
            stats.finished(now, now - started, error=error, timeout=timeout.expired())

    async def _run(
        self, spec: MethodSpec, context: CallContext, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        if spec.kind == "coroutine":
            token = CALL_CONTEXT.set(context)
            key = next(self._task_keys)
            self._tasks[key] = (context, time.time())
            try:
                return await spec.handler(*args, **kwargs)
            finally:
                del self._tasks[key]
                CALL_CONTEXT.reset(token)
        return await self._in_pool(context, functools.partial(spec.handler, *args, **kwargs))

    async def _in_pool(self, context: CallContext, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker pool with ``current_call()`` set; abandon it if cancelled."""
        ctx = contextvars.copy_context()
        ctx.run(CALL_CONTEXT.set, context)
        threads = self._threads

        def job() -> Any:
            name = threading.current_thread().name
            threads[name] = (context, time.time())
            try:
                return ctx.run(fn)
            finally:
                del threads[name]

        try:
            work = self._pool.submit(job)
        except RuntimeError:  # the pool is shut down: the node is closing
            raise MeshError("node is closing") from None
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            context.cancel()
            if not work.done():  # running in a thread: it cannot be stopped, only abandoned
                self._abandoned.add(work)
                loop = asyncio.get_running_loop()
                work.add_done_callback(
                    lambda f: loop.call_soon_threadsafe(self._abandoned.discard, f)
                )
            raise

    async def _run_stream(
        self,
        spec: MethodSpec,
        context: CallContext,
        args: Any,
        kwargs: dict[str, Any],
        credit: Credit,
        emit: Callable[[Any], None],
    ) -> None:
        if spec.kind == "async_stream":
            token = CALL_CONTEXT.set(context)
            key = next(self._task_keys)
            self._tasks[key] = (context, time.time())
            items = spec.handler(*args, **kwargs)
            try:
                async for item in items:
                    await credit.take()
                    emit(item)
            finally:
                del self._tasks[key]
                await items.aclose()
                CALL_CONTEXT.reset(token)
            return
        generator = spec.handler(*args, **kwargs)  # creating it runs none of its code
        try:
            while True:
                item = await self._in_pool(context, functools.partial(next, generator, _END))
                if item is _END:
                    return
                await credit.take()
                emit(item)
        finally:
            # Close it on the pool too: its finally blocks may block. If a next() is still
            # running (abandoned), closing must wait for it, so chain on the pool's queue.
            with contextlib.suppress(RuntimeError):  # the pool is already shut down
                self._pool.submit(_close_quietly, generator)


def _error_text(exc: BaseException) -> str:
    """A handler's error as the statistics keep it (``last_error``)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError"
    return f"{type(exc).__name__}: {exc}"


def _close_quietly(generator: Any) -> None:
    with contextlib.suppress(ValueError):  # still running in another worker: ends with it
        generator.close()
