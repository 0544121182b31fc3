"""``meshctl publish`` and ``meshctl subscribe``: events from the shell.

``publish`` asks one node to publish (``mesh.Client.publish``: the event is that node's).
``subscribe`` follows every member's events without joining (``mesh.Client.subscribe``),
or, with ``--group``, joins the mesh as a short-lived member, since only a member can be
in a queue group, and leaves cleanly at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from cli._common import USAGE, Settings, fail, global_options, run, settings, to_json
from cli.call import parse_value

if TYPE_CHECKING:
    import mesh

#: Topics under this prefix are the mesh's own (``mesh.SYSTEM_TOPICS``); nobody publishes them.
RESERVED_PREFIX = "$mesh."


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("topic")
@click.argument("data", required=False, type=click.UNPROCESSED)
@global_options(group=False)
@click.pass_context
def publish(ctx: click.Context, topic: str, data: str | None) -> None:
    """Publish DATA on TOPIC through one node of the mesh and print its sequence number.

    DATA is a JSON value, else a string (as the arguments of ``meshctl call``); left
    off, it is null. The event is published by the node meshctl asks (a seed, else one
    that zeroconf finds): its subscribers see that node as the publisher.
    """
    if not topic:
        fail("a topic is not empty", USAGE)
    if topic.startswith(RESERVED_PREFIX):
        fail(
            f"topic {topic!r}: names starting with {RESERVED_PREFIX!r} are reserved for the "
            "mesh's own events",
            USAGE,
        )
    value = None if data is None else parse_value(data)
    as_json = settings(ctx).as_json

    async def work(given: Settings, config: mesh.Config) -> tuple[int, str, str]:
        import mesh

        async with mesh.Client(config) as client:
            seq, publisher = await client.publish(topic, value)  # InvalidTopic: USAGE
            name = publisher
            if not as_json:
                name = next((m.name for m in await client.members() if m.id == publisher), name)
            return seq, publisher, name

    seq, publisher, name = run(ctx, work)
    if as_json:
        click.echo(to_json({"topic": topic, "seq": seq, "publisher": publisher}))
    else:
        click.echo(f"published {topic} seq {seq} by {name}")


def _drop_global_timeout(command: click.Command) -> click.Command:
    """Take the global ``--timeout`` off ``command``, which has one of its own."""
    command.params = [
        p
        for p in command.params
        if not (isinstance(p, click.Option) and "--timeout" in p.opts and not p.expose_value)
    ]
    return command


@_drop_global_timeout
@click.command()
@click.argument("prefix", default="")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit after N events.",
)
@click.option(
    "--timeout",
    "duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Exit after SECONDS in all. This command's own --timeout: before the command "
    "(or as MESH_TIMEOUT), --timeout is the global one, how long to wait for a node.",
)
@click.option(
    "--group",
    metavar="GROUP",
    help="Be one member of queue group GROUP (each event goes to one member): meshctl "
    "joins the mesh as a member for the time it runs.",
)
@click.option(
    "--history",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="First the last N events of each matching topic from each publisher.",
)
@global_options(group=False)
@click.pass_context
def subscribe(
    ctx: click.Context,
    prefix: str,
    count: int | None,
    duration: float | None,
    group: str | None,
    history: int,
) -> None:
    """Print the events whose topic starts with PREFIX (every event when left off).

    One line per event, as it arrives: time, topic, publisher, data as JSON (with
    --json: one JSON object per line). System events ($mesh.node.joined, ...) are
    included where PREFIX matches them: ``meshctl subscribe '$mesh.'``. Runs until
    --count events arrived, --timeout seconds passed, or Ctrl-C.

    Without --group meshctl does not join the mesh, and events are at-most-once: one
    lost on the way is not sent again.
    """
    if group is not None:
        if not group:
            fail("--group: a queue group is a non-empty name", USAGE)
        if history:
            fail("--history: a queue-group subscription cannot replay history", USAGE)
        if prefix.startswith(RESERVED_PREFIX):
            fail(
                f"--group: system events ({RESERVED_PREFIX}*) are derived by each node for "
                "its own subscriptions, never handed to a queue group",
                USAGE,
            )
    printer = _Printer(count, settings(ctx).as_json)
    me = f"meshctl-sub-{os.getpid()}"

    async def work(given: Settings, config: mesh.Config) -> None:
        import mesh

        config = config.replace(name=me)
        loop = asyncio.get_running_loop()
        deadline = None if duration is None else loop.time() + duration
        try:
            if group is None:
                async with mesh.Client(config) as client:
                    sub = await client.subscribe(prefix, history=history)
                    _said(f"subscribed to {prefix!r} through {client.via}")
                    await printer.run(sub, deadline, _Names(client.members_nowait, me))
            else:
                member = config.replace(port=0, pub_port=0, gossip_port=0)
                async with mesh.Node(member) as node:
                    await _joined(node, config.timings.connect_timeout)
                    sub = node.subscribe(prefix, group=group)
                    _said(f"subscribed to {prefix!r} in group {group!r} as member {me}")
                    await printer.run(sub, deadline, _Names(node.members, me))
        except asyncio.CancelledError:  # Ctrl-C: say what arrived, then exit 130
            _said(f"received {_events(printer.received)}")
            raise
        _said(f"received {_events(printer.received)}")

    run(ctx, work)


class _Printer:
    """Prints events as they arrive, one line each, flushed; counts them."""

    def __init__(self, count: int | None, as_json: bool) -> None:
        self.count = count
        self.as_json = as_json
        self.received = 0

    async def run(self, sub: mesh.Subscription, deadline: float | None, names: _Names) -> None:
        """Until ``count`` events came or the loop's clock passed ``deadline``."""
        import mesh

        scope = asyncio.timeout_at(deadline)
        try:
            async with sub, scope:
                async for event in sub:
                    self.echo(event, names.of(event))
                    if self.count is not None and self.received >= self.count:
                        return
        except TimeoutError:
            if scope.expired():
                return
            raise
        raise mesh.MeshError("the subscription ended: the node closed")

    def echo(self, event: mesh.Event, name: str | None) -> None:
        if self.as_json:
            line = to_json(
                {
                    "topic": event.topic,
                    "data": event.data,
                    "publisher": event.publisher,
                    "publisher_name": name,
                    "seq": event.seq,
                    "time": event.timestamp,
                }
            )
        else:
            who = name or event.publisher[:12]
            line = f"{_clock(event.timestamp)} {event.topic} {who} {to_json(event.data)}"
        click.echo(line)
        sys.stdout.flush()
        self.received += 1


