"""``meshctl services``: every service offered in a mesh, its providers and their load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cli._common import Settings, fresh_option, global_options, run, to_json

if TYPE_CHECKING:
    import mesh

HEADERS = ["NAME", "VERSIONS", "PROVIDERS", "REQUESTS", "ERRORS", "P50", "P99", "IN FLIGHT"]


@click.command()
@fresh_option
@global_options(group=False)
@click.pass_context
def services(ctx: click.Context, fresh: bool) -> None:
    """List the services of live members: versions, providers, requests, latency.

    Counts are summed over providers since they started; P50 and P99 are the worst
    method's on the worst provider.
    """

    async def work(given: Settings, config: mesh.Config) -> dict[str, mesh.ServiceListing]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.services(fresh=fresh)

    listings = [listing.to_json() for listing in run(ctx, work).values()]
    if ctx.find_root().obj.as_json:
        click.echo(to_json(listings))
        return
    from cli._table import print_table

    print_table(HEADERS, [_row(s) for s in listings], right={3, 4, 5, 6, 7})


def _row(listing: dict[str, Any]) -> list[str]:
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


def latency(seconds: float | None) -> str:
    """``0.42ms``, ``12.3ms``, ``1.20s``; ``-`` without calls."""
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"
