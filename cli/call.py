"""``meshctl call``: call a method of a mesh service from the shell and print the result."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cli._common import USAGE, Settings, fail, global_options, run, to_json

if TYPE_CHECKING:
    import mesh


#: Keywords that mesh.Client.call takes for itself, so a call cannot pass them on.
RESERVED = frozenset({"target", "timeout", "node"})


def parse_value(text: str) -> Any:
    """A JSON value (``1``, ``2.5``, ``true``, ``null``, ``"x"``, ``[1, 2]``), else the
    text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_keyword(text: str) -> tuple[str, Any]:
    """``name=value`` -> ``(name, parse_value(value))``."""
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise click.BadParameter(f"expected name=value, got {text!r}", param_hint="'--kw'")
    return name, parse_value(value)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--kw",
    "keywords",
    metavar="NAME=VALUE",
    multiple=True,
    help="A keyword argument (value: JSON, else a string); repeatable.",
)
@click.option("--node", metavar="NAME", help="Call the provider of this node name (or id).")
@global_options(group=False)
@click.pass_context
def call(
    ctx: click.Context,
    target: str,
    args: tuple[str, ...],
    keywords: tuple[str, ...],
    node: str | None,
) -> None:
    """Call TARGET (service.method, or service@VERSION.method) with ARGS and print the result.

    Each argument is a JSON value, else a string: ``meshctl call calc.add 1 2``,
    ``meshctl call echo.say hello``, ``meshctl call echo.say '"42"'`` (the string 42).
    The result is printed as JSON, or as it is when it is a string (JSON with --json).
    """
    service, dot, method = target.rpartition(".")
    if not dot or not service or not method:
        fail(f"{target!r}: expected service.method or service@VERSION.method", USAGE)
    values = [parse_value(a) for a in args]
    kwargs = dict(parse_keyword(k) for k in keywords)
    taken = sorted(set(kwargs) & RESERVED)
    if taken:
        fail(f"--kw {taken[0]}=...: meshctl cannot pass a keyword named {taken[0]!r}", USAGE)

    async def work(given: Settings, config: mesh.Config) -> Any:
        import mesh

        async with mesh.Client(config) as client:
            return await client.call(target, *values, timeout=given.timeout, node=node, **kwargs)

    result = run(ctx, work)
    if isinstance(result, str) and not ctx.find_root().obj.as_json:
        click.echo(result)
    else:
        click.echo(to_json(result))
