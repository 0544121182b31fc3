"""mesh RPC against raw pyzmq, in one run, on 127.0.0.1, 100-byte echo.

python -m tests.bench.rpc [--calls N] [--throughput-calls T] [--concurrency C] [--json]
                          [--warmup W] [--rounds R] [--pin] [--check] [--time-limit S]

Every server runs in its own process (started here, ended by PID with SIGTERM then
SIGKILL, whatever happens); the clients run in this process:

1. raw pyzmq, blocking: a ROUTER echo loop; a blocking DEALER here, sequential and
   pipelined (C calls in flight: receive one, send one).
2. raw zmq.asyncio: a ROUTER that drains every ready message with NOBLOCK per
   wake-up; a zmq.asyncio DEALER here, sequential (one awaited recv per message) and
   C tasks each awaiting its own future, resolved by a reader task that drains
   replies with NOBLOCK and matches them by a request id in the payload.
3. mesh, async: ``python -m nodes.echo``; a ``mesh.Node`` here calls ``echo.say``,
   sequential and from C worker tasks.
4. mesh, blocking: ``mesh.sync.connect`` to the same echo node, sequential.

Plus one reference row in no ratio: the blocking DEALER against the asyncio server of
2., what ``mesh.sync`` against a node is without mesh (the floor of the third ratio).
Latencies under load (the C rows) are per call, from its send to its answer.

Rows that a ratio compares are measured in turn, R rounds of N/R calls each (the
blocking rows 1., 4. and the reference; the sequential rows of 2. and 3.; their
concurrent rows), and each row's rounds are pooled: the machine's speed drifts by
20% or more from one minute to the next, and a row measured a minute after the row
it is compared with saw another machine.

Then the ratios that DESIGN.md ("Performance notes") sets as goals. Absolute numbers
drift by 20% on a shared machine: only the ratios within one run mean much. Exits 0
whatever the ratios are, unless ``--check`` is given (then 1 when a ratio misses).
On 2 cores the sequential figures are bimodal run to run (client and server threads
land on the same core or not); ``--pin`` puts this process on one CPU and every
server on another, which steadies them (and changes the throughput figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.asyncio

import mesh
import mesh.sync
from tests.bench._harness import counted, placement, run
from tests.programs import ROOT, before_exec

PAYLOAD_BYTES = 100
HWM = 100_000
#: How long one blocking recv may wait before the run is declared stuck (ms).
RECV_TIMEOUT_MS = 10_000
#: Bound on each asyncio phase, and on a server's start.
PHASE_TIMEOUT = 60.0
START_TIMEOUT = 20.0
#: Default bound on the whole run (SIGALRM); the smoke test gives the process 110 s.
RUN_LIMIT = 100


@dataclass(frozen=True)
class Figure:
    """One measurement: latency percentiles (microseconds) and calls per second."""

    p50_us: float
    p99_us: float
    calls_per_s: float
    calls: int


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


#: One run of a row: every call's latency (seconds) and the run's wall time.
Sample = tuple[list[float], float]


def pooled(samples: list[Sample]) -> Figure:
    """The figure of a row measured in several runs: percentiles over every call,
    calls/s over their total time."""
    latencies = [x for run_latencies, _ in samples for x in run_latencies]
    return figure(latencies, sum(elapsed for _, elapsed in samples))


def figure(latencies: list[float], elapsed: float) -> Figure:
    ordered = sorted(latencies)
    return Figure(
        p50_us=_percentile(ordered, 0.50) * 1e6,
        p99_us=_percentile(ordered, 0.99) * 1e6,
        calls_per_s=len(latencies) / elapsed,
        calls=len(latencies),
    )


def payload(request_id: int) -> bytes:
    """100 bytes: an 8-byte request id, then filler."""
    return request_id.to_bytes(8, "little") + b"x" * (PAYLOAD_BYTES - 8)


def request_id(frame: bytes) -> int:
    return int.from_bytes(frame[:8], "little")


# -- server processes ---------------------------------------------------------------------


def _server_env(mesh_name: str, secret: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(
        {
            "MESH_NAME": mesh_name,
            "MESH_NODE_NAME": "bench-echo",
            "MESH_PROFILE": "local",
            "MESH_HOST": "127.0.0.1",
            "MESH_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if secret is not None:
        env["MESH_SECRET_FILE"] = str(secret)
    return env


def _read_ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The JSON ready line of a server, within ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError(f"pid {proc.pid}: no ready line within {timeout:g} s")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"pid {proc.pid} exited with {proc.wait(5)} before ready")
            text = line.decode(errors="replace").strip()
            if text.startswith("{"):
                message = json.loads(text)
                if message.get("event") == "ready":
                    return dict(message)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL if it has not left within 5 s; always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def server(
    argv: list[str], env: dict[str, str], errors: IO[bytes], cpus: set[int] | None = None
) -> Iterator[str]:
    """Run a server process; yield the address from its ready line; end it at the end."""
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        preexec_fn=before_exec(cpus) if sys.platform == "linux" else None,
    )
    try:
        try:
            ready = _read_ready(proc, START_TIMEOUT)
        except (TimeoutError, RuntimeError) as exc:
            errors.flush()
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"{' '.join(argv[1:])}: {exc}\n{detail}") from None
        yield str(ready["address"])
    finally:
        _end(proc)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# -- 1. raw pyzmq, blocking ---------------------------------------------------------------


def _blocking_dealer(context: zmq.Context[zmq.Socket[bytes]], address: str) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, RECV_TIMEOUT_MS)
    sock.connect(address)
    return sock


def raw_blocking_sequential(sock: zmq.Socket[bytes], calls: int, warmup: int) -> Sample:
    send, recv, clock = sock.send, sock.recv, time.perf_counter
    message = payload(0)
    for _ in range(warmup):
        send(message)
        recv()
    latencies = [0.0] * calls
    started = clock()
    for i in range(calls):
        t0 = clock()
        send(message)
        recv()
        latencies[i] = clock() - t0
    return latencies, clock() - started


def raw_blocking_pipelined(
    sock: zmq.Socket[bytes], calls: int, concurrency: int, warmup: int
) -> Sample:
    """Keep ``concurrency`` calls in flight: receive one, send one."""
    send, recv, clock = sock.send, sock.recv, time.perf_counter

    def run(total: int) -> tuple[list[float], float]:
        sent_at = [0.0] * total
        latencies = [0.0] * total
        started = clock()
        sent = 0
        for _ in range(min(concurrency, total)):
            sent_at[sent] = clock()
            send(payload(sent))
            sent += 1
        for _ in range(total):
            i = request_id(recv())
            latencies[i] = clock() - sent_at[i]
            if sent < total:
                sent_at[sent] = clock()
                send(payload(sent))
                sent += 1
        return latencies, clock() - started

    run(warmup)
    return run(calls)


# -- 2. raw zmq.asyncio -------------------------------------------------------------------


def _async_dealer(context: zmq.asyncio.Context, address: str) -> zmq.asyncio.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.connect(address)
    return sock


async def raw_asyncio_sequential(sock: zmq.asyncio.Socket, calls: int, warmup: int) -> Sample:
    """One awaited send and one awaited recv per call."""
    clock = time.perf_counter
    message = payload(0)
    for _ in range(warmup):
        await sock.send(message)
        await sock.recv()
    latencies = [0.0] * calls
    started = clock()
    for i in range(calls):
        t0 = clock()
        await sock.send(message)
        await sock.recv()
        latencies[i] = clock() - t0
    return latencies, clock() - started


async def raw_asyncio_futures(
    sock: zmq.asyncio.Socket, calls: int, concurrency: int, warmup: int
) -> Sample:
    """C tasks each await a future per call; one reader drains replies with NOBLOCK.

    Sends go through the asyncio socket (it re-checks ZMQ_EVENTS for a waiting recv);
    the reader awaits one recv (which checks ZMQ_EVENTS before sleeping), then drains
    with NOBLOCK through a shadow of the same socket, used by that task only.
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    waiting: dict[int, asyncio.Future[None]] = {}
    shadow: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)

    def resolve(frame: bytes) -> None:
        future = waiting.pop(request_id(frame), None)
        if future is not None and not future.done():
            future.set_result(None)

    async def reader() -> None:
        recv = shadow.recv
        while True:
            resolve(await sock.recv())
            while True:
                try:
                    frame = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                resolve(frame)

    async def run(total: int) -> tuple[list[float], float]:
        ids = itertools.count()
        latencies: list[float] = []
        record = latencies.append

        async def worker() -> None:
            while (i := next(ids)) < total:
                future = loop.create_future()
                waiting[i] = future
                t0 = clock()
                await sock.send(payload(i))
                await future
                record(clock() - t0)

        started = clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, clock() - started

    reading = asyncio.create_task(reader())
    try:
        await run(warmup)
        return await run(calls)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


