"""``meshctl watch``: a live view of a mesh's nodes and services, refreshed every interval.

meshctl does not join the mesh to watch it: a :class:`mesh.Client` pulls the member list
(records and gossiped stats) from one node every ``--interval`` seconds, so the view is
what gossip has told that node, and the mesh never lists the watcher. When that node
stops answering, the next refresh finds another: through the live members of the last
list first, then the seeds and zeroconf as at the start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from cli._common import Settings, echo_table, fresh_option, global_options, run, settings, to_json
from cli._table import STATUS_STYLES
from cli.nodes import duration, size
from cli.services import latency

if TYPE_CHECKING:
    from rich.console import RenderableType

    import mesh


@dataclass
class Snapshot:
    """One refresh: the members and services as pulled, or why nothing was."""

    time: float
    via: str | None
    nodes: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "via": self.via,
            "error": self.error,
            "nodes": self.nodes,
            "services": self.services,
        }


class Rates:
    """Calls per second of each node, from the requests of its last two stats snapshots
    (the lifetime average until a second one arrives)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int, float]] = {}  # id -> (taken_at, requests, rate)

    def of(self, node: dict[str, Any]) -> float | None:
        stats = node["stats"]
        if stats is None:
            return None
        requests = sum(m["requests"] for m in stats["methods"].values())
        taken_at = stats["taken_at"]
        before = self._seen.get(node["id"])
        if before is None:
            rate = requests / stats["uptime"] if stats["uptime"] > 0 else 0.0
        elif taken_at > before[0]:
            rate = max(0, requests - before[1]) / (taken_at - before[0])
        else:
            return before[2]
        self._seen[node["id"]] = (taken_at, requests, rate)
        return rate


class Watcher:
    """A mesh.Client that is opened again, elsewhere, when its node stops answering."""

    def __init__(self, config: mesh.Config) -> None:
        self.config = config
        self.client: mesh.Client | None = None
        self._last: list[dict[str, Any]] = []

    async def pull(self, fresh: bool) -> Snapshot:
        """Members and services now; the first failure to find any node raises
        ``NoMeshFound`` (exit 5), later failures are reported in the snapshot."""
        import mesh

        first = self.client is None and not self._last
        try:
            if self.client is None:
                self.client = await self._open()
            listings = await self.client.services(fresh=fresh)
            members = self.client.members_nowait()
        except mesh.MeshError as exc:
            await self.aclose()
            if first:
                raise
            return Snapshot(time.time(), None, error=str(exc) or type(exc).__name__)
        nodes = [m.to_json() for m in members]
        self._last = nodes
        return Snapshot(
            time.time(),
            self.client.via,
            nodes=nodes,
            services=[listing.to_json() for listing in listings.values()],
        )

    async def _open(self) -> mesh.Client:
        import mesh

        config = self.config
        if self._last:  # the live members of the last list, then the seeds as given
            known = [
                n["address"]
                for n in self._last
                if n["address"] and n["status"] in ("alive", "suspect")
            ]
            config = config.replace(seeds=tuple(dict.fromkeys([*known, *config.seeds])))
        client = mesh.Client(config)
        await client.__aenter__()
        return client

    async def aclose(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between refreshes.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit after N refreshes (for scripts and tests).",
)
@fresh_option
@global_options(group=False)
@click.pass_context
def watch(ctx: click.Context, interval: float, count: int | None, fresh: bool) -> None:
    """A live view of the nodes and services of the mesh, until Ctrl-C.

    meshctl does not join the mesh: every --interval seconds it pulls the member list,
    with the stats gossip last brought, from one node (as `meshctl nodes` does). With
    --json, one JSON snapshot per refresh, one line each (docs/cli.md has the schema).
    """
    as_json = settings(ctx).as_json

    async def work(given: Settings, config: mesh.Config) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        interrupted = False

        def interrupt() -> None:  # Ctrl-C or SIGTERM ends the view: exit 0
            nonlocal interrupted
            interrupted = True
            me.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        watcher = Watcher(config)
        try:
            show: _Show
            if as_json:
                show = _JsonShow()
            elif sys.stdout.isatty():
                show = _LiveShow(config.mesh, interval)
            else:
                show = _PrintShow(config.mesh, interval)
            with show:
                refreshes = 0
                started = loop.time()
                while count is None or refreshes < count:
                    if refreshes:
                        await asyncio.sleep(interval - (loop.time() - started))
                    started = loop.time()
                    snapshot = await watcher.pull(fresh)
                    try:
                        show.update(snapshot)
                    except BrokenPipeError:  # `| head`: no one reads any more
                        # Python flushes stdout once more at exit: point it at nothing.
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                        return
                    refreshes += 1
        except asyncio.CancelledError:
            if not interrupted:
                raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await watcher.aclose()

    run(ctx, work)


class _Show:
    """Where snapshots go; a context manager around the whole view."""

    def __enter__(self) -> _Show:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, snapshot: Snapshot) -> None:
        raise NotImplementedError


class _JsonShow(_Show):
    def update(self, snapshot: Snapshot) -> None:
        click.echo(to_json(snapshot.to_json()))
        sys.stdout.flush()


class _PrintShow(_Show):
    """Not a terminal: each refresh printed after the last one, as plain aligned text."""

    def __init__(self, mesh_name: str, interval: float) -> None:
        self.view = _View(mesh_name, interval)
        self.first = True

    def update(self, snapshot: Snapshot) -> None:
        header, shown = self.view.header(snapshot), self.view.shown(snapshot)
        if not self.first:
            click.echo()
        self.first = False
        click.echo(header)
        if shown is not None:
            nodes, services = self.view.rows(shown)
            for columns, rows in ((NODE_COLUMNS, nodes), (SERVICE_COLUMNS, services)):
                click.echo()
                right = {i for i, (_, r) in enumerate(columns) if r}
                echo_table([name for name, _ in columns], rows, right)
        sys.stdout.flush()


