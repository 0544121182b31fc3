"""``meshctl stream``: a streaming method's items, printed as they arrive."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from cli import _complete
from cli._common import USAGE, Settings, fail, global_options, run, settings
from cli.call import arguments_options, call_arguments, echo_value, method_kind

if TYPE_CHECKING:
    import mesh


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", shell_complete=_complete.targets("stream"))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@arguments_options
@global_options(group=False)
@click.pass_context
def stream(
    ctx: click.Context,
    target: str,
    args: tuple[str, ...],
    keywords: tuple[str, ...],
    args_json: str | None,
    node: str | None,
) -> None:
    """Call the streaming method TARGET with ARGS and print each item as it arrives.

    Arguments as for ``meshctl call``. One line an item, flushed: JSON, or as it is when
    it is a string (one JSON value a line with --json). Ends with the stream; Ctrl-C
    stops the producer and exits 130. --timeout bounds the wait for each item.
    """
    values, kwargs = call_arguments(target, args, args_json, keywords)
    as_json = settings(ctx).as_json

    async def work(given: Settings, config: mesh.Config) -> bool:
        import mesh

        async with mesh.Client(config) as client:
            if method_kind(await client.members(), target) == "unary":
                return False
            items = await client.stream(target, *values, timeout=given.timeout, node=node, **kwargs)
            async with items:  # leaving it (the end, an error, Ctrl-C) stops the producer
                async for item in items:
                    if not _echo(item, as_json):
                        break
        return True

    if not run(ctx, work):
        fail(f"{target} is not a stream: use meshctl call", USAGE)


def _echo(item: Any, as_json: bool) -> bool:
    """Print one item; False when stdout is closed (``| head``): no one reads any more."""
    try:
        echo_value(item, as_json)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at nothing, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True
