"""``meshctl run``: host services from importable modules as a node, until SIGTERM or Ctrl-C.

Each SPEC names what to host: ``module:Class`` (a ``@service`` class, made with no
arguments), ``module:obj`` (an instance already made), ``module:function=service.method``
(a plain function), or ``module`` alone (its ``setup(node)`` runs once the node serves,
as for the node programs in ``nodes/``). What can be checked before the node starts is
checked first, so a bad SPEC exits 2 without the node ever joining the mesh.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from cli._common import USAGE, Settings, fail, global_options, run, settings

if TYPE_CHECKING:
    import mesh


@dataclass(frozen=True)
class Spec:
    """One SPEC of the command line, parsed."""

    text: str
    module: str
    attribute: str | None = None
    #: After ``=``: the service name of a class or instance, ``service.method`` of a function.
    name: str | None = None


@dataclass(frozen=True)
class Hosted:
    """What a Spec resolved to: an object for ``add_service``, or a module's setup."""

    spec: Spec
    obj: Any = None
    setup: Any = None


def parse_spec(text: str) -> Spec:
    """``module[:attribute[=name]]`` -> Spec; a usage error (exit 2) when malformed."""
    target, equals, name = text.partition("=")
    module, colon, attribute = target.partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        fail(
            f"{text!r}: expected module, module:attribute or module:function=service.method", USAGE
        )
    if colon and not all(part.isidentifier() for part in attribute.split(".")):
        fail(f"{text!r}: {attribute!r} is not an attribute name", USAGE)
    if equals and not colon:
        fail(f"{text!r}: =NAME follows module:attribute (module:function=service.method)", USAGE)
    if equals and not name:
        fail(f"{text!r}: nothing after '='", USAGE)
    return Spec(text, module, attribute if colon else None, name if equals else None)


def resolve(spec: Spec, debug: bool) -> Hosted:
    """Import the module of ``spec`` and find what it names; exit 2 with one line when
    the module does not import, the attribute does not exist, or it cannot be hosted."""
    module = _import(spec, debug)
    if spec.attribute is None:
        setup = getattr(module, "setup", None)
        if setup is not None and not callable(setup):
            fail(f"{spec.text}: {spec.module}.setup is not a function", USAGE)
        if setup is None:
            _say(f"{spec.text}: the module has no setup(node); nothing hosted from it")
        return Hosted(spec, setup=setup)
    obj: Any = module
    for part in spec.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            fail(f"{spec.text}: module {spec.module!r} has no attribute {spec.attribute!r}", USAGE)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            if debug:
                traceback.print_exc()
            fail(
                f"{spec.text}: {obj.__name__}() failed: {type(exc).__name__}: {exc} (a class "
                "is made with no arguments; host an instance with module:obj)",
                USAGE,
            )
    elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
        if spec.name is None:
            fail(
                f"{spec.text} is a function: name it as a method, "
                f"{spec.module}:{spec.attribute}=service.method",
                USAGE,
            )
        if "." not in spec.name:
            fail(f"{spec.text}: a function is hosted as service.method, got {spec.name!r}", USAGE)
    elif isinstance(obj, ModuleType):
        fail(f"{spec.text}: {spec.attribute!r} is a module; host it as {obj.__name__}", USAGE)
    return Hosted(spec, obj=obj)


def _import(spec: Spec, debug: bool) -> ModuleType:
    try:
        return importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and spec.module.startswith(exc.name):
            fail(
                f"{spec.text}: no module named {spec.module!r} (looked in {os.getcwd()} too)", USAGE
            )
        failure: Exception = exc
    except Exception as exc:
        failure = exc
    if debug:
        traceback.print_exception(failure)
    hint = "" if debug else " (--debug shows the traceback)"
    fail(
        f"{spec.text}: importing {spec.module} failed: {type(failure).__name__}: {failure}{hint}",
        USAGE,
    )


