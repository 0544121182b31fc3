"""The ``meshctl`` click group; commands live in their own modules."""

from __future__ import annotations

import click

import mesh


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mesh.__version__, prog_name="meshctl")
def meshctl() -> None:
    """List, call and inspect the nodes and services of a mesh."""
