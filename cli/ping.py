"""``meshctl ping``: round-trip times to one member or to every live one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cli import _complete
from cli._common import FAILED, Settings, fail, global_options, run, settings, to_json

if TYPE_CHECKING:
    import mesh

HEADERS = ["NAME", "ID", "ADDRESS", "MIN", "AVG", "MAX"]


@click.command()
@click.argument("node", required=False, shell_complete=_complete.nodes)
@click.option(
    "--count",
    type=click.IntRange(min=1, max=10_000),
    default=3,
    show_default=True,
    metavar="N",
    help="Calls to time on each node.",
)
@global_options(group=False)
@click.pass_context
def ping(ctx: click.Context, node: str | None, count: int) -> None:
    """Time the round trip to NODE (a name or id), or to every live member when left off.

    meshctl connects to each node's RPC address first, then times N calls of the
    system method $mesh.ping on that connection (no handshake is timed) and prints
    the fastest, average and slowest in milliseconds. Exits 1 when a node did not
    answer (listed with its error), 3 when no member is called NODE.
    """

    async def work(given: Settings, config: mesh.Config) -> list[mesh.Ping]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.ping(node, count=count)

    pings = run(ctx, work)
    if settings(ctx).as_json:
        click.echo(to_json([p.to_json() for p in pings]))
    else:
        _table(pings)
    failed = [p for p in pings if not p.ok]
    if failed:
        names = ", ".join(p.name for p in failed)
        nodes = "node" if len(pings) == 1 else "nodes"
        fail(f"{len(failed)} of {len(pings)} {nodes} did not answer: {names}", FAILED)


def _table(pings: list[mesh.Ping]) -> None:
    from cli._table import print_table

    headers = list(HEADERS)
    errors = any(p.error for p in pings)
    if errors:
        headers.append("ERROR")
    rows = []
    for p in pings:
        rtt = p.to_json()["rtt_ms"]
        cells = ["-"] * 3 if rtt is None else [_ms(rtt[k]) for k in ("min", "avg", "max")]
        row = [p.name, p.id[:12], p.address or "-", *cells]
        if errors:
            row.append(p.error or "")
        rows.append(row)
    print_table(headers, rows, right={3, 4, 5}, styles={6: lambda _: "red"} if errors else None)


def _ms(value: float) -> str:
    return f"{value:.2f}ms" if value < 100 else f"{value:.0f}ms"