# -- 3. mesh, async -----------------------------------------------------------------------


async def mesh_async_sequential(node: mesh.Node, calls: int, warmup: int) -> Sample:
    call, clock = node.call, time.perf_counter
    message = payload(0)
    for _ in range(warmup):
        await call("echo.say", message)
    latencies = [0.0] * calls
    started = clock()
    for i in range(calls):
        t0 = clock()
        await call("echo.say", message)
        latencies[i] = clock() - t0
    return latencies, clock() - started


async def mesh_async_concurrent(
    node: mesh.Node, calls: int, concurrency: int, warmup: int
) -> Sample:
    """C worker tasks, each making one call at a time until ``calls`` are done."""
    call, clock = node.call, time.perf_counter
    message = payload(0)

    async def run(total: int) -> tuple[list[float], float]:
        ids = itertools.count()
        latencies: list[float] = []
        record = latencies.append

        async def worker() -> None:
            while next(ids) < total:
                t0 = clock()
                await call("echo.say", message)
                record(clock() - t0)

        started = clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, clock() - started

    await run(warmup)
    return await run(calls)


# -- 4. mesh, blocking --------------------------------------------------------------------


def mesh_sync_sequential(client: mesh.sync.Client, calls: int, warmup: int) -> Sample:
    call, clock = client.call, time.perf_counter
    message = payload(0)
    for _ in range(warmup):
        call("echo.say", message)
    latencies = [0.0] * calls
    started = clock()
    for i in range(calls):
        t0 = clock()
        call("echo.say", message)
        latencies[i] = clock() - t0
    return latencies, clock() - started


