"""The ``meshctl`` click group; each command lives in a module of its own.

Commands are imported when they run (or when help lists them): importing ``mesh`` takes
most of a ``meshctl`` run, and ``meshctl --help`` or a usage error needs none of it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from cli._common import global_options

#: Command name -> "module:attribute", in the order help lists them.
COMMANDS = {
    "nodes": "cli.nodes:nodes",
    "services": "cli.services:services",
    "inspect": "cli.inspect:inspect",
    "deps": "cli.deps:deps",
    "call": "cli.call:call",
    "stream": "cli.stream:stream",
    "ping": "cli.ping:ping",
    "status": "cli.status:status",
    "publish": "cli.events:publish",
    "subscribe": "cli.events:subscribe",
    "enqueue": "cli.jobs:enqueue",
    "jobs": "cli.jobs:jobs",
    "run": "cli.run:run_command",
    "watch": "cli.watch:watch",
    "bench": "cli.bench:bench",
    "doctor": "cli.doctor:doctor",
    "demo": "cli.demo:demo",
    "keygen": "cli.keygen:keygen",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is wanted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *sorted(set(super().list_commands(ctx)) - set(COMMANDS))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """As click's, but errors are one ``error: ...`` line on stderr (standalone)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import mesh

    click.echo(f"meshctl, version {mesh.__version__}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and exit.",
)
@global_options(group=True)
def meshctl() -> None:
    """List, call and inspect the nodes and services of a mesh; publish and follow events.

    Global options may come before the command or after it; each can also be set by
    its MESH_* environment variable. Exit codes: 0 ok, 1 failed (a remote error among
    others), 2 usage, 3 no provider, 4 timeout, 5 no mesh found (docs/cli.md).
    """


if __name__ == "__main__":
    meshctl(prog_name="meshctl")
