"""Durable queues, the runtime a node owns: its outbox (jobs it sent, until a provider
reports them done or dead), its inbox (jobs it runs, by their retry schedules), its dead
letters, and the ``$mesh.job.*`` system calls (docs/protocol.md, section 11).

Decisions and guarantees: docs/architecture.md, "Durable queues".
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._core.events import JOB_DEAD
from .._core.jobs import MAX_KEY, DedupWindow, Job, check_retries, choose_store, is_last, next_delay
from .._core.listing import parse_target
from .._errors import CallError, ConfigError, MeshError, ProtocolError, Reject, error_to_wire
from .._io.jobstore import (
    JobStore,
    delete,
    forget_seen,
    hand_outbox,
    put_dead,
    put_inbox,
    put_outbox,
    put_seen,
)
from .._rpc.context import CallContext
from .._util.aio import wait_set

if TYPE_CHECKING:
    from .._wire.codec import Call
    from .node import Node

__all__ = ["JOB_DEAD", "JobRunner", "serve_job_call"]

log = logging.getLogger("mesh.jobs")

#: Most jobs one ``$mesh.job.take`` carries.
TAKE_BATCH = 256
#: Seconds closing waits for the runner's cancelled tasks before closing the store.
CLOSE_WAIT = 5.0
#: States a sender settles an outbox job with (the provider finished with it).
SETTLED = frozenset({"done", "dead", "duplicate", "dropped"})


@dataclass(slots=True, eq=False)
class _Out:
    """A job of the outbox: handed off to ``node`` (store ``store``) or not yet."""

    job: Job
    store: str | None = None
    node: str | None = None
    lease_until: float = 0.0
    sending: bool = False
    handed: asyncio.Event = field(default_factory=asyncio.Event)


class JobRunner:
    """The jobs of one node: ``await runner.open()``, then enqueue, serve, ``aclose()``."""

    def __init__(self, node: Node) -> None:
        config = node.config
        if config.jobs_db is None:
            raise ConfigError("jobs_db: this node has no job database (set MESH_JOBS_DB)")
        self._node = node
        self.store = JobStore(config.jobs_db, config.jobs_synchronous)
        self.store_id = ""
        self.lease = config.jobs_lease
        self.concurrency = config.jobs_concurrency
        self._rng = random.Random(secrets.randbits(64))
        self._outbox: dict[str, _Out] = {}
        self._out_keys: dict[str, str] = {}
        self._inbox: dict[str, Job] = {}
        self._inbox_keys: dict[str, str] = {}
        self._due: list[tuple[float, str]] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._unclaimed: set[str] = set()
        self._dead: dict[str, Job] = {}
        self._window = DedupWindow(config.jobs_dedup_keys, config.jobs_dedup_window)
        self._refused: dict[str, float] = {}
        self._reports: dict[str, list[list[str]]] = {}
        self._wake_send = asyncio.Event()
        self._wake_run = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        #: Counters: enqueued here, handed off, done and dead here (as provider).
        self.enqueued = 0
        self.handed_off = 0
        self.done = 0
        self.died = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        loaded = await asyncio.to_thread(self.store.open)
        self.store_id = loaded.store_id
        now = time.time()
        for job, store, node in loaded.outbox:
            out = _Out(job, store, node, time.monotonic() + self.lease)
            if node is not None:
                out.handed.set()
            self._outbox[job.id] = out
            if job.key is not None:
                self._out_keys[job.key] = job.id
        for job in loaded.inbox:
            self._hold(job)
            self._unclaimed.add(job.id)
        for job in loaded.dead:
            self._dead[job.id] = job
        for job_id, key, state, at in loaded.seen:
            self._window.add(job_id, key, state, at)
        if gone := self._window.prune(now):
            await self.store.write([forget_seen(gone)])
        loop = asyncio.get_running_loop()
        name = self._node.name
        self._tasks = [
            loop.create_task(self._send_loop(), name=f"{name}: job hand-offs"),
            loop.create_task(self._run_loop(), name=f"{name}: job runs"),
            loop.create_task(self._poll_loop(), name=f"{name}: job leases"),
        ]
        if self._unclaimed:
            self._tasks.append(loop.create_task(self._claim(), name=f"{name}: job claims"))

    async def aclose(self) -> None:
        """Stop running and handing off; jobs in flight stay in the database."""
        self._closing = True
        tasks = [*self._tasks, *self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: closing a node must end even if a task does not (the store is
            # closed regardless; what a task had not written stays as it was).
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            if stuck:
                log.warning(
                    "jobs: %d task(s) still running %.0f s after cancel: %s",
                    len(stuck),
                    CLOSE_WAIT,
                    ", ".join(sorted(t.get_name() for t in stuck)),
                )
        await self.store.aclose()

    # -- the sender's side ------------------------------------------------------------------

    async def enqueue(
        self,
        target: str,
        args: list[Any],
        kwargs: dict[str, Any],
        retries: Iterable[float],
        key: str | None,
    ) -> str:
        parse_target(target)
        schedule = check_retries(retries)
        if key is not None:
            if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
                raise ValueError(
                    f"key: expected text of 1 to {MAX_KEY} characters, got {key!r:.80}"
                )
            if (same := self._out_keys.get(key)) is not None:
                return same  # already in the outbox: the same job
        job = Job(
            secrets.token_hex(16),
            target,
            list(args),
            dict(kwargs),
            key,
            schedule,
            time.time(),
            self._node.id,
            self.store_id,
        )
        # The wire form must encode: fail here, not at every hand-off.
        self._node._codec._packer.pack(job.to_wire())
        await self.store.write([put_outbox(job)])
        self._outbox[job.id] = _Out(job)
        if key is not None:
            self._out_keys[key] = job.id
        self.enqueued += 1
        self._wake_send.set()
        return job.id

    async def wait_handed_off(self, job_id: str, timeout: float | None) -> bool:
        """Wait until a provider stored the job (or it is settled); False if it is not
        in the outbox (unknown, or settled long ago); TimeoutError after ``timeout``
        seconds (:func:`wait_set`, which keeps a cancellation, unlike ``wait_for``)."""
        out = self._outbox.get(job_id)
        if out is None:
            return self._window.state_of(job_id, None, time.time()) is not None
        if not await wait_set(out.handed, timeout):
            raise TimeoutError(f"job {job_id} not handed off within {timeout} s")
        return True

    def member_lost(self, member_id: str) -> None:
        """Membership declared ``member_id`` dead or replaced: what it held goes elsewhere."""
        for out in self._outbox.values():
            if out.node == member_id:
                out.node = out.store = None
                out.handed.clear()
                self._wake_send.set()

    def _candidates(self, service: str) -> list[str]:
        node = self._node
        found = []
        if service in node._services:
            found.append(node.id)
        now = time.monotonic()
        for info in node._providers_of(service):
            if (
                info.status == "alive"
                and info.record is not None
                and info.id != node.id
                and self._refused.get(info.id, 0.0) <= now
            ):
                found.append(info.id)
        return found

    async def _send_loop(self) -> None:
        while True:
            await wait_set(self._wake_send, max(0.05, self.lease / 4))
            self._wake_send.clear()
            batches: dict[str, list[_Out]] = {}
            for out in self._outbox.values():
                if out.node is not None or out.sending:
                    continue
                chosen = choose_store(
                    self._candidates(out.job.service), out.job.key, self._rng, self._node.id
                )
                if chosen is not None:
                    batch = batches.setdefault(chosen, [])
                    if len(batch) < TAKE_BATCH * 4:
                        batch.append(out)
            for provider, outs in batches.items():
                for i in range(0, len(outs), TAKE_BATCH):
                    chunk = outs[i : i + TAKE_BATCH]
                    for out in chunk:
                        out.sending = True
                    self._node._spawn(self._hand(provider, chunk), "job hand-off")

    async def _hand(self, provider: str, outs: list[_Out]) -> None:
        try:
            wires = [out.job.to_wire() for out in outs]
            try:
                answer = await self._ask(provider, "$mesh.job.take", [wires])
                store, states = answer["store"], answer["states"]
                if not isinstance(store, str) or len(states) != len(outs):
                    raise ProtocolError(f"$mesh.job.take: unexpected answer {answer!r:.80}")
            except (MeshError, KeyError, TypeError) as exc:
                log.info("node %s: jobs not handed to %s: %s", self._node.name, provider, exc)
                self._refused[provider] = time.monotonic() + min(1.0, self.lease / 4)
                self._wake_send.set()
                return
            ops = []
            settled = []
            for out, state in zip(outs, states, strict=True):
                if out.job.id not in self._outbox:
                    continue
                if state in ("stored", "held"):
                    out.store, out.node = store, provider
                    out.lease_until = time.monotonic() + self.lease
                    ops.append(hand_outbox(out.job.id, store, provider))
                    self.handed_off += 1
                elif state in SETTLED:
                    settled.append((out.job.id, state))
                else:  # refused: this provider does not offer it (any more)
                    self._refused[provider] = time.monotonic() + min(1.0, self.lease / 4)
                    self._wake_send.set()
            if ops:
                await self.store.write(ops)
            for out in outs:
                if out.node is not None:
                    out.handed.set()
            for job_id, state in settled:
                await self._settle_out(job_id, state)
        finally:
            for out in outs:
                out.sending = False

    async def _settle_out(self, job_id: str, state: str, from_store: str | None = None) -> None:
        """The provider is done with an outbox job (done, dead, a duplicate, dropped)."""
        out = self._outbox.pop(job_id, None)
        if out is None:
            return
        job = out.job
        if job.key is not None and self._out_keys.get(job.key) == job_id:
            del self._out_keys[job.key]
        now = time.time()
        self._window.add(job_id, job.key, state, now)
        await self.store.write([delete("outbox", job_id), put_seen(job_id, job.key, state, now)])
        out.handed.set()
        if state == "dead" and from_store != self.store_id:  # the provider's node says it too
            self._emit_dead(job, "reported dead by its provider")

    async def _poll_loop(self) -> None:
        """Renew the leases of handed-off jobs by asking their providers; what a provider
        no longer holds, or what it held when it stopped answering, goes elsewhere."""
        while True:
            await asyncio.sleep(self.lease / 3)
            by_node: dict[str, list[_Out]] = {}
            for out in self._outbox.values():
                if out.node is not None:
                    by_node.setdefault(out.node, []).append(out)
            if by_node:
                await asyncio.gather(*(self._poll(n, outs) for n, outs in by_node.items()))

    async def _poll(self, node_id: str, outs: list[_Out]) -> None:
        now = time.monotonic()
        try:
            answer = await self._ask(node_id, "$mesh.job.status", [[o.job.id for o in outs]])
            states = answer["jobs"]
            if not isinstance(states, dict):
                raise ProtocolError("$mesh.job.status: jobs is a map")
        except (MeshError, KeyError, TypeError) as exc:
            for out in outs:
                if out.lease_until < now and out.node == node_id:
                    log.info("job %s: lease of %s expired (%s)", out.job.id, node_id, exc)
                    out.node = out.store = None
                    out.handed.clear()
                    self._wake_send.set()
            return
        for out in outs:
            if out.node != node_id:
                continue
            state = states.get(out.job.id, "unknown")
            if state == "held":
                out.lease_until = time.monotonic() + self.lease
            elif state in SETTLED:
                await self._settle_out(out.job.id, state, answer.get("store"))
            else:  # the provider does not hold it (a fresh database?): hand it again
                out.node = out.store = None
                out.handed.clear()
                self._wake_send.set()

    async def _ask(self, node_id: str, method: str, args: list[Any]) -> Any:
        """A ``$mesh.job.*`` call to member ``node_id`` (this node: answered here)."""
        node = self._node
        if node_id == node.id:
            return await self.serve(method, args)
        for info in node._events._host.live_members():
            if info.id == node_id and info.address:
                return await node._events._host.call_member(info, method, args, self.lease / 2)
        raise MeshError(f"member {node_id[:12]} is not a live member")

    # -- the provider's side ----------------------------------------------------------------

    def _hold(self, job: Job) -> None:
        self._inbox[job.id] = job
        if job.key is not None:
            self._inbox_keys[job.key] = job.id
        heapq.heappush(self._due, (job.not_before, job.id))
        self._wake_run.set()

    def _release(self, job: Job) -> None:
        self._inbox.pop(job.id, None)
        self._unclaimed.discard(job.id)
        if job.key is not None and self._inbox_keys.get(job.key) == job.id:
            del self._inbox_keys[job.key]

    def _claimed(self, job_id: str) -> None:
        if job_id in self._unclaimed:
            self._unclaimed.discard(job_id)
            job = self._inbox[job_id]
            heapq.heappush(self._due, (job.not_before, job_id))
            self._wake_run.set()

    def _state(self, job_id: str) -> str:
        if job_id in self._inbox:
            return "held"
        return self._window.state_of(job_id, None, time.time()) or "unknown"

    async def _take(self, wires: list[Any]) -> dict[str, Any]:
        if not isinstance(wires, list):
            raise ProtocolError("$mesh.job.take takes a list of jobs")
        now = time.time()
        states = []
        new: list[Job] = []
        for wire in wires:
            job = Job.from_wire(wire)
            held = self._inbox.get(job.id)
            if held is not None:
                states.append("held")  # the sender handed it again: it is ours to run
                held.sender = job.sender
                self._claimed(job.id)
                continue
            if (state := self._window.state_of(job.id, job.key, now)) is not None:
                states.append(state if state != "done" or job.key is None else "duplicate")
                continue
            if job.key is not None and job.key in self._inbox_keys:
                states.append("duplicate")
                continue
            if job.service not in self._node._services:
                states.append("refused")
                continue
            job.not_before = now
            new.append(job)
            states.append("stored")
        if new:
            await self.store.write([put_inbox(job) for job in new])
            for job in new:
                if job.id not in self._inbox:
                    self._hold(job)
        return {"store": self.store_id, "states": states}

    async def _run_loop(self) -> None:
        while True:
            now = time.time()
            while self._due and len(self._running) < self.concurrency:
                at, job_id = self._due[0]
                if at > now:
                    break
                heapq.heappop(self._due)
                job = self._inbox.get(job_id)
                if job is None or job_id in self._running or job.not_before != at:
                    continue
                if job_id in self._unclaimed:
                    continue  # _claim pushes it again once claimed
                self._running[job_id] = asyncio.get_running_loop().create_task(
                    self._execute(job), name=f"job {job.target}"
                )
            wait = self.lease
            if self._due and len(self._running) < self.concurrency:
                wait = max(0.0, self._due[0][0] - time.time())
            self._wake_run.clear()
            await wait_set(self._wake_run, wait)

    async def _execute(self, job: Job) -> None:
        node = self._node
        try:
            job.attempt += 1
            last = is_last(job.retries, job.attempt)
            service, _, method = job.target.rpartition(".")
            context = CallContext(
                service.partition("@")[0],
                method,
                0,
                job.sender,
                job.id,
                job.attempt,
                time.monotonic() + node.config.timings.call_timeout,
                last_attempt=last,
                job_id=job.id,
            )
            try:
                spec = node._dispatcher.resolve(f"{context.service}.{method}")
                await node._dispatcher.call(spec, context, job.args, job.kwargs)
            except asyncio.CancelledError:
                job.attempt -= 1  # cut off by shutdown: not counted
                raise
            except Exception as exc:
                _, message, kind, _ = error_to_wire(exc)
                job.error = f"{kind}: {message}" if kind else message
                if isinstance(exc, Reject) or last:
                    await self._die(job)
                else:
                    delay = next_delay(job.retries, job.attempt) or 0.0
                    job.not_before = time.time() + delay
                    await self.store.write([put_inbox(job)])
                    heapq.heappush(self._due, (job.not_before, job.id))
                return
            now = time.time()
            await self.store.write(
                [delete("inbox", job.id), put_seen(job.id, job.key, "done", now)]
            )
            self._window.add(job.id, job.key, "done", now)
            self._release(job)
            self.done += 1
            self._report(job, "done")
        finally:
            self._running.pop(job.id, None)
            self._wake_run.set()

    async def _die(self, job: Job) -> None:
        now = time.time()
        await self.store.write(
            [delete("inbox", job.id), put_dead(job, now), put_seen(job.id, job.key, "dead", now)]
        )
        self._window.add(job.id, job.key, "dead", now)
        self._release(job)
        self._dead[job.id] = job
        self.died += 1
        self._emit_dead(job, job.error)
        self._report(job, "dead")

    def _emit_dead(self, job: Job, error: str) -> None:
        data = {
            "id": job.id,
            "target": job.target,
            "key": job.key,
            "attempts": job.attempt,
            "error": error,
            "node": self._node.name,
        }
        self._node._events.system_event(JOB_DEAD, data)

    def _report(self, job: Job, state: str) -> None:
        """Tell the sender (if it is a member) now rather than at its next poll."""
        if not job.sender:
            return
        first = not self._reports
        self._reports.setdefault(job.sender, []).append([job.id, state])
        if first:
            asyncio.get_running_loop().call_soon(self._flush_reports)

    def _flush_reports(self) -> None:
        reports, self._reports = self._reports, {}
        for sender, items in reports.items():
            self._node._spawn(self._send_report(sender, items), "job report")

    async def _send_report(self, sender: str, items: list[list[str]]) -> None:
        try:
            await self._ask(sender, "$mesh.job.report", [items, self.store_id])
        except MeshError as exc:  # the sender asks again at its next poll
            log.debug("job report to %s: %s", sender[:12], exc)

    async def _claim(self) -> None:
        """Jobs found in the inbox at start: run them unless a live member's outbox says
        it handed them elsewhere meanwhile (or they were done there)."""
        await asyncio.sleep(self.lease)
        node = self._node
        ids = sorted(self._unclaimed)
        if not ids:
            return
        members = [m for m in node.members() if m.status == "alive" and m.id != node.id]
        answers = await asyncio.gather(
            *(
                node._events._host.call_member(m, "$mesh.job.claim", [ids, self.store_id], 5.0)
                for m in members
                if m.address
            ),
            return_exceptions=True,
        )
        lost: set[str] = set()
        for answer in answers:
            if isinstance(answer, dict):
                lost.update(i for i, s in answer.items() if s != "yours" and isinstance(i, str))
        ops = []
        for job_id in ids:
            job = self._inbox.get(job_id)
            if job is None or job_id not in self._unclaimed:
                continue
            if job_id in lost:
                self._release(job)
                ops.append(delete("inbox", job_id))
            else:
                self._claimed(job_id)
        if ops:
            await self.store.write(ops)
        self._wake_run.set()

    # -- the system calls --------------------------------------------------------------------

    async def serve(self, method: str, args: list[Any]) -> Any:
        """Answer ``$mesh.job.<method>`` (docs/protocol.md, section 11)."""
        if method == "$mesh.job.take":
            return await self._take(args[0] if args else [])
        if method == "$mesh.job.status":
            ids = args[0] if args and isinstance(args[0], list) else []
            jobs = {}
            for i in ids:
                if isinstance(i, str):
                    jobs[i] = self._state(i)
                    if jobs[i] == "held":  # its sender counts on us: no need to claim it
                        self._claimed(i)
            return {"store": self.store_id, "jobs": jobs}
        if method == "$mesh.job.report":
            items = args[0] if args and isinstance(args[0], list) else []
            store = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            for item in items:
                if isinstance(item, list) and len(item) == 2 and item[1] in SETTLED:
                    await self._settle_out(str(item[0]), item[1], store)
            return True
        if method == "$mesh.job.claim":
            return await self._answer_claim(args)
        if method == "$mesh.job.list":
            return self.listing()
        if method in ("$mesh.job.retry", "$mesh.job.drop"):
            job_id = args[0] if args else None
            if not isinstance(job_id, str):
                raise ProtocolError(f"{method} takes a job id")
            if method == "$mesh.job.retry":
                return await self.retry(job_id)
            return await self.drop(job_id)
        raise CallError(f"{method}: no such mesh method")

    async def _answer_claim(self, args: list[Any]) -> dict[str, str]:
        ids, store = ([*args, None, None])[:2] if isinstance(args, list) else (None, None)
        if not isinstance(ids, list) or not isinstance(store, str):
            raise ProtocolError("$mesh.job.claim takes (ids, store)")
        answer = {}
        now = time.time()
        for job_id in ids:
            if not isinstance(job_id, str):
                continue
            out = self._outbox.get(job_id)
            if out is not None:
                if out.store in (None, store) and not out.sending:
                    out.store = store
                    out.lease_until = time.monotonic() + self.lease
                    answer[job_id] = "yours"
                else:
                    answer[job_id] = "elsewhere"
            elif (state := self._window.state_of(job_id, None, now)) is not None:
                answer[job_id] = state
        return answer

    def listing(self) -> dict[str, Any]:
        """What ``$mesh.job.list`` answers: this node's outbox, inbox and dead letters."""
        return {
            "node": self._node.name,
            "id": self._node.id,
            "store": self.store_id,
            "outbox": [
                {**_summary(o.job), "provider": o.node, "handed_off": o.node is not None}
                for o in self._outbox.values()
            ],
            "inbox": [
                {**_summary(j), "running": j.id in self._running, "not_before": j.not_before}
                for j in self._inbox.values()
            ],
            "dead": [_summary(j) for j in self._dead.values()],
        }

    async def retry(self, job_id: str) -> bool:
        """A dead letter back to the inbox, with its attempts counted from 1 again."""
        job = self._dead.pop(job_id, None)
        if job is None:
            return False
        job.attempt, job.error, job.not_before = 0, "", time.time()
        await self.store.write([delete("dead", job_id), forget_seen([job_id]), put_inbox(job)])
        self._window.discard(job_id)
        self._hold(job)
        return True

    async def drop(self, job_id: str) -> bool:
        """Forget a dead letter, a job waiting in the inbox (not running) or the outbox."""
        if job_id in self._dead:
            del self._dead[job_id]
            await self.store.write([delete("dead", job_id)])
            return True
        if (job := self._inbox.get(job_id)) is not None and job_id not in self._running:
            self._release(job)
            now = time.time()
            self._window.add(job_id, job.key, "dropped", now)
            await self.store.write(
                [delete("inbox", job_id), put_seen(job_id, job.key, "dropped", now)]
            )
            self._report(job, "dropped")
            return True
        if job_id in self._outbox:
            await self._settle_out(job_id, "dropped")
            return True
        return False


def _summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "target": job.target,
        "key": job.key,
        "attempt": job.attempt,
        "attempts": len(job.retries) + 1,
        "error": job.error,
        "created": job.created,
    }


async def serve_job_call(node: Node, routing_id: bytes, call: Call) -> None:
    """Answer a ``$mesh.job.*`` system call of a peer (or refuse it: no job store)."""
    from .._wire.codec import Error, Reply

    runner = node._jobs
    try:
        if runner is None:
            raise CallError(f"node {node.name!r} has no job store (jobs_db is not set)")
        answer = await runner.serve(call.target, list(call.args))
    except (MeshError, ValueError) as exc:
        code, message, kind, _ = error_to_wire(exc)
        node._reply_error(routing_id, Error(call.call_id, code, message, kind))
        return
    node._reply_error_or(routing_id, Reply(call.call_id, answer))
