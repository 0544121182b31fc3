"""``meshctl status NODE``: what one node's workers do now."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from cli import _complete
from cli._common import Settings, global_options, run, settings, to_json

if TYPE_CHECKING:
    import mesh

HEADERS = ["WORKER", "STATE", "CALL", "CALLER", "FOR", "TRACE"]


@click.command()
@click.argument("node", shell_complete=_complete.nodes)
@global_options(group=False)
@click.pass_context
def status(ctx: click.Context, node: str) -> None:
    """Show what the workers of NODE (a name or id) do now.

    One line per thread of its worker pool (sync handlers), busy with a call or free,
    then one per handler task on its event loop (coroutines and async streams). A busy
    worker shows its call, the caller's node id, for how long it has run, and the
    trace id; ABANDONED is a sync handler whose caller gave up (deadline or cancel)
    while its thread still runs it, holding the slot. Exits 3 when no live member is
    called NODE.
    """

    async def work(given: Settings, config: mesh.Config) -> dict[str, Any]:
        import mesh

        async with mesh.Client(config) as client:
            member, workers = await client.status(node)
        return {"node": member.name, "id": member.id, **workers.to_json()}

    result = run(ctx, work)
    if settings(ctx).as_json:
        click.echo(to_json(result))
    else:
        _table(result)


def _table(result: dict[str, Any]) -> None:
    from cli._table import print_table

    now = time.time()
    rows = []
    for worker in result["threads"]:
        state = "abandoned" if worker["abandoned"] else "busy"
        rows.append([worker["thread"], state, *_call(worker, now)])
    for _ in range(result["pool_free"]):
        rows.append(["pool", "free", "-", "-", "-", "-"])
    for worker in result["tasks"]:
        rows.append(["task", "busy", *_call(worker, now)])
    click.echo(
        f"{result['node']} ({result['id'][:12]}): pool of {result['pool_size']}, "
        f"{result['pool_busy']} busy, {result['pool_free']} free; "
        f"{len(result['tasks'])} handler tasks"
    )
    styles = {"busy": "yellow", "abandoned": "red", "free": "green"}
    print_table(HEADERS, rows, right={4}, styles={1: styles.get})


def _call(worker: dict[str, Any], now: float) -> list[str]:
    running = max(0.0, now - worker["since"])
    return [worker["call"], worker["caller"][:12], f"{running:.1f}s", worker["trace_id"]]