# -- the run ------------------------------------------------------------------------------

#: key -> label in the table, in order.
LABELS = {
    "raw_blocking_sequential": "raw pyzmq blocking, sequential",
    "raw_blocking_pipelined": "raw pyzmq blocking, pipelined, C={c}",
    "raw_asyncio_sequential": "raw zmq.asyncio, sequential (awaited recv)",
    "raw_asyncio_futures": "raw zmq.asyncio, drained + future per call, C={c}",
    "mesh_async_sequential": "mesh Node.call, sequential",
    "mesh_async_concurrent": "mesh Node.call, C={c} concurrent",
    "mesh_sync_sequential": "mesh.sync Client.call, sequential",
    "mesh_curve_sequential": "mesh Node.call with CURVE, sequential",
    "mesh_curve_concurrent": "mesh Node.call with CURVE, C={c} concurrent",
    "raw_blocking_to_asyncio_sequential": "(ref) raw blocking client, asyncio server, seq",
}


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str
    denominator: str
    field: str
    target: float
    at_most: bool

    def value(self, figures: dict[str, Figure]) -> float:
        top = getattr(figures[self.numerator], self.field)
        bottom = getattr(figures[self.denominator], self.field)
        return float(top / bottom)

    def passes(self, value: float) -> bool:
        return value <= self.target if self.at_most else value >= self.target

    @property
    def target_text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.target:g}"


RATIOS = [
    Ratio(
        "mesh async p50 / raw zmq.asyncio sequential p50",
        "mesh_async_sequential", "raw_asyncio_sequential", "p50_us", 1.3, at_most=True,
    ),
    Ratio(
        "mesh async calls/s / raw drained asyncio with futures calls/s",
        "mesh_async_concurrent", "raw_asyncio_futures", "calls_per_s", 0.7, at_most=False,
    ),
    Ratio(
        "mesh blocking p50 / raw blocking pyzmq p50",
        "mesh_sync_sequential", "raw_blocking_sequential", "p50_us", 1.5, at_most=True,
    ),
]  # fmt: skip


Row = Callable[[int, int], Sample]
AsyncRow = Callable[[int, int], Awaitable[Sample]]