class _LiveShow(_Show):
    """A terminal: one view, redrawn in place (rich ``Live``)."""

    def __init__(self, mesh_name: str, interval: float) -> None:
        from rich.console import Console
        from rich.live import Live

        self.view = _View(mesh_name, interval)
        self.live = Live(console=Console(), auto_refresh=False)

    def __enter__(self) -> _Show:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)
        self.live.console.line()

    def update(self, snapshot: Snapshot) -> None:
        self.live.update(self.render(snapshot), refresh=True)

    def render(self, snapshot: Snapshot) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        header = Text(self.view.header(snapshot), style="red" if snapshot.error else "")
        shown = self.view.shown(snapshot)
        if shown is None:
            return header
        stale = shown is not snapshot  # the last list, while no node answers
        style = "dim" if stale else ""
        tables: list[RenderableType] = []
        width = self.live.console.width
        for columns, rows in zip(
            (NODE_COLUMNS, SERVICE_COLUMNS), self.view.rows(shown), strict=True
        ):
            keep = _fitting(columns, rows, width)
            table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold", style=style)
            for i in keep:
                name, right = columns[i]
                table.add_column(name, justify="right" if right else "left", no_wrap=right)
            for row in rows:
                cells: list[RenderableType] = [row[i] for i in keep]
                if columns is NODE_COLUMNS and not stale:
                    cells[keep.index(3)] = Text(row[3], style=STATUS_STYLES.get(row[3], ""))
                table.add_row(*cells, style=style)
            tables.append(table)
        return Group(header, "", tables[0], "", tables[1])


def _fitting(columns: list[tuple[str, bool]], rows: list[list[str]], width: int) -> list[int]:
    """The indices of the columns to show in ``width`` characters: on a narrow terminal
    the node ID goes first, then CPU, then the address."""
    widths = [
        max([len(name)] + [len(r[i]) for r in rows]) + 2 for i, (name, _) in enumerate(columns)
    ]
    keep = list(range(len(columns)))
    for name in ("ID", "CPU", "ADDRESS"):
        if sum(widths[i] for i in keep) <= width:
            break
        keep = [i for i in keep if columns[i][0] != name]
    return keep


class _View:
    """What a snapshot shows: a header line and the rows of two tables. While no node
    answers, the last list is shown again under the error."""

    def __init__(self, mesh_name: str, interval: float) -> None:
        self.mesh = mesh_name
        self.interval = interval
        self.rates = Rates()
        self.last: Snapshot | None = None

    def header(self, snapshot: Snapshot) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(snapshot.time))
        if snapshot.error is not None:
            return (
                f"mesh {self.mesh} at {clock}: no answer: {snapshot.error}; trying again "
                f"every {self.interval:g} s"
            )
        alive = sum(1 for n in snapshot.nodes if n["status"] == "alive")
        return (
            f"mesh {self.mesh} at {clock}: {_plural(len(snapshot.nodes), 'node')} "
            f"({alive} alive), {_plural(len(snapshot.services), 'service')}, "
            f"through {snapshot.via}; every {self.interval:g} s, Ctrl-C exits"
        )

    def shown(self, snapshot: Snapshot) -> Snapshot | None:
        """The snapshot whose tables to show: this one, else the last that had some."""
        if snapshot.error is None:
            self.last = snapshot
            return snapshot
        return self.last

    def rows(self, snapshot: Snapshot) -> tuple[list[list[str]], list[list[str]]]:
        return [self._node_row(n) for n in snapshot.nodes], [
            _service_row(s) for s in snapshot.services
        ]

    def _node_row(self, node: dict[str, Any]) -> list[str]:
        row = [
            node["name"],
            node["id"][:12],
            node["address"] or "-",
            node["status"],
            ",".join(node["services"]) or "-",
        ]
        stats = node["stats"]
        if stats is None:
            return [*row, "-", "-", "-", "-", "-"]
        rate = self.rates.of(node)
        errors = sum(m["errors"] for m in stats["methods"].values())
        return [
            *row,
            duration(stats["uptime"]),
            f"{stats['cpu']:.2f}s",
            size(stats["rss"]),
            "-" if rate is None else f"{rate:.2f}",
            str(errors),
        ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


NODE_COLUMNS = [
    ("NAME", False),
    ("ID", False),
    ("ADDRESS", False),
    ("STATUS", False),
    ("SERVICES", False),
    ("UPTIME", True),
    ("CPU", True),
    ("RSS", True),
    ("CALLS/S", True),
    ("ERRORS", True),
]
SERVICE_COLUMNS = [
    ("SERVICE", False),
    ("VERSIONS", False),
    ("PROVIDERS", False),
    ("REQUESTS", True),
    ("ERRORS", True),
    ("P50", True),
    ("P99", True),
    ("IN FLIGHT", True),
]


def _service_row(listing: dict[str, Any]) -> list[str]:
    return [
        listing["name"],
        ",".join(listing["versions"]) or "-",
        ",".join(p["node"] for p in listing["providers"]) or "-",
        str(listing["requests"]),
        str(listing["errors"]),
        latency(listing["p50"]),
        latency(listing["p99"]),
        str(listing["in_flight"]),
    ]
