"""``meshctl services``: every service offered in a mesh, its providers and their load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cli._common import Settings, fresh_option, global_options, run, settings, to_json

if TYPE_CHECKING:
    import mesh

HEADERS = [
    "NAME", "VERSIONS", "PROVIDERS", "STATE", "REQUESTS", "ERRORS", "P50", "P99", "IN FLIGHT",
]  # fmt: skip


@click.command()
@fresh_option
@global_options(group=False)
@click.pass_context
def services(ctx: click.Context, fresh: bool) -> None:
    """List the services of live members: versions, providers, state, requests, latency.

    STATE is the providers' state (``up``; ``waiting``, ``degraded``, ``restarting`` or
    ``failed`` for supervised services), with counts when they differ (``up:2,failed:1``).
    Counts are summed over providers since they started; P50 and P99 are the worst
    method's on the worst provider.
    """

    async def work(given: Settings, config: mesh.Config) -> dict[str, mesh.ServiceListing]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.services(fresh=fresh)

    listings = [listing.to_json() for listing in run(ctx, work).values()]
    if settings(ctx).as_json:
        click.echo(to_json(listings))
        return
    from cli._table import print_table

    print_table(
        HEADERS, [_row(s) for s in listings], right={4, 5, 6, 7, 8}, styles={3: state_style}
    )


def _row(listing: dict[str, Any]) -> list[str]:
    return [
        listing["name"],
        ",".join(listing["versions"]) or "-",
        ",".join(p["node"] for p in listing["providers"]) or "-",
        states(listing["states"]),
        str(listing["requests"]),
        str(listing["errors"]),
        latency(listing["p50"]),
        latency(listing["p99"]),
        str(listing["in_flight"]),
    ]


def states(counts: dict[str, int]) -> str:
    """``up`` when every provider is up; ``up:2,failed:1`` when they differ."""
    if len(counts) == 1:
        return next(iter(counts))
    return ",".join(f"{state}:{n}" for state, n in counts.items()) or "-"


def state_style(cell: str) -> str | None:
    """Green when every provider is up, red when none takes calls, else yellow."""
    from cli._table import status_style

    if "," not in cell:
        return status_style(cell)
    taking = {"up", "degraded"} & {part.partition(":")[0] for part in cell.split(",")}
    return "yellow" if taking else "red"


def latency(seconds: float | None) -> str:
    """``0.42ms``, ``12.3ms``, ``1.20s``; ``-`` without calls."""
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"
