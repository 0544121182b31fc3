"""``meshctl enqueue`` and ``meshctl jobs``: durable queues from the shell."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import click

from cli import _complete
from cli._common import FAILED, USAGE, Settings, fail, global_options, run, settings, to_json
from cli.call import arguments_options, call_arguments

if TYPE_CHECKING:
    import mesh


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", shell_complete=_complete.targets("unary"))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@arguments_options
@click.option("--key", metavar="KEY", help="Idempotency key: a job with a key seen runs once.")
@click.option(
    "--retries",
    metavar="S,S,...",
    help="Seconds before each further attempt (default 1,10,60); '' for one attempt.",
)
@global_options(group=False)
@click.pass_context
def enqueue(
    ctx: click.Context,
    target: str,
    args: tuple[str, ...],
    keywords: tuple[str, ...],
    args_json: str | None,
    node: str | None,
    key: str | None,
    retries: str | None,
) -> None:
    """Put a job for TARGET (service.method) with ARGS in a provider's durable inbox.

    Returns (and prints the job id) once a provider has stored the job: from then on
    it runs by its retry schedule even if meshctl, or that provider, stops. ARGS are
    read as for ``meshctl call``. Exits 3 when no provider with a job store takes it.
    """
    if node is not None:  # a shared option of call/stream: the provider is chosen here
        fail("enqueue: --node is not supported (the job goes to a provider by its key)", USAGE)
    values, kwargs = call_arguments(target, args, args_json, keywords)
    schedule = None
    if retries is not None:
        try:
            schedule = [float(t) for t in retries.split(",") if t.strip()]
        except ValueError:
            schedule = None
        if schedule is None or not all(0 <= t < math.inf for t in schedule):
            fail(
                f"--retries: expected seconds (0 or more) separated by commas, got {retries!r}",
                USAGE,
            )

    async def work(given: Settings, config: mesh.Config) -> str:
        import mesh

        async with mesh.Client(config) as client:
            return await client.enqueue(
                target, *values, retries=schedule, key=key, timeout=given.timeout, **kwargs
            )

    job_id = run(ctx, work)
    if settings(ctx).as_json:
        click.echo(to_json({"id": job_id, "target": target, "key": key}))
    else:
        click.echo(job_id)


@click.command()
@click.argument("action", required=False, type=click.Choice(["retry", "drop"]))
@click.argument("job_id", required=False)
@click.option("--node", metavar="NAME", help="Only this node (name or id).")
@global_options(group=False)
@click.pass_context
def jobs(ctx: click.Context, action: str | None, job_id: str | None, node: str | None) -> None:
    """List each node's jobs: OUTBOX (sent, not yet done), INBOX (to run) and DEAD letters.

    ``meshctl jobs retry ID`` puts dead letter ID back in its inbox (attempts from 1);
    ``meshctl jobs drop ID`` forgets job ID (a dead letter, or a job waiting in an inbox
    or outbox). Both exit 1 when no node holds ID.
    """
    if action is not None and not job_id:
        fail(f"jobs {action}: give the job id", USAGE)
    as_json = settings(ctx).as_json

    async def listing(given: Settings, config: mesh.Config) -> list[dict[str, Any]]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.jobs(node)

    async def act(given: Settings, config: mesh.Config) -> list[str]:
        import mesh

        assert action is not None
        assert job_id is not None
        async with mesh.Client(config) as client:
            return await client.job_action(action, job_id)

    if action is not None:
        names = run(ctx, act)
        if as_json:
            click.echo(to_json({"action": action, "id": job_id, "nodes": names}))
        elif names:
            click.echo(f"{action}: {job_id} on {', '.join(names)}")
        if not names:
            fail(f"no node holds job {job_id!r} (dead, or waiting)", FAILED)
        return
    result = run(ctx, listing)
    if as_json:
        click.echo(to_json(result))
        return
    from cli._table import print_table

    rows = []
    now = time.time()
    for entry in sorted(result, key=lambda e: e.get("node", "")):
        if "error" in entry:
            continue
        for kind in ("outbox", "inbox", "dead"):
            for job in entry[kind]:
                state = kind
                if kind == "outbox":
                    state = "handed off" if job["handed_off"] else "outbox"
                elif kind == "inbox":
                    state = "running" if job["running"] else "waiting"
                rows.append(
                    [
                        entry["node"],
                        state,
                        job["id"],
                        job["target"],
                        job["key"] or "-",
                        f"{job['attempt']}/{job['attempts']}",
                        f"{max(0.0, now - job['created']):.0f}s",
                        (job["error"] or "-")[:60],
                    ]
                )
    headers = ["NODE", "STATE", "ID", "TARGET", "KEY", "ATTEMPT", "AGE", "ERROR"]
    print_table(headers, rows, right={5, 6}, styles={1: {"dead": "red"}.get})