class _Names:
    """Node names by id, from a member list, looked up again when an id is new to it."""

    def __init__(self, members: Callable[[], list[mesh.MemberInfo]], me: str) -> None:
        self._members = members
        self._me = me
        self._names: dict[str, str] = {}

    def of(self, event: mesh.Event) -> str | None:
        name = self._names.get(event.publisher)
        if name is None:
            self._names = {m.id: m.name for m in self._members()}
            name = self._names.get(event.publisher)
        if name is None and event.topic.startswith(RESERVED_PREFIX):
            return self._me  # derived by meshctl's own node, not a member
        return name


async def _joined(node: mesh.Node, timeout: float) -> None:
    """Wait until ``node`` lists another alive member with its record."""
    import mesh

    deadline = time.monotonic() + timeout
    while not any(
        m.id != node.id and m.status == "alive" and m.record is not None for m in node.members()
    ):
        if time.monotonic() > deadline:
            raise mesh.NoMeshFound(
                f"joined no mesh within {timeout:g} s: no other member of mesh {node.mesh!r} "
                "was listed"
            )
        await asyncio.sleep(0.05)


def _clock(timestamp: float) -> str:
    """``HH:MM:SS.mmm``, local time."""
    whole = int(timestamp)
    return (
        time.strftime("%H:%M:%S", time.localtime(whole)) + f".{int((timestamp - whole) * 1000):03d}"
    )


def _events(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def _said(message: str) -> None:
    click.echo(message, err=True)
