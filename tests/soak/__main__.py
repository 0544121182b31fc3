"""The soak: ``python -m tests.soak [--calls N] [--events N] [--json] [--time-limit S]``.

Two node processes on 127.0.0.1 (``local`` profile, no zeroconf): the serving node
(``tests.soak.server``: nodes.echo's services and ``soak.publish``) and the calling and
subscribing node (``tests.soak.client``, which joins through the server and runs the
commands this process gives it on stdin). This process joins no mesh: it drives the
client and reads both processes' memory, file descriptors, threads and CPU from /proc.

1. Warm-up: ``--warmup`` calls and events (lazy allocations, caches, the worker pool,
   the allocator's arenas), then a garbage collection in both; the *before* sample.
2. ``--calls`` calls of ``echo.say`` (100 bytes, ``--concurrency`` at a time) in ten
   chunks, a sample after each; then ``--events`` events from the server to the client
   in ten chunks (asked ``--round`` at a time, each round awaited: a subscriber that
   keeps up), a sample after each.
3. A garbage collection in both; the *after* sample. Then SIGTERM to both (each must
   exit 0); SIGKILL by PID if one does not, whatever happened.

It fails (exit 1, saying why) when a call was not answered with what was sent, when an
event was lost without being counted (received + counted gaps != sent), when a
process's RSS grew by more than RSS_MARGIN or its open file descriptors or threads
changed, or when a process did not exit 0. Dropped events are reported, not failed:
plain pub/sub is at-most-once (docs/events.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, Any

from tests.bench._harness import counted, time_limit
from tests.procstat import Usage, usage
from tests.programs import node_env, node_program, read_line, spawner, stop

#: How much a process's RSS may grow from *before* to *after*. The soak's objects are
#: freed and collected by then; what remains is the allocator's: pymalloc keeps arenas
#: that still hold one live object, glibc keeps freed pages in its heaps and per-thread
#: arenas (zmq's I/O thread, the worker pool), and both depend on where the last
#: objects happened to land (a million calls and events moved it by 0.2 MB). A leak of
#: 2 bytes per call or event over a million of each is 4 MB, which this catches; a
#: leak of a message per call (100+ bytes) would be 100 MB.
RSS_MARGIN = 4 * 1024 * 1024
CHUNKS = 10
START_TIMEOUT = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--calls", type=counted(CHUNKS), default=1_000_000)
    parser.add_argument("--events", type=counted(CHUNKS), default=1_000_000)
    parser.add_argument(
        "--warmup",
        type=counted(1),
        default=50_000,
        help="calls and events before the first sample (default 50,000)",
    )
    parser.add_argument("--concurrency", type=counted(1), default=100)
    parser.add_argument(
        "--round",
        type=counted(1),
        default=5_000,
        help="events asked of the server at a time (default 5,000)",
    )
    parser.add_argument(
        "--time-limit", type=counted(1), default=900, help="seconds for the whole run (default 900)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


class Driver:
    """Gives the client its commands and reads its answers."""

    def __init__(self, client: subprocess.Popen[bytes], timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    def __call__(self, command: str) -> dict[str, Any]:
        assert self.client.stdin is not None
        self.client.stdin.write(command.encode() + b"\n")
        self.client.stdin.flush()
        answer = read_line(self.client, self.timeout)
        if answer.get("event") == "error":
            raise RuntimeError(f"the client failed {command!r}: {answer['error']}")
        return answer


@contextmanager
def pair(errors: IO[bytes]) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """The server and the client, ready; both ended by PID at the end."""
    settings = {
        "MESH_NAME": f"soak-{os.getpid()}",
        "MESH_PROFILE": "local",
        "MESH_HOST": "127.0.0.1",
        "MESH_PORT": "0",
    }
    spawn = spawner(errors, stdin=subprocess.PIPE)
    with ExitStack() as stack:
        server_env = node_env(MESH_NODE_NAME="soak-server", **settings)
        server = stack.enter_context(node_program("tests.soak.server", server_env, spawn))
        address = read_line(server, START_TIMEOUT)["address"]
        client_env = node_env(MESH_NODE_NAME="soak-client", MESH_SEEDS=address, **settings)
        client = stack.enter_context(node_program("tests.soak.client", client_env, spawn))
        for expected in ("ready", "connected"):
            line = read_line(client, START_TIMEOUT)
            if line.get("event") != expected:
                raise RuntimeError(f"the client said {line} instead of {expected!r}")
        yield server, client


def _sample(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, Usage]:
    return {role: usage(proc.pid) for role, proc in procs.items()}


def measure(args: argparse.Namespace, errors: IO[bytes]) -> dict[str, Any]:
    """Run the soak; the raw figures."""
    started = time.monotonic()
    with pair(errors) as (server, client):
        procs = {"server": server, "client": client}
        drive = Driver(client, float(args.time_limit))
        drive("prepare")
        drive(f"calls {args.warmup} {args.concurrency}")
        drive(f"events {args.warmup} {args.round}")
        drive("collect")
        before = _sample(procs)
        calls, events, samples = [], [], [before]
        for i in range(CHUNKS):
            n = args.calls // CHUNKS + (i < args.calls % CHUNKS)
            calls.append(drive(f"calls {n} {args.concurrency}"))
            samples.append(_sample(procs))
        after_calls = samples[-1]
        for i in range(CHUNKS):
            n = args.events // CHUNKS + (i < args.events % CHUNKS)
            events.append(drive(f"events {n} {args.round}"))
            samples.append(_sample(procs))
        drive("collect")
        after = _sample(procs)
        exits = {role: stop(proc) for role, proc in procs.items()}
    return {
        "before": before,
        "after_calls": after_calls,
        "after": after,
        "samples": samples,
        "calls": calls,
        "events": events,
        "exits": exits,
        "wall_seconds": time.monotonic() - started,
    }


def _total(answers: list[dict[str, Any]], key: str) -> Any:
    return sum(answer[key] for answer in answers)


def report(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The figures, the verdict and the problems found, as one JSON-ready dict."""
    before, after_calls, after = raw["before"], raw["after_calls"], raw["after"]
    call_seconds, event_seconds = _total(raw["calls"], "seconds"), _total(raw["events"], "seconds")
    calls = {key: _total(raw["calls"], key) for key in ("calls", "ok", "wrong", "errors")}
    calls["first_error"] = next((a["first_error"] for a in raw["calls"] if a["first_error"]), None)
    events = {
        key: _total(raw["events"], key)
        for key in ("events", "received", "gaps", "node_dropped", "queue_dropped", "late_rounds")
    }
    problems = []
    if calls["ok"] != calls["calls"]:
        problems.append(f"calls not answered with what was sent: {calls}")
    if events["received"] + events["gaps"] != events["events"]:
        problems.append(f"events lost without being counted: {events}")
    processes = {}
    for role in ("server", "client"):
        b, a = before[role], after[role]
        growth = a.rss_bytes - b.rss_bytes
        if growth > RSS_MARGIN:
            problems.append(
                f"{role}: RSS grew by {growth / 2**20:.1f} MiB (margin "
                f"{RSS_MARGIN / 2**20:.0f} MiB)"
            )
        if a.fds != b.fds:
            problems.append(f"{role}: {b.fds} open file descriptors before, {a.fds} after")
        if a.threads != b.threads:
            problems.append(f"{role}: {b.threads} threads before, {a.threads} after")
        if raw["exits"][role] != 0:
            problems.append(f"{role}: exit code {raw['exits'][role]} on SIGTERM")
        cpu_calls = after_calls[role].cpu_seconds - b.cpu_seconds
        cpu_events = a.cpu_seconds - after_calls[role].cpu_seconds
        processes[role] = {
            "rss_before": b.rss_bytes,
            "rss_after": a.rss_bytes,
            "rss_growth": growth,
            "rss_samples": [s[role].rss_bytes for s in raw["samples"]],
            "fds_before": b.fds,
            "fds_after": a.fds,
            "threads_before": b.threads,
            "threads_after": a.threads,
            "cpu_seconds_calls": cpu_calls,
            "cpu_seconds_events": cpu_events,
            "cpu_us_per_call": cpu_calls / args.calls * 1e6,
            "cpu_us_per_event": cpu_events / args.events * 1e6,
            "exit_code": raw["exits"][role],
        }
    return {
        "settings": {
            "calls": args.calls,
            "events": args.events,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "round": args.round,
        },
        "margin": {"rss_bytes": RSS_MARGIN, "fds": 0, "threads": 0},
        "calls": {**calls, "seconds": call_seconds, "per_s": args.calls / call_seconds},
        "events": {**events, "seconds": event_seconds, "per_s": args.events / event_seconds},
        "processes": processes,
        "wall_seconds": raw["wall_seconds"],
        "load_average": os.getloadavg()[0],
        "problems": problems,
        "pass": not problems,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def print_table(result: dict[str, Any]) -> None:
    calls, events = result["calls"], result["events"]
    print(
        f"calls:  {calls['calls']:,} in {calls['seconds']:.1f} s = {calls['per_s']:,.0f}/s; "
        f"answered {calls['ok']:,}, wrong {calls['wrong']}, errors {calls['errors']}"
    )
    print(
        f"events: {events['events']:,} in {events['seconds']:.1f} s = {events['per_s']:,.0f}/s; "
        f"received {events['received']:,}, dropped (counted) {events['gaps']:,}, "
        f"by the node's stats {events['node_dropped']:,}, queue full {events['queue_dropped']:,}"
    )
    print(
        f"{'process':8} {'RSS before':>11} {'RSS after':>11} {'growth':>9} {'fds':>9} "
        f"{'threads':>9} {'CPU calls':>10} {'us/call':>8} {'CPU events':>11} {'us/event':>9}"
    )
    for role, p in result["processes"].items():
        print(
            f"{role:8} {_mib(p['rss_before']):>11} {_mib(p['rss_after']):>11} "
            f"{_mib(p['rss_growth']):>9} {p['fds_before']:>4}->{p['fds_after']:<4} "
            f"{p['threads_before']:>4}->{p['threads_after']:<4} "
            f"{p['cpu_seconds_calls']:>9.1f}s {p['cpu_us_per_call']:>8.1f} "
            f"{p['cpu_seconds_events']:>10.1f}s {p['cpu_us_per_event']:>9.2f}"
        )
    print(
        f"margin: RSS +{_mib(result['margin']['rss_bytes'])}, fds and threads equal; "
        f"wall time {result['wall_seconds']:.1f} s, load average {result['load_average']:.1f}"
    )
    for problem in result["problems"]:
        print(f"FAIL: {problem}")
    print("PASS" if result["pass"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryFile() as errors:
        try:
            with time_limit(args.time_limit):
                raw = measure(args, errors)
        except BaseException:
            errors.seek(0)
            sys.stderr.write(errors.read().decode(errors="replace")[-5000:])
            raise
    result = report(raw, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
