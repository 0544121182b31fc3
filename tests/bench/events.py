"""mesh events against raw pyzmq PUB/SUB, in one run, on 127.0.0.1, 100-byte events.

python -m tests.bench.events [--events N] [--yield-every K] [--json] [--pin] [--check]
                             [--only ROW ...] [--sub-queue Q] [--profile-dir DIR]
                             [--time-limit S]

Each row runs a publisher process and a subscriber process (both started here, ended
by PID with SIGTERM then SIGKILL, whatever happens); this process only orchestrates
them through their standard input and output. The rows:

1. raw pyzmq, blocking: a PUB sending in a loop -> a SUB with a blocking ``recv`` loop
   (the reference ceiling).
2. raw zmq.asyncio, drained (the baseline of the ratio): a zmq.asyncio PUB with one
   ``await sock.send`` per event (a yield to the loop every K events) -> a zmq.asyncio
   SUB that, per wake-up, reads every ready message with NOBLOCK until zmq.Again, then
   awaits readiness again. This is the "raw zmq.asyncio, drain every ready message per
   wake-up" of the design notes (275k events/s there), which the goal refers to.
3. reference: a zmq.asyncio PUB sending NOBLOCK through a shadow of the socket (no
   await, no asyncio send path: a stronger publisher than zmq.asyncio offers) -> the
   SUB of 2.
4. reference: the PUB of 3 -> a zmq.asyncio SUB with one awaited ``recv`` per message.
5. mesh: a ``mesh.Node`` doing ``await node.publish("bench.t", payload)`` in a loop with
   a yield to the loop every K events (the bus batches one topic's events of a loop turn
   into one PUB message, as under load) -> a ``mesh.Node`` reading
   ``async for event in node.subscribe("bench.")``.
6. the same with a yield after every event (no batching: one PUB message per event).

How a row runs: the publisher binds and prints its address; the subscriber connects (a
mesh subscriber joins with the publisher as its seed and waits until its SUB socket
follows one publisher) and says so; the publisher sends a warm-up event every 10 ms
until the subscriber has received one; then, told "go", it sends N events as fast as it
can, then end markers: the first right behind the last event, then one every 5 ms
until told to stop (PUB drops at the high-water mark). The subscriber counts the events
it receives until an end marker arrives. Times are CLOCK_MONOTONIC, shared by all
processes on Linux:

- published/s: N / (the publisher's last send - its first);
- delivered/s: events received / (end marker received - the publisher's first send);
- dropped: 1 - received / N (PUB/SUB drops at the high-water mark; a mesh
  subscription drops past its ``maxsize``, by default limits.max_subscription_queue);
- CPU per event of each process (its zmq I/O thread included), the steadier figure on
  a shared machine: the publisher's over its sending, divided by N; the subscriber's
  from the warm-up event to the end marker, divided by the events it received.

Then the ratio mesh delivered/s / raw drained zmq.asyncio delivered/s (goal >= 0.8),
the same against the NOBLOCK-send reference (no goal) and for the unbatched mesh row (no
goal). Absolute numbers drift by 20% or
more on a shared machine: only figures of one run compare. Exits 0 whatever the ratio,
unless ``--check`` is given (then 1 when it misses). ``--sub-queue`` sets the mesh
subscription's ``maxsize``; ``--profile-dir`` runs each subscriber under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import select
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.asyncio

import mesh
from tests.bench._harness import counted, placement, run
from tests.bench.rpc import _end
from tests.programs import ROOT, before_exec

PAYLOAD_BYTES = 100
#: The high-water mark of the raw sockets: mesh's default (Limits.send_hwm, recv_hwm).
HWM = 100_000
TOPIC = "bench.t"
PREFIX = "bench."
#: The first byte of a payload says what it is; measured events are the rest.
WARM, MEASURED, END = b"W"[0], b"M"[0], b"E"[0]
WARM_EVERY = 0.01
END_EVERY = 0.005
#: How long the blocking subscriber's recv may wait before it gives up (ms); the others
#: are bounded by the phase timeout here (and ended by PID).
RECV_TIMEOUT_MS = 20_000
START_TIMEOUT = 20.0
#: Bound on one row's measured phase: this, plus a second per 20,000 events.
PHASE_TIMEOUT = 60.0
#: Default bound on the whole run (SIGALRM); the smoke test gives the process 110 s.
RUN_LIMIT = 300


def payload(kind: int) -> bytes:
    return bytes([kind]) + b"x" * (PAYLOAD_BYTES - 1)


# -- the rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    #: Publisher: "blocking", "asyncio", "asyncio-awaited" or "mesh"; subscriber:
    #: "blocking", "drained", "awaited" or "mesh".
    pub: str
    sub: str
    #: Events between two yields to the loop (asyncio publishers); None: --yield-every.
    yield_every: int | None = None


#: key -> row, in order.
ROWS = {
    "raw_blocking": Row("raw pyzmq blocking PUB -> blocking SUB", "blocking", "blocking"),
    "raw_asyncio_drained": Row(
        "raw zmq.asyncio await send -> SUB drained", "asyncio-awaited", "drained"
    ),
    "raw_asyncio_nowait_drained": Row(
        "(ref) raw zmq.asyncio NOBLOCK send -> SUB drained", "asyncio", "drained"
    ),
    "raw_asyncio_awaited": Row(
        "(ref) raw zmq.asyncio NOBLOCK send -> SUB awaited recv", "asyncio", "awaited"
    ),
    "mesh_batched": Row("mesh publish (yield every {k}) -> subscribe", "mesh", "mesh"),
    "mesh_unbatched": Row("mesh publish (yield every event) -> subscribe", "mesh", "mesh", 1),
}  # fmt: skip
LABELS = {key: row.label for key, row in ROWS.items()}


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str
    denominator: str
    target: float | None

    def passes(self, value: float) -> bool:
        return self.target is None or value >= self.target

    @property
    def target_text(self) -> str:
        return "-" if self.target is None else f">= {self.target:g}"


RATIOS = [
    Ratio(
        "mesh delivered/s / raw drained zmq.asyncio delivered/s",
        "mesh_batched", "raw_asyncio_drained", 0.8,
    ),
    Ratio(
        "mesh delivered/s / raw NOBLOCK-send drained delivered/s",
        "mesh_batched", "raw_asyncio_nowait_drained", None,
    ),
    Ratio(
        "mesh unbatched delivered/s / raw drained zmq.asyncio delivered/s",
        "mesh_unbatched", "raw_asyncio_drained", None,
    ),
]  # fmt: skip


@dataclass(frozen=True)
class Figure:
    """One row: what was sent and received, how fast, and at what CPU cost."""

    sent: int
    received: int
    published_per_s: float
    delivered_per_s: float
    dropped_fraction: float
    pub_cpu_us: float
    sub_cpu_us: float
    #: mesh only: events its subscription dropped (queue full; warm-up and end markers
    #: included), and events its node counted as missing from the publisher's sequence.
    sub_queue_dropped: int = 0
    gaps_counted: int = 0


def figure(done: dict[str, Any], result: dict[str, Any]) -> Figure:
    sent, received = int(done["sent"]), int(result["received"])
    start = float(done["start"])
    return Figure(
        sent=sent,
        received=received,
        published_per_s=sent / max(float(done["end"]) - start, 1e-9),
        delivered_per_s=received / max(float(result["last"]) - start, 1e-9),
        dropped_fraction=1.0 - received / sent,
        pub_cpu_us=float(done["cpu"]) / sent * 1e6,
        sub_cpu_us=float(result["cpu"]) / max(received, 1) * 1e6,
        sub_queue_dropped=int(result.get("queue_dropped", 0)),
        gaps_counted=int(result.get("gaps", 0)),
    )


# -- the child processes: publishers and subscribers --------------------------------------


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


class _Commands:
    """Lines from standard input (the benchmark's commands), read without blocking."""

    def __init__(self) -> None:
        self._buffer = b""
        self._eof = False

    def poll(self, timeout: float) -> str | None:
        """The next line, "" at end of input, None if none came within ``timeout``."""
        while b"\n" not in self._buffer:
            if self._eof:
                return ""
            if not select.select([0], [], [], timeout)[0]:
                return None
            chunk = os.read(0, 4096)
            if not chunk:
                self._eof = True
            self._buffer += chunk
            timeout = 0
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()


def _chunks(total: int, size: int) -> Iterator[int]:
    full, rest = divmod(total, size)
    yield from itertools.repeat(size, full)
    if rest:
        yield rest


def _raw_socket(context: Any, kind: int) -> Any:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return sock


def _bind(sock: Any) -> str:
    sock.bind("tcp://127.0.0.1:*")
    return str(sock.getsockopt(zmq.LAST_ENDPOINT).decode())


def pub_blocking(events: int) -> None:
    context = zmq.Context()
    sock = _raw_socket(context, zmq.PUB)
    _say("ready", address=_bind(sock))
    commands = _Commands()
    send, warm, event, end = sock.send, payload(WARM), payload(MEASURED), payload(END)
    while (line := commands.poll(WARM_EVERY)) is None:
        send(warm)
    if line != "go":
        return
    cpu, start = time.process_time(), time.monotonic()
    for _ in range(events):
        send(event)
    finish, cpu = time.monotonic(), time.process_time() - cpu
    send(end)
    _say("done", sent=events, start=start, end=finish, cpu=cpu)
    while commands.poll(END_EVERY) is None:
        send(end)


async def pub_asyncio(events: int, yield_every: int, awaited: bool) -> None:
    """A zmq.asyncio PUB yielding to the loop every ``yield_every`` events; it sends with
    NOBLOCK through a shadow of the socket (a PUB never blocks: it drops at the
    high-water mark), or with ``awaited``, one ``await sock.send`` per event."""
    context = zmq.asyncio.Context()
    sock = _raw_socket(context, zmq.PUB)
    _say("ready", address=_bind(sock))
    commands = _Commands()
    warm, event, end = payload(WARM), payload(MEASURED), payload(END)
    if awaited:
        send = sock.send
    else:
        raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        raw_send, noblock = raw.send, zmq.NOBLOCK

        async def send(message: bytes) -> None:
            raw_send(message, noblock)

    while (line := commands.poll(0)) is None:
        await send(warm)
        await asyncio.sleep(WARM_EVERY)
    if line != "go":
        return
    cpu, start = time.process_time(), time.monotonic()
    if awaited:
        for size in _chunks(events, yield_every):
            for _ in range(size):
                await send(event)
            await asyncio.sleep(0)
    else:
        for size in _chunks(events, yield_every):
            for _ in range(size):
                raw_send(event, noblock)
            await asyncio.sleep(0)
    finish, cpu = time.monotonic(), time.process_time() - cpu
    await send(end)
    _say("done", sent=events, start=start, end=finish, cpu=cpu)
    while commands.poll(0) is None:
        await send(end)
        await asyncio.sleep(END_EVERY)


def _mesh_config(name: str, mesh_name: str, seeds: tuple[str, ...] = ()) -> Any:
    return mesh.Config(
        name=name,
        mesh=mesh_name,
        profile="test",
        discovery=False,
        host="127.0.0.1",
        seeds=seeds,
    )


async def pub_mesh(events: int, yield_every: int, mesh_name: str) -> None:
    async with mesh.Node(_mesh_config("bench-pub", mesh_name)) as node:
        _say("ready", address=node.address)
        commands = _Commands()
        publish, warm, event, end = node.publish, payload(WARM), payload(MEASURED), payload(END)
        while (line := commands.poll(0)) is None:
            await publish(TOPIC, warm)
            await asyncio.sleep(WARM_EVERY)
        if line != "go":
            return
        cpu, start = time.process_time(), time.monotonic()
        for size in _chunks(events, yield_every):
            for _ in range(size):
                await publish(TOPIC, event)
            await asyncio.sleep(0)  # the bus sends this turn's batch
        finish, cpu = time.monotonic(), time.process_time() - cpu
        await publish(TOPIC, end)
        _say("done", sent=events, start=start, end=finish, cpu=cpu)
        while commands.poll(0) is None:
            await publish(TOPIC, end)
            await asyncio.sleep(END_EVERY)


def _sub_socket(context: Any, address: str) -> Any:
    sock = _raw_socket(context, zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    return sock


def _result(received: int, cpu: float, **fields: Any) -> None:
    last = time.monotonic()
    _say("result", received=received, last=last, cpu=time.process_time() - cpu, **fields)


def sub_blocking(address: str) -> None:
    context = zmq.Context()
    sock = _sub_socket(context, address)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    _say("ready")
    recv = sock.recv
    while recv()[0] != WARM:
        pass
    _say("warm")
    cpu, received = time.process_time(), 0
    while True:
        kind = recv()[0]
        if kind == MEASURED:
            received += 1
        elif kind == END:
            break
    _result(received, cpu)


async def sub_drained(address: str) -> None:
    """Await readiness (the awaited recv checks ZMQ_EVENTS before it sleeps), then read
    with NOBLOCK through a shadow of the same socket until zmq.Again."""
    context = zmq.asyncio.Context()
    sock = _sub_socket(context, address)
    _say("ready")
    while (await sock.recv())[0] != WARM:
        pass
    _say("warm")
    raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
    recv, noblock = raw.recv, zmq.NOBLOCK
    cpu, received = time.process_time(), 0
    while True:
        message = await sock.recv()
        while True:
            kind = message[0]
            if kind == MEASURED:
                received += 1
            elif kind == END:
                _result(received, cpu)
                return
            try:
                message = recv(noblock)
            except zmq.Again:
                break


async def sub_awaited(address: str) -> None:
    context = zmq.asyncio.Context()
    sock = _sub_socket(context, address)
    _say("ready")
    while (await sock.recv())[0] != WARM:
        pass
    _say("warm")
    recv = sock.recv
    cpu, received = time.process_time(), 0
    while True:
        kind = (await recv())[0]
        if kind == MEASURED:
            received += 1
        elif kind == END:
            break
    _result(received, cpu)


async def sub_mesh(address: str, mesh_name: str, maxsize: int | None) -> None:
    async with mesh.Node(_mesh_config("bench-sub", mesh_name, (address,))) as node:
        subscription = node.subscribe(PREFIX, maxsize=maxsize)
        deadline = time.monotonic() + START_TIMEOUT
        while (stats := node.statistics().events) is None or stats.following < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the subscriber follows no publisher in {START_TIMEOUT} s")
            await asyncio.sleep(0.01)
        _say("ready")
        async for event in subscription:
            if event.data[0] == WARM:
                break
        _say("warm")
        cpu, received = time.process_time(), 0
        async for event in subscription:
            kind = event.data[0]
            if kind == MEASURED:
                received += 1
            elif kind == END:
                break
        stats = node.statistics().events
        _result(
            received,
            cpu,
            queue_dropped=subscription.dropped,
            gaps=0 if stats is None else stats.dropped - subscription.dropped,
        )


def _watchdog(seconds: float) -> None:
    timer = threading.Timer(seconds, os._exit, args=(3,))
    timer.daemon = True
    timer.start()


def child(args: argparse.Namespace) -> None:
    """One publisher or subscriber (``--child pub|sub``)."""
    _watchdog(args.max_seconds)
    kind = args.kind
    run: Callable[[], Any]
    if args.child == "pub":
        if kind == "blocking":
            pub_blocking(args.events)
            return
        run = (
            (lambda: pub_mesh(args.events, args.yield_every, args.mesh))
            if kind == "mesh"
            else (lambda: pub_asyncio(args.events, args.yield_every, kind == "asyncio-awaited"))
        )
    else:
        if kind == "blocking":
            sub_blocking(args.address)
            return
        run = {
            "drained": lambda: sub_drained(args.address),
            "awaited": lambda: sub_awaited(args.address),
            "mesh": lambda: sub_mesh(args.address, args.mesh, args.sub_queue),
        }[kind]
    if args.profile_to:
        import cProfile

        with cProfile.Profile() as profile:
            asyncio.run(run())
        profile.dump_stats(args.profile_to)
    else:
        asyncio.run(run())


# -- the run ------------------------------------------------------------------------------


class _Process:
    """A child process and the JSON lines it prints (read unbuffered, with deadlines)."""

    def __init__(self, argv: list[str], errors: IO[bytes], cpus: set[int] | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.argv = argv
        self._errors = errors
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            bufsize=0,
            preexec_fn=before_exec(cpus) if sys.platform == "linux" else None,
        )
        self._buffer = b""

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line announcing ``event`` within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    text = line.decode(errors="replace").strip()
                    if text.startswith("{"):
                        message = json.loads(text)
                        if message.get("event") == event:
                            return dict(message)
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self._fail(f"no {event!r} line within {timeout:g} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._fail(f"exited with {self.proc.wait(5)} before {event!r}")
                self._buffer += chunk

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(command.encode() + b"\n")

    def _fail(self, problem: str) -> None:
        self._errors.flush()
        self._errors.seek(0)
        detail = self._errors.read().decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{' '.join(self.argv[3:])} (pid {self.proc.pid}): {problem}\n{detail}")

    def end(self) -> None:
        _end(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@contextlib.contextmanager
def process(argv: list[str], errors: IO[bytes], cpus: set[int] | None) -> Iterator[_Process]:
    started = _Process(argv, errors, cpus)
    try:
        yield started
    finally:
        started.end()


def measure_row(key: str, args: argparse.Namespace, errors: IO[bytes]) -> Figure:
    row = ROWS[key]
    mesh_name = f"bench-events-{os.getpid()}-{key}".replace("_", "-")
    pub_cpus, sub_cpus = placement(args.pin)
    base = [sys.executable, "-m", "tests.bench.events", "--child"]
    common = ["--mesh", mesh_name, "--max-seconds", str(args.time_limit + 30)]
    yield_every = row.yield_every or args.yield_every
    pub_argv = [*base, "pub", "--kind", row.pub, "--events", str(args.events)]
    pub_argv += ["--yield-every", str(yield_every), *common]
    with process(pub_argv, errors, pub_cpus) as pub:
        address = pub.expect("ready", START_TIMEOUT)["address"]
        sub_argv = [*base, "sub", "--kind", row.sub, "--address", address, *common]
        if args.sub_queue:
            sub_argv += ["--sub-queue", str(args.sub_queue)]
        if args.profile_dir:
            sub_argv += ["--profile-to", str(Path(args.profile_dir) / f"{key}.sub.prof")]
        with process(sub_argv, errors, sub_cpus) as sub:
            sub.expect("ready", START_TIMEOUT)
            sub.expect("warm", START_TIMEOUT)
            pub.tell("go")
            phase = PHASE_TIMEOUT + args.events / 20_000
            done = pub.expect("done", phase)
            result = sub.expect("result", phase)
            pub.tell("stop")
            if args.profile_dir:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sub.proc.wait(10)  # let it write its profile
    return figure(done, result)


def measure(args: argparse.Namespace) -> dict[str, Figure]:
    keys = args.only or list(ROWS)
    with tempfile.TemporaryFile() as errors:
        return {key: measure_row(key, args, errors) for key in ROWS if key in keys}


def report(figures: dict[str, Figure], args: argparse.Namespace) -> dict[str, Any]:
    ratios = {}
    for ratio in RATIOS:
        if ratio.numerator in figures and ratio.denominator in figures:
            value = (
                figures[ratio.numerator].delivered_per_s
                / figures[ratio.denominator].delivered_per_s
            )
            ratios[ratio.name] = {
                "value": value,
                "target": ratio.target_text,
                "pass": ratio.passes(value),
            }
    return {
        "parameters": {
            "events": args.events,
            "yield_every": args.yield_every,
            "pinned": args.pin,
            "payload_bytes": PAYLOAD_BYTES,
            "hwm": HWM,
            "sub_queue": args.sub_queue or mesh.Limits().max_subscription_queue,
            "python": sys.version.split()[0],
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "cpus": os.cpu_count(),
        },
        "figures": {key: asdict(value) for key, value in figures.items()},
        "ratios": ratios,
    }


def print_table(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    k = result["parameters"]["yield_every"]
    head = f"measurement ({PAYLOAD_BYTES}-byte events, 127.0.0.1)"
    out(
        f"{head:<56} {'sent':>8} {'published/s':>12} {'delivered/s':>12} {'dropped':>8}"
        f" {'pub us/ev':>9} {'sub us/ev':>9}"
    )
    for key, f in result["figures"].items():
        label = LABELS[key].format(k=k)
        out(
            f"{label:<56} {f['sent']:>8,} {f['published_per_s']:>12,.0f}"
            f" {f['delivered_per_s']:>12,.0f} {f['dropped_fraction']:>8.1%}"
            f" {f['pub_cpu_us']:>9.2f} {f['sub_cpu_us']:>9.2f}"
        )
    out("")
    for name, r in result["ratios"].items():
        verdict = "" if r["target"] == "-" else ("PASS" if r["pass"] else "FAIL")
        out(f"{name:<66} {r['value']:>6.2f}  (target {r['target']:<6}) {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.events",
        description="mesh events against raw pyzmq PUB/SUB in one run (100-byte events).",
    )
    parser.add_argument("--events", type=counted(1), default=200_000, help="events per row")
    parser.add_argument(
        "--yield-every",
        type=counted(1),
        default=100,
        help="events an asyncio publisher sends between two yields to the loop",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="pin every publisher to one CPU and every subscriber to another",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the ratio misses")
    parser.add_argument(
        "--only", action="append", choices=list(ROWS), help="run only this row (repeatable)"
    )
    parser.add_argument(
        "--time-limit", type=counted(1), default=RUN_LIMIT, help="seconds for the whole run"
    )
    parser.add_argument(
        "--sub-queue",
        type=counted(1),
        help="maxsize of the mesh subscription (default: limits.max_subscription_queue)",
    )
    parser.add_argument(
        "--profile-dir", help="run each subscriber under cProfile, stats into DIR/<row>.sub.prof"
    )
    # The child processes (internal).
    parser.add_argument("--child", choices=["pub", "sub"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--mesh", default="bench-events", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=RUN_LIMIT, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    return run(args, measure, report, print_table)


if __name__ == "__main__":
    sys.exit(main())
