"""``meshctl demo``: a small mesh of node processes on loopback: listed, called, stopped.

The nodes are the programs of ``nodes/`` (calc, echo, kv, clock, then plain ones), each
a process of its own on 127.0.0.1 under a mesh name of the demo's own, with discovery
off: each node after the first joins through the first as its seed. The tour looks in
as meshctl does, with a :class:`mesh.Client` that never joins; the listings are printed
by ``meshctl nodes`` and ``meshctl services`` themselves, run in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import mesh


READY_TIMEOUT = 20.0
#: The node programs the demo runs, in order (and the names of their nodes); more
#: nodes than these run nodes.plain.
PROGRAMS = (
    ("nodes.calc", "calc-1"),
    ("nodes.echo", "echo-1"),
    ("nodes.kv", "kv-1"),
    ("nodes.clock", "clock-1"),
)
#: How often the clock ticks in the demo (seconds), and how many ticks the tour shows.
CLOCK_INTERVAL = 0.25
TICKS = 3
#: How long the tour waits for the events it expects before it goes on without them.
EVENTS_WAIT = 2.0
#: Signals that stop the demo and its nodes as Ctrl-C (SIGINT) does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@click.command()
@click.option(
    "--nodes",
    "count",
    default=len(PROGRAMS),
    show_default=True,
    type=click.IntRange(1, 20),
    help="How many node processes to start (calc, echo, kv, clock, then plain ones).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the mesh running after the tour, until Ctrl-C, and print meshctl "
    "commands to try on it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def demo(count: int, keep: bool, as_json: bool) -> None:
    """Start a mesh of node processes on 127.0.0.1, list it, call it, stop it cleanly.

    The nodes run the programs of nodes/ under a mesh name of their own (demo-xxxxxx),
    so the demo never mixes with another mesh, with discovery off: each node after the
    first joins through the first as its seed. The tour prints what meshctl nodes and
    meshctl services print, makes some calls, reads a stream and follows some events;
    then every node is stopped with SIGTERM and must exit 0.
    """
    # The demo's mesh is its own: settings meant for another mesh (a secret, seeds, a
    # mesh name) must reach neither its nodes nor the nodes and services commands run
    # here. They are put back at the end (the demo may run inside another program).
    saved = {v: os.environ.pop(v) for v in [v for v in os.environ if v.startswith("MESH_")]}
    # SIGTERM and SIGHUP (a closed terminal) stop the demo as Ctrl-C does: its nodes are
    # stopped in _demo's finally. Unhandled, they ended this process there and then.
    handlers = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        _demo(count, keep, as_json)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.environ.update(saved)


def _interrupt(signum: int, frame: object) -> None:
    for sig in STOP_SIGNALS:  # stopping already: another one must not cut that short
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _demo(count: int, keep: bool, as_json: bool) -> None:
    began = time.perf_counter()
    mesh_name = f"demo-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[str]] = []
    names: list[str] = []
    kept = 0.0
    try:
        first = _start(procs, names, _program(0), mesh_name, seeds="")
        seed = first["address"]
        for i in range(1, count):
            _start(procs, names, _program(i), mesh_name, seeds=seed, wait=False)
        for proc, name in zip(procs[1:], names[1:], strict=True):
            ready = _read_json(proc)
            if ready.get("event") != "ready":
                raise click.ClickException(f"node {name} did not start: {ready}")
            joined = _read_json(proc)
            if joined.get("event") != "connected":
                raise click.ClickException(f"node {name} could not join: {joined.get('error')}")
        result = asyncio.run(_tour(mesh_name, seed, names, as_json))
        if keep:
            offered = {name for n in result["nodes"] for name in n["services"]}
            tries = _tries(mesh_name, seed, offered)
            kept = _keep(procs, names, mesh_name, tries, result if as_json else None)
    finally:
        codes = _stop(procs)
    if any(code != 0 for code in codes):
        raise click.ClickException(
            "nodes exited with " + ", ".join(f"{n}: {c}" for n, c in zip(names, codes, strict=True))
        )
    seconds = round(time.perf_counter() - began - kept, 2)
    if as_json:
        end = {"left_cleanly": len(codes), "seconds": seconds}
        click.echo(json.dumps(end if keep else {**result, **end}, default=repr))
    else:
        took = "" if keep else f"; the demo took {seconds:.1f} s"
        click.echo(f"\nall {_plural(len(codes), 'node')} left cleanly (exit 0 after SIGTERM){took}")


def _program(i: int) -> tuple[str, str]:
    if i < len(PROGRAMS):
        return PROGRAMS[i]
    return "nodes.plain", f"plain-{i - len(PROGRAMS) + 1}"


def _start(
    procs: list[subprocess.Popen[str]],
    names: list[str],
    program: tuple[str, str],
    mesh_name: str,
    seeds: str,
    wait: bool = True,
) -> dict[str, Any]:
    """Start one node program; with ``wait``, return its ready line."""
    module, name = program
    env = dict(os.environ)
    env.update(
        MESH_NAME=mesh_name,
        MESH_NODE_NAME=name,
        MESH_PROFILE="local",
        MESH_HOST="127.0.0.1",
        MESH_SEEDS=seeds,
        MESH_DISCOVERY="off",  # seeds only: nothing is announced, on any network
        CLOCK_INTERVAL=str(CLOCK_INTERVAL),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_end_with_parent,
    )
    procs.append(proc)
    names.append(name)
    if not wait:
        return {}
    ready = _read_json(proc)
    if ready.get("event") != "ready":
        raise click.ClickException(f"node {name} did not start: {ready}")
    return ready


def _end_with_parent() -> None:
    """In the node's process before exec: get SIGTERM when the demo dies, even by
    SIGKILL, which no handler sees (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise click.ClickException(f"node process {proc.pid} exited with {proc.wait()}")
        if line.startswith("{"):
            return dict(json.loads(line))
    raise click.ClickException(f"node process {proc.pid} said nothing in {READY_TIMEOUT} s")


async def _tour(mesh_name: str, seed: str, names: list[str], as_json: bool) -> dict[str, Any]:
    """Look in as meshctl does (a :class:`mesh.Client` through the first node, which
    never joins): wait until gossip lists every node with its stats, list nodes and
    services, make some calls, read a stream, and show the events they caused."""
    import mesh  # the slow import of a meshctl run, only when it runs (cli/main.py)

    say = _quiet if as_json else click.echo
    config = mesh.Config(mesh=mesh_name, profile="local", seeds=(seed,), discovery=False)
    started = time.perf_counter()
    async with mesh.Client(config) as client:
        members = await client.members(fresh=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _settled(members, len(names)):
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the mesh listed {len(members)} of {len(names)} nodes within "
                    f"{READY_TIMEOUT:g} s"
                )
            await asyncio.sleep(0.05)
            members = await client.members(fresh=True)
        listed_ms = _ms(started)
        nodes = [_node_row(m) for m in sorted(members, key=lambda m: m.name)]
        offered = {name for n in nodes for name in n["services"]}
        who = {m.id: m.name for m in members}
        # Subscribed early: PUB/SUB is at-most-once, and the SUB socket needs a moment to
        # follow each publisher (docs/events.md), which the listings below give it.
        ticks = await client.subscribe("clock.")
        changes = await client.subscribe("kv.")
        say(
            f"mesh {mesh_name}: {_plural(len(nodes), 'node')} on 127.0.0.1, listed by gossip "
            f"through {seed} in {listed_ms:.0f} ms"
        )
        at = ["--seed", seed, "--mesh", mesh_name]
        if not as_json:
            for command in ("nodes", "services"):
                say(f"\n$ meshctl {command} {' '.join(at)}")
                await asyncio.to_thread(_meshctl, command, *at, "--profile", "local")
        services = [s.to_json() for s in (await client.services()).values()]

        first_tick: list[mesh.Event] = []
        if "clock" in offered:  # a first tick: the SUB socket follows the publishers
            first_tick = await _next_events(ticks, 1, EVENTS_WAIT)
        else:
            await asyncio.sleep(0.2)
        plan: list[tuple[str, tuple[Any, ...], float]] = []
        if "calc" in offered:
            plan += [
                ("calc.add", (2, 3), 5.0),
                ("calc.mul", (6, 7), 5.0),
                ("calc.div", (1, 0), 5.0),
                ("calc.slow", (5,), 0.2),
            ]
        if "echo" in offered:
            plan.append(("echo.say", ("hello, mesh",), 5.0))
        if "kv" in offered:
            plan += [
                ("kv.set", ("greeting", "hello"), 5.0),
                ("kv.set", ("visits", 1), 5.0),
                ("kv.get", ("greeting",), 5.0),
                ("kv.keys", (), 5.0),
                ("kv.delete", ("visits",), 5.0),
            ]
        if "clock" in offered:
            plan.append(("clock.now", (), 5.0))
        calls = []
        if plan:
            say("\ncalls, each routed to the node that offers the service:")
        for target, args, timeout in plan:
            call = await _call(client, target, *args, timeout=timeout)
            calls.append(call)
            say("  " + _call_line(call))

        stream = None
        if "calc" in offered:
            async with await client.stream("calc.count", 5) as items:
                stream = {"target": "calc.count", "args": [5], "items": [x async for x in items]}
            say(f"\nstream calc.count(5): {' '.join(str(x) for x in stream['items'])}")

        kv_changes = sum(1 for c in calls if c["target"] in ("kv.set", "kv.delete"))
        seen = await _next_events(changes, kv_changes, EVENTS_WAIT)
        if "clock" in offered:
            seen += first_tick + await _next_events(ticks, TICKS - len(first_tick), EVENTS_WAIT)
        events = [
            {
                "topic": e.topic,
                "data": e.data,
                "publisher": e.publisher,
                "publisher_name": who.get(e.publisher, ""),
                "seq": e.seq,
                "timestamp": e.timestamp,
            }
            for e in sorted(seen, key=lambda e: e.timestamp)
        ]
        if events:
            say("\nevents (client.subscribe('kv.') and client.subscribe('clock.')):")
            for event in events:
                say("  " + _event_line(event))
    return {
        "mesh": mesh_name,
        "via": seed,
        "listed_ms": listed_ms,
        "nodes": nodes,
        "services": services,
        "calls": calls,
        "stream": stream,
        "events": events,
    }


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None


def _meshctl(*args: str) -> None:
    """Run a meshctl command in this process, as a user would run it (in a thread of
    its own: it runs an event loop of its own)."""
    from cli.main import meshctl

    code = meshctl.main(list(args), prog_name="meshctl", standalone_mode=False)
    if code:
        raise click.ClickException(f"meshctl {args[0]} exited with {code}")


async def _next_events(sub: mesh.Subscription, count: int, timeout: float) -> list[mesh.Event]:
    """Up to ``count`` events of ``sub``, waiting at most ``timeout`` seconds in all."""
    found: list[mesh.Event] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and (left := deadline - time.monotonic()) > 0:
        try:
            found.append(await asyncio.wait_for(anext(sub), left))
        except (TimeoutError, StopAsyncIteration):
            break
    return found


def _settled(members: list[mesh.MemberInfo], count: int) -> bool:
    """Every node listed alive, with its record and its stats."""
    return len(members) == count and all(
        m.status == "alive" and m.record is not None and m.stats is not None for m in members
    )


def _node_row(member: mesh.MemberInfo) -> dict[str, Any]:
    record, stats = member.record, member.stats
    assert record is not None
    assert stats is not None  # _settled checked both
    return {
        "id": member.id,
        "name": member.name,
        "address": member.address,
        "status": member.status,
        "protocol": record.protocol[1],
        "services": {s.name: s.version for s in record.services},
        "uptime": round(stats.node.uptime, 2),
        "rss_bytes": stats.node.rss,
    }


async def _call(
    client: mesh.Client, target: str, *args: Any, timeout: float = 5.0
) -> dict[str, Any]:
    import mesh

    started = time.perf_counter()
    row: dict[str, Any] = {"target": target, "args": list(args)}
    try:
        row["result"] = await client.call(target, *args, timeout=timeout)
    except mesh.MeshError as exc:
        row["error"] = {"type": type(exc).__name__, "message": str(exc)}
    row["ms"] = _ms(started)
    return row


def _call_line(call: dict[str, Any]) -> str:
    args = ", ".join(repr(a) for a in call["args"])
    if "error" in call:
        outcome = f"-> {call['error']['type']}: {call['error']['message']}"
    else:
        outcome = f"= {call['result']!r}"
    return f"{call['target']}({args}) {outcome}   [{call['ms']:.2f} ms]"


def _event_line(event: dict[str, Any]) -> str:
    stamp = event["timestamp"]
    clock = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
    data = json.dumps(event["data"], default=repr)
    return f"{clock} {event['topic']} {event['publisher_name'] or event['publisher'][:12]} {data}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _tries(mesh_name: str, seed: str, offered: set[str]) -> list[str]:
    """meshctl commands to try on the running mesh: those this meshctl has, on the
    services the demo's nodes offer."""
    from cli.main import COMMANDS

    at = f"--seed {seed} --mesh {mesh_name}"
    tries = [  # (command, arguments, the service it needs)
        ("nodes", "", None),
        ("services", "", None),
        ("watch", "", None),
        ("ping", "", None),
        ("inspect", "calc", "calc"),
        ("call", "calc.add 1 2", "calc"),
        ("stream", "calc.count 10 --kw delay=0.2", "calc"),
        ("call", "kv.set colour blue", "kv"),
        ("call", "kv.get colour", "kv"),
        ("subscribe", "kv.", "kv"),
        ("subscribe", "clock. --count 5", "clock"),
        ("subscribe", "'$mesh.'", None),
        ("publish", 'hello.world \'{"from": "me"}\'', None),
        ("run", "nodes.clock --name clock-2 --profile local --no-discovery", "clock"),
    ]
    return [
        " ".join(part for part in ("meshctl", command, args, at) if part)
        for command, args, needs in tries
        if command in COMMANDS and (needs is None or needs in offered)
    ]


def _keep(
    procs: list[subprocess.Popen[str]],
    names: list[str],
    mesh_name: str,
    tries: list[str],
    result: dict[str, Any] | None,
) -> float:
    """Print what to try on the running mesh (with ``result``, the tour's, as JSON), then
    wait for Ctrl-C, SIGTERM or SIGHUP (or a node's end); returns the seconds it waited.
    A stop signal once the tour is done stops the demo cleanly, even while it prints."""
    began = time.perf_counter()
    as_json = result is not None
    try:
        if result is not None:
            click.echo(json.dumps({**result, "try": tries}, default=repr))
        else:
            click.echo(
                f"\nthe mesh {mesh_name} keeps running ({_plural(len(procs), 'node')}); try:\n"
            )
            for line in tries:
                click.echo(f"  {line}")
            click.echo("\nCtrl-C stops it.")
        sys.stdout.flush()
        while True:
            for proc, name in zip(procs, names, strict=True):
                if proc.poll() is not None:
                    raise click.ClickException(f"node {name} exited with {proc.returncode}")
            time.sleep(0.2)
    except KeyboardInterrupt:
        if not as_json:
            click.echo("\nstopping")
    return time.perf_counter() - began


def _stop(procs: list[subprocess.Popen[str]]) -> list[int]:
    """SIGTERM every node, wait for a clean exit; SIGKILL what does not go."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        if proc.stdout is not None:
            proc.stdout.close()
    return codes