def _share(calls: int, warmup: int, rounds: int) -> tuple[int, int]:
    """Calls and warm-up calls of one round."""
    return max(1, calls // rounds), warmup // rounds


def alternate(rows: dict[str, Row], calls: int, warmup: int, rounds: int) -> dict[str, Figure]:
    """Run each row in turn, ``rounds`` times (``calls`` in all, each), and pool its
    runs: a row and the row it is compared with see the same moments of a machine
    whose speed drifts (by 20% or more from one minute to the next)."""
    share, warm = _share(calls, warmup, rounds)
    samples: dict[str, list[Sample]] = {key: [] for key in rows}
    for _ in range(rounds):
        for key, row in rows.items():
            samples[key].append(row(share, warm))
    return {key: pooled(runs) for key, runs in samples.items()}


async def alternate_async(
    rows: dict[str, AsyncRow], calls: int, warmup: int, rounds: int
) -> dict[str, Figure]:
    """:func:`alternate` for rows run on the event loop, each run bounded in time."""
    share, warm = _share(calls, warmup, rounds)
    samples: dict[str, list[Sample]] = {key: [] for key in rows}
    for _ in range(rounds):
        for key, row in rows.items():
            async with asyncio.timeout(PHASE_TIMEOUT):
                samples[key].append(await row(share, warm))
    return {key: pooled(runs) for key, runs in samples.items()}


async def _async_phases(
    raw_asyncio_address: str,
    echo_address: str,
    curve_address: str,
    secret: Path,
    mesh_name: str,
    args: argparse.Namespace,
) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    c = args.concurrency
    config = mesh.Config(name="bench-client", mesh=mesh_name, profile="local", host="127.0.0.1")
    context = zmq.asyncio.Context()
    try:
        sock = _async_dealer(context, raw_asyncio_address)
        try:
            async with mesh.Node(config) as node:
                await node.connect(echo_address)
                sequential: dict[str, AsyncRow] = {
                    "raw_asyncio_sequential": lambda n, w: raw_asyncio_sequential(sock, n, w),
                    "mesh_async_sequential": lambda n, w: mesh_async_sequential(node, n, w),
                }
                figures |= await alternate_async(sequential, args.calls, args.warmup, args.rounds)
                concurrent: dict[str, AsyncRow] = {
                    "raw_asyncio_futures": lambda n, w: raw_asyncio_futures(sock, n, c, w),
                    "mesh_async_concurrent": lambda n, w: mesh_async_concurrent(node, n, c, w),
                }
                figures |= await alternate_async(
                    concurrent, args.throughput_calls, args.warmup, args.rounds
                )
        finally:
            sock.close(linger=0)
    finally:
        context.term()
    async with mesh.Node(config.replace(secret_file=secret)) as node:
        await node.connect(curve_address)
        async with asyncio.timeout(PHASE_TIMEOUT):
            figures["mesh_curve_sequential"] = figure(
                *await mesh_async_sequential(node, args.calls, args.warmup)
            )
        async with asyncio.timeout(PHASE_TIMEOUT):
            figures["mesh_curve_concurrent"] = figure(
                *await mesh_async_concurrent(node, args.throughput_calls, c, args.warmup)
            )
    return figures


def measure(args: argparse.Namespace) -> dict[str, Figure]:
    """Start the three servers, run every phase, end the servers."""
    mesh_name = f"bench-{os.getpid()}"
    raw = [sys.executable, "-m", "tests.bench._raw_servers"]
    client_cpus, server_cpus = placement(args.pin)
    figures: dict[str, Figure] = {}
    with contextlib.ExitStack() as stack:
        errors = stack.enter_context(tempfile.TemporaryFile())
        secret = mesh.write_secret(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "s")
        # All servers start before this process makes any zmq context (no threads at fork).
        raw_blocking = stack.enter_context(
            server([*raw, "blocking", "0"], dict(os.environ), errors, server_cpus)
        )
        raw_asyncio = stack.enter_context(
            server([*raw, "asyncio", "0"], dict(os.environ), errors, server_cpus)
        )
        echo = stack.enter_context(
            server(
                [sys.executable, "-m", "nodes.echo"], _server_env(mesh_name), errors, server_cpus
            )
        )
        curve = stack.enter_context(
            server(
                [sys.executable, "-m", "nodes.echo"],
                _server_env(mesh_name, secret),
                errors,
                server_cpus,
            )
        )
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)  # before any zmq context: its threads inherit

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        config = mesh.Config(name="bench-sync", mesh=mesh_name, profile="local")
        sock = _blocking_dealer(context, raw_blocking)
        # A reference, in no ratio: a blocking caller to an asyncio server (what
        # mesh.sync against a node is, minus mesh), the floor of the third ratio.
        ref = _blocking_dealer(context, raw_asyncio)
        try:
            with mesh.sync.connect(echo, config=config) as client:
                sequential: dict[str, Row] = {
                    "raw_blocking_sequential": lambda n, w: raw_blocking_sequential(sock, n, w),
                    "mesh_sync_sequential": lambda n, w: mesh_sync_sequential(client, n, w),
                    "raw_blocking_to_asyncio_sequential": (
                        lambda n, w: raw_blocking_sequential(ref, n, w)
                    ),
                }
                figures |= alternate(sequential, args.calls, args.warmup, args.rounds)
            figures["raw_blocking_pipelined"] = figure(
                *raw_blocking_pipelined(sock, args.throughput_calls, args.concurrency, args.warmup)
            )
        finally:
            sock.close(linger=0)
            ref.close(linger=0)
            context.term()

        figures |= asyncio.run(_async_phases(raw_asyncio, echo, curve, secret, mesh_name, args))
    return {key: figures[key] for key in LABELS}


