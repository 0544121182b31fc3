"""The ``meshctl`` click group; each command lives in a module of its own."""

from __future__ import annotations

import click

import mesh
from cli.demo import demo
from cli.keygen import keygen


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mesh.__version__, prog_name="meshctl")
def meshctl() -> None:
    """List, call and inspect the nodes and services of a mesh."""


meshctl.add_command(demo)
meshctl.add_command(keygen)
