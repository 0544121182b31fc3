"""``meshctl deps [SERVICE]``: which services depend on which, with every provider's state."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from cli import _complete
from cli._common import NO_PROVIDER, Settings, fail, global_options, run, settings, to_json

if TYPE_CHECKING:
    import mesh

#: Members whose services are listed (as ``meshctl services`` lists them).
LIVE = ("alive", "suspect")
#: A service's state in the tree is its best provider's, in this order; ``missing``:
#: no live member offers it (in a version that the dependency accepts).
RANK = (
    "up",
    "degraded",
    "draining",
    "starting",
    "restarting",
    "waiting",
    "stopped",
    "failed",
    "down",
)
STYLES = {
    "up": "green",
    "degraded": "yellow",
    "draining": "yellow",
    "starting": "cyan",
    "restarting": "yellow",
    "waiting": "yellow",
    "failed": "red",
    "down": "red",
    "missing": "red",
}


@click.command()
@click.argument("service", required=False, shell_complete=_complete.services)
@global_options(group=False)
@click.pass_context
def deps(ctx: click.Context, service: str | None) -> None:
    """Show the dependency tree of SERVICE (default: of every service), with its state
    and each provider's: a supervised service is ``waiting`` until every service it
    depends on has a provider, ``degraded`` when one lost its last provider, and
    ``restarting`` or ``failed`` after crashes. ``missing``: no live member offers it.

    Exits 3 when no live member offers SERVICE.
    """

    async def work(given: Settings, config: mesh.Config) -> list[mesh.MemberInfo]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.members()

    members = run(ctx, work)
    trees = dependency_trees(members, service)
    if trees is None:
        fail(f"no live member offers service {service!r}", NO_PROVIDER)
    if settings(ctx).as_json:
        click.echo(to_json(trees))
        return
    for tree in trees:
        for line in lines(tree):
            click.echo(line)


def dependency_trees(
    members: list[mesh.MemberInfo], root: str | None = None
) -> list[dict[str, Any]] | None:
    """The ``--json`` form: one tree per service that no other service depends on (or
    ``root`` alone; None if no live member offers it). Each node of a tree: ``service``,
    ``requires`` (as written in ``depends_on``, e.g. ``cache@2``; the service name at the
    top), ``state``, ``providers`` (node, id, status, version, state, restarts,
    last_crash) and ``depends_on`` (the trees of its dependencies, from every provider's
    listing); ``cycle`` is true where a dependency leads back to a service above it."""
    offers: dict[str, list[tuple[mesh.MemberInfo, Any]]] = {}
    for member in members:
        if member.status in LIVE and member.record is not None:
            for listed in member.record.services:
                offers.setdefault(listed.name, []).append((member, listed))
    if root is not None and root not in offers:
        return None
    needed = {
        d.partition("@")[0] for found in offers.values() for _, s in found for d in s.depends_on
    }
    tops = [root] if root is not None else sorted(set(offers) - needed) or sorted(offers)

    def tree(requires: str, above: tuple[str, ...]) -> dict[str, Any]:
        name, _, constraint = requires.partition("@")
        found = [(m, s) for m, s in offers.get(name, ()) if matches(constraint, s.version)]
        providers = [
            {
                "node": m.name,
                "id": m.id,
                "status": m.status,
                "version": s.version,
                "state": s.state,
                "restarts": s.restarts,
                "last_crash": None
                if s.last_crash is None
                else {"time": s.last_crash.time, "error": s.last_crash.error},
            }
            for m, s in sorted(found, key=lambda f: (f[0].name, f[0].id))
        ]
        states = [p["state"] for p in providers]
        state = min(states, key=lambda s: RANK.index(s) if s in RANK else len(RANK), default="")
        cycle = name in above
        wanted: list[str] = []
        for _, s in found:
            wanted += [d for d in s.depends_on if d not in wanted]
        return {
            "service": name,
            "requires": requires,
            "state": state or "missing",
            "providers": providers,
            "cycle": cycle,
            "depends_on": [] if cycle else [tree(d, (*above, name)) for d in wanted],
        }

    trees = [tree(top, ()) for top in tops]
    if root is None:  # services reached from no top (they depend on each other) too
        shown: set[str] = set()
        stack = list(trees)
        for name in sorted(offers):
            while stack:
                node = stack.pop()
                shown.add(node["service"])
                stack += node["depends_on"]
            if name not in shown:
                trees.append(tree(name, ()))
                stack.append(trees[-1])
    return trees


def matches(constraint: str, version: str) -> bool:
    """Whether ``version`` satisfies ``constraint`` as calls and ``depends_on`` read it
    (``"2"``: any 2.x.y; ``"2.1"``: >= 2.1.0 and < 3; ``""``: any)."""
    if not constraint:
        return True
    want = [int(n) for n in constraint.split(".")] + [0] * (3 - constraint.count(".") - 1)
    have = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if have is None:
        return False
    had = [int(n) if n is not None else 0 for n in have.groups()]
    return had[0] == want[0] and had >= want


def lines(node: dict[str, Any], prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    """The tree for people: ``api  up  n1 up, n2 waiting``, dependencies indented."""
    providers = ", ".join(_provider(p) for p in node["providers"])
    state = click.style(node["state"], fg=STYLES.get(node["state"]))
    text = f"{node['requires']}  {state}" + (f"  {providers}" if providers else "")
    if node["cycle"]:
        text += "  (cycle: depends on a service above)"
    if top:
        out = [text]
        inner = ""
    else:
        out = [prefix + ("└── " if last else "├── ") + text]
        inner = prefix + ("    " if last else "│   ")
    children = node["depends_on"]
    for i, child in enumerate(children):
        out += lines(child, inner, i == len(children) - 1, top=False)
    return out


def _provider(p: dict[str, Any]) -> str:
    text = f"{p['node']} {p['state']}"
    extra = []
    if p["restarts"]:
        extra.append(f"{p['restarts']} restart" + ("s" if p["restarts"] != 1 else ""))
    if p["last_crash"] is not None and p["state"] in ("restarting", "failed"):
        extra.append(p["last_crash"]["error"])
    return text + (f" ({'; '.join(extra)})" if extra else "")
