"""Durable queues: the pure parts, nodes in one process, and real processes killed with
SIGKILL (``tests.job_node``, ended by PID) whose jobs are counted: enqueued = done + dead,
and a job with a key runs once."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mesh import ConfigError, Node, Reject, current_call, method, service
from mesh._core.jobs import DedupWindow, Job, check_retries, choose_store, is_last, next_delay
from mesh._wire.codec import ProtocolError
from tests.programs import node_env, node_program, read_line
from tests.test_mesh import eventually

LEASE = 1.0

# -- the pure parts ------------------------------------------------------------------------


def test_a_schedule_gives_the_delays_and_says_which_attempt_is_the_last() -> None:
    retries = check_retries([1, 5, 30])
    assert [next_delay(retries, a) for a in (1, 2, 3, 4)] == [1.0, 5.0, 30.0, None]
    assert [is_last(retries, a) for a in (1, 2, 3, 4)] == [False, False, False, True]
    assert is_last((), 1)
    for bad in ([-1], [float("nan")], ["x"], [True], [0.0] * 101):
        with pytest.raises(ValueError, match="retries"):
            check_retries(bad)


def test_the_idempotency_window_is_bounded_by_count_and_age() -> None:
    window = DedupWindow(most=3, max_age=10.0)
    for i in range(5):
        window.add(f"id{i}", f"k{i}", "done", float(i))
    assert len(window) == 5
    assert window.state_of("id4", None, 5.0) == "done"
    assert len(window) == 3  # the oldest two fell out
    assert window.state_of("id0", "k0", 5.0) is None
    assert window.state_of(None, "k3", 5.0) == "done"
    assert window.state_of("id4", None, 14.5) is None  # older than 10 s
    window.add("x", "k", "dead", 20.0)
    window.discard("x")
    assert window.state_of("x", "k", 20.0) is None


def test_jobs_with_a_key_go_to_the_same_provider_and_others_prefer_this_node() -> None:
    rng = random.Random(1)
    nodes = ["a", "b", "c"]
    assert len({choose_store(nodes, "order-17", rng) for _ in range(10)}) == 1
    assert {choose_store(nodes, f"k{i}", rng) for i in range(100)} == set(nodes)
    assert choose_store(nodes, None, rng, prefer="b") == "b"
    assert choose_store([], None, rng) is None


def test_a_job_from_the_wire_is_checked() -> None:
    job = Job("id1", "mailer.send", [1], {"x": 2}, "k", (1.0,), 5.0, "n", "s")
    assert Job.from_wire(job.to_wire()).to_wire() == job.to_wire()
    for bad in (None, [], {"id": "x"}, {**job.to_wire(), "target": "nodot"},
                {**job.to_wire(), "args": {}}, {**job.to_wire(), "key": 5},
                {**job.to_wire(), "retries": [-1]}):  # fmt: skip
        with pytest.raises(ProtocolError):
            Job.from_wire(bad)


# -- nodes in one process ------------------------------------------------------------------


@service(name="mailer")
class Mailer:
    def __init__(self) -> None:
        self.runs: list[tuple[Any, int, bool]] = []

    @method
    async def send(self, message: str) -> str:
        call = current_call()
        self.runs.append((message, call.attempt, call.last_attempt))
        if message.startswith("fail"):
            raise RuntimeError("smtp down")
        if message.startswith("reject"):
            raise Reject("no such address")
        return "sent"


@asynccontextmanager
async def pair(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Node, Node, Mailer]]:
    """A sender and a provider of ``mailer``, each with a job database."""
    mesh = f"jobs-{secrets.token_hex(4)}"
    common: dict[str, Any] = dict(mesh=mesh, profile="test", discovery=False, jobs_lease=LEASE)
    common.update(settings)
    async with AsyncExitStack() as stack:
        sender = await stack.enter_async_context(
            Node(name="sender", jobs_db=tmp_path / "sender.db", **common)
        )
        provider = Node(
            name="provider", jobs_db=tmp_path / "provider.db", seeds=(sender.address,), **common
        )
        mailer = Mailer()
        provider.add_service(mailer)
        await stack.enter_async_context(provider)
        await sender.wait_for_service("mailer", timeout=10.0)
        yield sender, provider, mailer


async def test_an_enqueued_job_is_handed_off_and_runs_once(tmp_path: Path) -> None:
    async with pair(tmp_path) as (sender, provider, mailer):
        job_id = await sender.enqueue("mailer.send", "hello", key="order-17", wait_handed_off=True)
        await eventually(lambda: mailer.runs == [("hello", 1, False)], 5.0, "the job ran")
        await eventually(lambda: not sender.jobs()["outbox"], 5.0, "the outbox is empty")
        assert not provider.jobs()["inbox"]
        # the same key again: deduplicated (by the sender's outbox or the provider's window)
        again = await sender.enqueue("mailer.send", "hello", key="order-17", wait_handed_off=True)
        assert again != job_id
        await asyncio.sleep(0.3)
        assert len(mailer.runs) == 1


async def test_a_failing_job_is_retried_by_its_schedule_then_dead_with_an_event(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (sender, provider, mailer):
        dead = provider.subscribe("$mesh.job.")
        began = time.monotonic()
        job_id = await sender.enqueue("mailer.send", "fail", retries=[0.2, 0.4])
        event = await asyncio.wait_for(dead.__anext__(), 10.0)
        took = time.monotonic() - began
        assert event.topic == "$mesh.job.dead"
        assert event.data["id"] == job_id
        assert event.data["attempts"] == 3
        assert "smtp down" in event.data["error"]
        assert mailer.runs == [("fail", 1, False), ("fail", 2, False), ("fail", 3, True)]
        assert 0.6 <= took < 5.0, took
        [letter] = provider.jobs()["dead"]
        assert letter["id"] == job_id
        await eventually(lambda: not sender.jobs()["outbox"], 5.0, "the sender is told")
        # retry from the dead letters: it runs (and fails) again
        assert await provider._jobs.retry(job_id)  # type: ignore[union-attr]
        await eventually(lambda: len(mailer.runs) == 6, 10.0, "retried")
        await eventually(lambda: provider.jobs()["dead"], 5.0, "dead again")
        assert await provider._jobs.drop(job_id)  # type: ignore[union-attr]
        assert not provider.jobs()["dead"]


async def test_reject_sends_a_job_to_the_dead_letters_at_once(tmp_path: Path) -> None:
    async with pair(tmp_path) as (sender, provider, mailer):
        await sender.enqueue("mailer.send", "reject", retries=[0.1, 0.1, 0.1])
        await eventually(lambda: provider.jobs()["dead"], 5.0, "dead")
        assert mailer.runs == [("reject", 1, False)]
        assert provider.jobs()["dead"][0]["error"].startswith("Reject")


async def test_a_provider_restarted_on_its_database_runs_what_its_inbox_held(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (sender, provider, mailer):
        await sender.enqueue("mailer.send", "fail-once", retries=[30.0], wait_handed_off=True)
        await eventually(lambda: mailer.runs, 5.0, "first attempt")
        db = provider.config.jobs_db
    # both closed; the provider comes back alone: its inbox holds the job (attempt 2 due
    # in 30 s: the schedule survives the restart)
    async with Node(
        name="p2", profile="test", discovery=False, jobs_db=db, jobs_lease=LEASE
    ) as again:
        assert [j["attempt"] for j in again.jobs()["inbox"]] == [1]


def test_a_corrupt_or_locked_database_is_a_clear_error_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)

    async def start(path: Path) -> None:
        async with Node(profile="test", discovery=False, jobs_db=path):
            pass

    with pytest.raises(ConfigError, match=r"bad\.db.*(not a job database|corrupt)"):
        asyncio.run(start(bad))

    async def twice() -> None:
        path = tmp_path / "one.db"
        async with Node(profile="test", discovery=False, jobs_db=path):
            await start(path)

    with pytest.raises(ConfigError, match="locked"):
        asyncio.run(twice())


async def test_a_node_without_a_database_cannot_enqueue_and_refuses_hand_offs() -> None:
    async with Node(profile="test", discovery=False) as node:
        with pytest.raises(ConfigError, match="jobs_db"):
            await node.enqueue("mailer.send", "x")


# -- real processes, SIGKILL --------------------------------------------------------------


def _log(path: Path) -> tuple[collections.Counter[int], collections.Counter[int]]:
    started: collections.Counter[int] = collections.Counter()
    done: collections.Counter[int] = collections.Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            what, n, _ = line.split()
            (started if what == "start" else done)[int(n)] += 1
    return started, done


@asynccontextmanager
async def hub() -> AsyncIterator[Node]:
    async with Node(
        name="hub", mesh=f"jq-{secrets.token_hex(4)}", profile="test", discovery=False
    ) as node:
        yield node


def _env(hub_node: Node, tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return node_env(
        MESH_NAME=hub_node.mesh,
        MESH_SEEDS=hub_node.address,
        MESH_NODE_NAME=name,
        MESH_JOBS_DB=str(tmp_path / f"{name}.db"),
        MESH_JOBS_LEASE=str(LEASE),
        JOB_LOG=str(tmp_path / "log"),
        **extra,
    )


async def _all_done(log: Path, count: int, timeout: float = 30.0) -> collections.Counter[int]:
    await eventually(lambda: len(_log(log)[1]) == count, timeout, f"{count} jobs done")
    await asyncio.sleep(1.0)  # nothing runs a second time afterwards
    return _log(log)[1]


@pytest.mark.timeout(90)
async def test_sigkill_of_the_sender_right_after_enqueue_loses_nothing(tmp_path: Path) -> None:
    count = 8
    async with hub() as h:
        sender_env = _env(h, tmp_path, "sender", JOB_ROLE="sender", JOB_COUNT=str(count))
        with node_program("tests.job_node", _env(h, tmp_path, "p1")) as p1:
            await asyncio.to_thread(read_line, p1)
            await eventually(lambda: "work" in h.services(), 10.0, "the provider listed")
            with node_program("tests.job_node", sender_env) as sender:
                for n in range(count):
                    assert await asyncio.to_thread(_enqueued, sender) == n
                os.kill(sender.pid, signal.SIGKILL)  # right after the last enqueue returned
            # some jobs were handed off (the provider runs them), others are in the outbox
            with node_program("tests.job_node", {**sender_env, "JOB_COUNT": "0"}) as again:
                await asyncio.to_thread(read_line, again)
                done = await _all_done(tmp_path / "log", count)
        assert done == {n: 1 for n in range(count)}, done


@pytest.mark.timeout(90)
async def test_sigkill_of_a_provider_mid_job_hands_its_jobs_to_another(tmp_path: Path) -> None:
    count = 6
    async with hub() as h:
        env = dict(JOB_ROLE="sender", JOB_COUNT=str(count), JOB_PAUSE="0.5")
        with (
            node_program("tests.job_node", _env(h, tmp_path, "p1")) as p1,
            node_program("tests.job_node", _env(h, tmp_path, "p2")) as p2,
        ):
            ready = [await asyncio.to_thread(read_line, p) for p in (p1, p2)]
            await eventually(
                lambda: (
                    len(h.services().get("work", ()).providers) == 2  # type: ignore[arg-type]
                    if "work" in h.services()
                    else False
                ),
                10.0,
                "both providers listed",
            )
            with node_program("tests.job_node", _env(h, tmp_path, "sender", **env)) as sender:
                await asyncio.to_thread(read_line, sender)
                log = tmp_path / "log"
                # kill whichever provider starts a job first, mid-job
                await eventually(lambda: _log(log)[0], 15.0, "a job started")
                first = int(log.read_text().split()[2])
                victim = p1 if first == p1.pid else p2
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                done = await _all_done(log, count)
                print(
                    f"all done {time.monotonic() - killed_at:.2f} s after SIGKILL", ready[0]["name"]
                )
        assert done == {n: 1 for n in range(count)}, done


@pytest.mark.timeout(120)
async def test_sender_and_provider_killed_and_restarted_lose_nothing(tmp_path: Path) -> None:
    count = 6
    async with hub() as h:
        sender_env = _env(
            h, tmp_path, "sender", JOB_ROLE="sender", JOB_COUNT=str(count), JOB_PAUSE="0.4"
        )
        log = tmp_path / "log"
        with (
            node_program("tests.job_node", _env(h, tmp_path, "p1")) as p1,
            node_program("tests.job_node", sender_env) as sender,
        ):
            await asyncio.to_thread(read_line, p1)
            for n in range(count):  # every enqueue returned: the jobs are stored
                assert await asyncio.to_thread(_enqueued, sender) == n
            await eventually(lambda: _log(log)[0], 15.0, "a job started")
            os.kill(p1.pid, signal.SIGKILL)  # mid-job
            os.kill(sender.pid, signal.SIGKILL)
        started_before, _ = _log(log)
        with (
            node_program("tests.job_node", _env(h, tmp_path, "p1")) as p1,
            node_program("tests.job_node", {**sender_env, "JOB_COUNT": "0"}) as sender,
        ):
            await asyncio.to_thread(read_line, p1)
            await asyncio.to_thread(read_line, sender)
            done = await _all_done(log, count, 45.0)
        assert done == {n: 1 for n in range(count)}, done
        print("started before the kill:", dict(started_before), "done:", dict(done))


def _enqueued(proc: Any) -> int:
    """The number of the next job the sender program says it enqueued."""
    while True:
        line = read_line(proc)
        if line["event"] == "enqueued":
            return int(line["n"])


# -- meshctl -------------------------------------------------------------------------------


async def test_meshctl_enqueue_jobs_retry_and_drop(tmp_path: Path) -> None:
    import json

    from tests.test_cli_events import at, meshctl

    async with pair(tmp_path) as (sender, provider, mailer):
        code, out, err = await meshctl("enqueue", "mailer.send", "hi", "--key", "k1", *at(sender))
        assert code == 0, err
        await eventually(lambda: mailer.runs == [("hi", 1, False)], 5.0, "the job ran")
        code, out, err = await meshctl(
            "enqueue", "mailer.send", "reject", "--json", "--retries", "", *at(sender)
        )
        assert code == 0, err
        job_id = json.loads(out)["id"]
        await eventually(lambda: provider.jobs()["dead"], 5.0, "dead")
        code, out, err = await meshctl("jobs", "--json", *at(sender))
        assert code == 0, err
        by_node = {e["node"]: e for e in json.loads(out)}
        assert [j["id"] for j in by_node["provider"]["dead"]] == [job_id]
        code, out, err = await meshctl("jobs", *at(sender))
        assert code == 0, err
        assert job_id in out
        assert "dead" in out
        code, out, err = await meshctl("jobs", "retry", job_id, *at(sender))
        assert (code, out.strip()) == (0, f"retry: {job_id} on provider"), err
        await eventually(lambda: len(mailer.runs) == 3, 5.0, "retried")
        code, out, err = await meshctl("jobs", "drop", job_id, *at(sender))
        assert code == 0, err
        assert not provider.jobs()["dead"]
        code, out, err = await meshctl("jobs", "drop", job_id, *at(sender))
        assert code == 1
        code, out, err = await meshctl("enqueue", "nothing.here", *at(sender))
        assert code == 3, err