def report(figures: dict[str, Figure], args: argparse.Namespace) -> dict[str, Any]:
    ratios = {}
    for ratio in RATIOS:
        value = ratio.value(figures)
        ratios[ratio.name] = {
            "value": value,
            "target": ratio.target_text,
            "pass": ratio.passes(value),
        }
    return {
        "parameters": {
            "calls": args.calls,
            "throughput_calls": args.throughput_calls,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "pinned": args.pin,
            "payload_bytes": PAYLOAD_BYTES,
            "python": sys.version.split()[0],
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "cpus": os.cpu_count(),
        },
        "figures": {key: asdict(value) for key, value in figures.items()},
        "ratios": ratios,
        "curve_cost": {
            "p50": figures["mesh_curve_sequential"].p50_us
            / figures["mesh_async_sequential"].p50_us,
            "calls_per_s": figures["mesh_curve_concurrent"].calls_per_s
            / figures["mesh_async_concurrent"].calls_per_s,
        },
    }


def print_table(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    c = result["parameters"]["concurrency"]
    head = "measurement (100-byte echo, 127.0.0.1)"
    out(f"{head:<48} {'p50 us':>9} {'p99 us':>9} {'calls/s':>10}")
    for key, label in LABELS.items():
        f = result["figures"][key]
        label = label.format(c=c)
        out(f"{label:<48} {f['p50_us']:>9.1f} {f['p99_us']:>9.1f} {f['calls_per_s']:>10,.0f}")
    out("")
    for name, r in result["ratios"].items():
        verdict = "PASS" if r["pass"] else "FAIL"
        out(f"{name:<64} {r['value']:>6.2f}  (target {r['target']:<6}) {verdict}")
    cost = result["curve_cost"]
    out(
        f"CURVE cost: call p50 x{cost['p50']:.2f}, calls/s x{cost['calls_per_s']:.2f}"
        " (with a shared secret, against the same node without)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.rpc",
        description="mesh RPC against raw pyzmq in one run (100-byte echo on 127.0.0.1).",
    )
    parser.add_argument("--calls", type=counted(1), default=5000, help="sequential calls")
    parser.add_argument(
        "--throughput-calls", type=counted(1), default=20000, help="calls per throughput run"
    )
    parser.add_argument("--concurrency", type=counted(1), default=100, help="calls in flight")
    parser.add_argument("--warmup", type=counted(0), default=500, help="warm-up calls each")
    parser.add_argument(
        "--rounds",
        type=counted(1),
        default=5,
        help="runs of each compared row, taken in turn (their calls pooled)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="pin this process to one CPU and every server to another",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses")
    parser.add_argument(
        "--time-limit", type=counted(1), default=RUN_LIMIT, help="seconds for the whole run"
    )
    args = parser.parse_args(argv)

    return run(args, measure, report, print_table)


if __name__ == "__main__":
    sys.exit(main())
