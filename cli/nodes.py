"""``meshctl nodes``: every member of a mesh with its services and stats, from one node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cli._common import Settings, fresh_option, global_options, run, settings, to_json

if TYPE_CHECKING:
    import mesh

HEADERS = ["NAME", "ID", "ADDRESS", "STATUS", "SERVICES", "UPTIME", "CPU", "RSS", "CALLS/S"]
HEADERS += ["ERRORS"]

#: The statuses a member can have (``mesh.MemberInfo.status``).
STATUSES = ("alive", "suspect", "dead", "left")


def parse_tag(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """``--tag k=v`` (repeatable) -> ``{k: v}``."""
    tags: dict[str, str] = {}
    for text in values:
        key, equals, value = text.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", ctx, param)
        if tags.get(key, value) != value:
            raise click.BadParameter(
                f"{key!r} given twice, {tags[key]!r} and {value!r}", ctx, param
            )
        tags[key] = value
    return tags


@click.command()
@click.option(
    "--status",
    "statuses",
    type=click.Choice(STATUSES),
    multiple=True,
    help="Only members with this status; repeatable (any of them).",
)
@click.option(
    "--tag",
    "tags",
    metavar="KEY=VALUE",
    multiple=True,
    callback=parse_tag,
    help="Only members whose record has this tag; repeatable (all of them).",
)
@fresh_option
@global_options(group=False)
@click.pass_context
def nodes(ctx: click.Context, statuses: tuple[str, ...], tags: dict[str, str], fresh: bool) -> None:
    """List the members of the mesh: address, status, services, uptime, load.

    meshctl does not join the mesh: it asks one node (a seed, else one that zeroconf
    finds) for the members it knows, with the stats they last gossiped.
    """

    async def work(given: Settings, config: mesh.Config) -> list[mesh.MemberInfo]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.members(fresh=fresh)

    members = [m for m in run(ctx, work) if matches(m, statuses, tags)]
    if settings(ctx).as_json:
        click.echo(to_json([m.to_json() for m in members]))
        return
    from cli._table import print_table, status_style

    rows = [_row(m) for m in members]
    print_table(HEADERS, rows, right={5, 6, 7, 8, 9}, styles={3: status_style})


def matches(member: mesh.MemberInfo, statuses: tuple[str, ...], tags: dict[str, str]) -> bool:
    """Whether ``member`` has one of ``statuses`` (any, when none) and every tag of ``tags``
    (a member whose record is not held has no tags)."""
    if statuses and member.status not in statuses:
        return False
    held = {} if member.record is None else member.record.tags
    return all(held.get(key) == value for key, value in tags.items())


def _row(member: mesh.MemberInfo) -> list[str]:
    row = [
        member.name,
        member.id[:12],
        member.address or "-",
        member.status,
        ",".join(member.services) or "-",
    ]
    stats = member.stats
    if stats is None:
        return [*row, "-", "-", "-", "-", "-"]
    node = stats.node
    requests = sum(load.requests for load in stats.methods.values())
    errors = sum(load.errors for load in stats.methods.values())
    rate = requests / node.uptime if node.uptime > 0 else 0.0
    return [
        *row,
        duration(node.uptime),
        f"{node.cpu:.2f}s",
        size(node.rss),
        f"{rate:.2f}",
        str(errors),
    ]


def duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``5h02m``, ``2d03h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def size(count: Any) -> str:
    """Bytes for people (``-`` when unknown, that is negative)."""
    if not isinstance(count, int) or count < 0:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