@click.command("run")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@click.option(
    "--name",
    metavar="NAME",
    help="This node's name [env MESH_NODE_NAME; default: <host>-<module>-<pid>, the module "
    "of the first SPEC].",
)
@click.option(
    "--host",
    metavar="HOST",
    help="Address to bind [env MESH_HOST; default: the first --interface's address, else "
    "127.0.0.1].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="RPC port; 0 picks a free one [env MESH_PORT; default: 0].",
)
@click.option(
    "--pub-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Event (PUB) port [env MESH_PUB_PORT; default: 0].",
)
@click.option(
    "--gossip-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Gossip port [env MESH_GOSSIP_PORT; default: 0].",
)
@global_options(group=False)
@click.pass_context
def run_command(
    ctx: click.Context,
    specs: tuple[str, ...],
    name: str | None,
    host: str | None,
    port: int | None,
    pub_port: int | None,
    gossip_port: int | None,
) -> None:
    """Host services from importable modules as a member of the mesh, until SIGTERM or Ctrl-C.

    \b
    SPEC is one of:
      module:Class                    a @service class, made with no arguments
      module:obj                      a @service instance made by the module
      module:function=service.method  a plain function, as one method
      module                          the module's setup(node) runs (nodes.calc, ...)
    module:Class=NAME hosts the service under another name.

    The current directory is searched first for modules. Prints one JSON line
    {"event": "ready", ...} on stdout once the node serves (as the node programs do),
    then a "connected" or "connect_failed" line per seed. SIGTERM or Ctrl-C: the node
    finishes work in flight, leaves the mesh cleanly and exits 0.
    """
    parsed = [parse_spec(text) for text in specs]
    given = settings(ctx)
    _logging()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules next to you
    hosted = [resolve(spec, given.debug) for spec in parsed]
    overrides: dict[str, Any] = {}
    for field, value in (
        ("name", name),
        ("host", host),
        ("port", port),
        ("pub_port", pub_port),
        ("gossip_port", gossip_port),
    ):
        if value is not None:
            overrides[field] = value

    async def work(given: Settings, config: mesh.Config) -> None:
        import mesh

        if name is None and not os.environ.get("MESH_NODE_NAME", "").strip():
            # <host>-<module>-<pid>: the program is the module hosted, not meshctl
            overrides["name"] = mesh.Config.default_name(parsed[0].module.rsplit(".", 1)[-1])
        config = config.replace(**overrides) if overrides else config
        node = mesh.Node(config)
        for item in hosted:  # before the node starts: a refusal leaves no trace in the mesh
            if item.obj is not None:
                try:
                    node.add_service(item.obj, name=item.spec.name)
                except (mesh.MeshError, TypeError, ValueError) as exc:
                    raise mesh.ConfigError(f"{item.spec.text}: {exc}") from None
        async with node:
            for item in hosted:
                if item.setup is not None:
                    result = item.setup(node)
                    if inspect.isawaitable(result):
                        await result
            serving = asyncio.create_task(node.serve_forever())
            await asyncio.sleep(0)  # serve_forever installs its signal handlers first
            _print_line(ready_line(node))
            _say(_hosting(node))
            for seed in config.seeds:
                _print_line(await introduce(node, seed))
            await serving
        _say(f"node {node.name} left the mesh cleanly")

    run(ctx, work)


def ready_line(node: mesh.Node) -> dict[str, Any]:
    """The line a node program prints once it serves (nodes/_program.py)."""
    return {
        "event": "ready",
        "id": node.id,
        "name": node.name,
        "mesh": node.mesh,
        "address": node.address,
        "pub_address": node.pub_address,
        "gossip_address": node.gossip_address,
    }


async def introduce(node: mesh.Node, address: str) -> dict[str, Any]:
    """Handshake with a seed: a ``connected`` or ``connect_failed`` line (nodes/_program.py)."""
    import mesh

    try:
        peer = await node.connect(address)
    except mesh.MeshError as exc:
        return {"event": "connect_failed", "address": address, "error": str(exc), "code": exc.code}
    return {
        "event": "connected",
        "address": address,
        "id": peer.id,
        "name": peer.name,
        "version": peer.version,
    }


def _hosting(node: mesh.Node) -> str:
    offered = ", ".join(f"{s.name}@{s.version}" for s in node.local_services.values())
    return (
        f"node {node.name} ({node.id[:12]}) of mesh {node.mesh!r} at {node.address} "
        f"serves {offered or 'nothing'}; SIGTERM or Ctrl-C leaves"
    )


def _logging() -> None:
    """Log warnings of the node on stderr (``MESH_LOG_LEVEL`` as for node programs)."""
    level = os.environ.get("MESH_LOG_LEVEL", "WARNING").upper()
    if not isinstance(logging.getLevelName(level), int):
        fail(f"MESH_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}", USAGE)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _print_line(line: dict[str, Any]) -> None:
    click.echo(json.dumps(line))
    sys.stdout.flush()


def _say(message: str) -> None:
    click.echo(message, err=True)
