"""``meshctl inspect``: one service in detail: versions, methods, providers and their load."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from cli import _complete
from cli._common import (
    NO_PROVIDER,
    Settings,
    fail,
    fresh_option,
    global_options,
    run,
    settings,
    to_json,
)
from cli.nodes import duration
from cli.services import latency

if TYPE_CHECKING:
    import mesh

PROVIDER_HEADERS = ["NODE", "ID", "ADDRESS", "STATUS", "VERSION", "STATE", "STATS AGE"]
LOAD_HEADERS = ["METHOD", "NODE", "REQUESTS", "ERRORS", "IN FLIGHT", "P50", "P90", "P99"]

#: Members whose services are listed (as ``meshctl services`` lists them).
LIVE = ("alive", "suspect")


@click.command()
@click.argument("service", shell_complete=_complete.services)
@fresh_option
@global_options(group=False)
@click.pass_context
def inspect(ctx: click.Context, service: str, fresh: bool) -> None:
    """Show SERVICE in detail: its versions and providers, and for each method its
    signature, docstring, kind (unary or stream), whether it is idempotent, and each
    provider's requests, errors, calls in flight and p50/p90/p99 latency.

    Exits 3 when no live member offers SERVICE (the error lists the services there are).
    """

    async def work(given: Settings, config: mesh.Config) -> list[mesh.MemberInfo]:
        import mesh

        async with mesh.Client(config) as client:
            return await client.members(fresh=fresh)

    members = run(ctx, work)
    found = inspection(service, members)
    if found is None:
        offered = sorted(
            {s for m in members if m.status in LIVE for s in m.services}, key=str.lower
        )
        there = f"services: {', '.join(offered)}" if offered else "no live member offers any"
        fail(f"no live member offers service {service!r} ({there})", NO_PROVIDER)
    if settings(ctx).as_json:
        click.echo(to_json(found))
        return
    show(found)


def inspection(name: str, members: list[mesh.MemberInfo]) -> dict[str, Any] | None:
    """The ``--json`` form of service ``name`` as ``members`` offer it (None: no live
    member does). Methods come in the order of the newest version's listing; each
    method's kind, signature and doc are the newest version's."""
    offers = []
    for member in members:
        listed = None if member.record is None else member.record.service(name)
        if member.status in LIVE and listed is not None:
            offers.append((member, listed))
    if not offers:
        return None
    newest_first = sorted(offers, key=lambda o: _version_key(o[1].version), reverse=True)
    methods: dict[str, dict[str, Any]] = {}
    for member, listed in newest_first:
        for info in listed.methods:
            method = methods.setdefault(
                info.name,
                {
                    "name": info.name,
                    "kind": info.kind,
                    "signature": info.signature,
                    "doc": info.doc,
                    "idempotent": info.idempotent,
                    "versions": [],
                    "providers": [],
                },
            )
            if listed.version not in method["versions"]:
                method["versions"].append(listed.version)
            method["providers"].append(_load(member, listed.version, f"{name}.{info.name}"))
    for method in methods.values():
        method["versions"].sort(key=_version_key)
        method["providers"].sort(key=lambda p: (p["node"], p["id"]))
    loads = [p for m in methods.values() for p in m["providers"]]
    return {
        "name": name,
        "versions": sorted({listed.version for _, listed in offers}, key=_version_key),
        "providers": [
            {
                "node": member.name,
                "id": member.id,
                "address": member.address,
                "status": member.status,
                "version": listed.version,
                "state": listed.state,
                "stats_taken_at": None if member.stats is None else member.stats.taken_at,
            }
            for member, listed in offers
        ],
        "methods": list(methods.values()),
        "requests": sum(p["requests"] or 0 for p in loads),
        "errors": sum(p["errors"] or 0 for p in loads),
        "in_flight": sum(p["in_flight"] or 0 for p in loads),
    }


def _load(member: mesh.MemberInfo, version: str, key: str) -> dict[str, Any]:
    """One provider's load of one method; counters None when its stats are not held."""
    load = None if member.stats is None else member.stats.methods.get(key)
    counted = member.stats is not None
    return {
        "node": member.name,
        "id": member.id,
        "version": version,
        "requests": (load.requests if load else 0) if counted else None,
        "errors": (load.errors if load else 0) if counted else None,
        "in_flight": (load.in_flight if load else 0) if counted else None,
        "p50": None if load is None else load.p50,
        "p90": None if load is None else load.p90,
        "p99": None if load is None else load.p99,
    }


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    """``"1.10.0"`` after ``"1.9.2"``; text that is not numeric sorts by the text."""
    return tuple(int(n) for n in re.findall(r"\d+", version)), version


def show(found: dict[str, Any]) -> None:
    """The inspection for people: providers, methods with docs, load per method."""
    import time

    from cli._table import print_table, status_style

    versions = _many(len(found["versions"]), "version").rpartition(" ")[2]
    click.echo(
        f"service {found['name']}: {versions} {', '.join(found['versions'])}; "
        f"{_many(len(found['providers']), 'provider')}; {_many(found['requests'], 'request')}, "
        f"{_many(found['errors'], 'error')}, {found['in_flight']} in flight"
    )
    click.echo()
    now = time.time()
    rows = [
        [
            p["node"],
            p["id"][:12],
            p["address"] or "-",
            p["status"],
            p["version"],
            p["state"],
            "-" if p["stats_taken_at"] is None else duration(max(0.0, now - p["stats_taken_at"])),
        ]
        for p in found["providers"]
    ]
    print_table(PROVIDER_HEADERS, rows, right={6}, styles={3: status_style, 5: status_style})
    click.echo()
    for method in found["methods"]:
        flags = [method["kind"]] + (["idempotent"] if method["idempotent"] else [])
        if method["versions"] != found["versions"]:
            flags.append("in " + ", ".join(method["versions"]))
        click.echo(f"{method['name']}{method['signature']}  [{', '.join(flags)}]")
        for line in (method["doc"] or "(no docstring)").splitlines():
            click.echo(f"    {line}".rstrip())
    click.echo()
    rows = [
        [
            method["name"],
            p["node"],
            _count(p["requests"]),
            _count(p["errors"]),
            _count(p["in_flight"]),
            latency(p["p50"]),
            latency(p["p90"]),
            latency(p["p99"]),
        ]
        for method in found["methods"]
        for p in method["providers"]
    ]
    print_table(LOAD_HEADERS, rows, right={2, 3, 4, 5, 6, 7})


def _many(n: int, thing: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
