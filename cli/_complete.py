"""Shell completion of names that only the mesh knows: services, targets, nodes.

Click completes commands, options and choices by itself (docs/cli.md, "Shell
completion"); these callbacks ask a node of the mesh for its members, as ``meshctl nodes``
does, with the options already typed on the line (``--seed``, ``--mesh``, ...) and the
``MESH_*`` environment. A completion waits at most :data:`WAIT` seconds for a node and
offers nothing when none answers: a shell must never hang on a tab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from cli._common import settings

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    import mesh

    Complete = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]

#: Longest wait for a node while completing (seconds).
WAIT = 1.0


def _members(ctx: click.Context) -> list[mesh.MemberInfo]:
    """The members a node of the mesh lists; empty when none answers within WAIT."""
    import asyncio

    import mesh

    given = settings(ctx)
    wait = WAIT if given.timeout is None else min(WAIT, given.timeout)
    try:
        config = dataclasses.replace(given, timeout=wait).config()

        async def members() -> list[mesh.MemberInfo]:
            async with mesh.Client(config) as client:
                return await client.members()

        return asyncio.run(asyncio.wait_for(members(), wait * 2))
    except Exception:  # no mesh, bad options: nothing to offer
        return []


def _offer(names: set[str], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


def services(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Service names offered by live members."""
    live = [m for m in _members(ctx) if m.status in ("alive", "suspect")]
    return _offer({s for m in live for s in m.services}, incomplete)


def nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Member names."""
    return _offer({m.name for m in _members(ctx)}, incomplete)


def targets(kind: str) -> Complete:
    """``service.method`` of live members' methods of ``kind`` (``unary`` or ``stream``)."""

    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        names = set()
        for member in _members(ctx):
            if member.record is None or member.status not in ("alive", "suspect"):
                continue
            for service in member.record.services:
                names |= {f"{service.name}.{m.name}" for m in service.methods if m.kind == kind}
        return _offer(names, incomplete)

    return complete
