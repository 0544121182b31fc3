"""What the commands that look into a mesh share: global options, the Config, exit codes.

The options live on the ``meshctl`` group and on each of these commands, so both
``meshctl --seed X nodes`` and ``meshctl nodes --seed X`` work; a value given after the
command wins. Importing ``mesh`` is the slow part of a run (docs/cli.md), so this
module imports it only inside :func:`run`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from mesh import Config

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes (docs/cli.md, "Exit codes").
OK = 0
FAILED = 1
USAGE = 2
NO_PROVIDER = 3
TIMEOUT = 4
NO_MESH = 5


@dataclass
class Settings:
    """The global options as given on the command line (``None``: not given there)."""

    mesh: str | None = None
    interfaces: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    timeout: float | None = None
    as_json: bool = False
    secret_file: str | None = None
    keys_dir: str | None = None
    profile: str | None = None
    discovery: bool | None = None
    debug: bool = False

    def config(self) -> Config:
        """``Config.from_env`` (all ``MESH_*``), then what the command line says."""
        import mesh

        overrides: dict[str, Any] = {}
        if self.mesh is not None:
            overrides["mesh"] = self.mesh
        if self.interfaces:
            overrides["interfaces"] = tuple(self.interfaces)
        if self.seeds:
            overrides["seeds"] = tuple(self.seeds)
        if self.secret_file is not None:
            overrides["secret_file"] = self.secret_file
        if self.keys_dir is not None:
            overrides["keys_dir"] = self.keys_dir
        if self.profile is not None:
            overrides["profile"] = self.profile
        if self.discovery is not None:
            overrides["discovery"] = self.discovery
        config = mesh.Config.from_env(**overrides)
        if self.timeout is not None:
            # every other field (supervision, membership, ...) stays the profile's
            timings = dataclasses.replace(
                config.timings, connect_timeout=self.timeout, call_timeout=self.timeout
            )
            config = config.replace(timings=timings)
        return config


def settings(ctx: click.Context) -> Settings:
    """The one :class:`Settings` of this run, on the root context."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


def _split(values: tuple[str, ...]) -> list[str]:
    return [item for value in values for item in value.replace(",", " ").split()]


def _store(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A callback that records an option in the run's Settings when it was given."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if isinstance(value, tuple):
            if value:
                setattr(settings(ctx), name, _split(value))
        elif value is False:
            # a plain flag left off says nothing; --no-discovery does
            if isinstance(param, click.Option) and param.secondary_opts:
                setattr(settings(ctx), name, value)
        elif value is not None:
            setattr(settings(ctx), name, value)

    return callback


#: ``--fresh`` of the listing commands: the node pulls every member's stats first.
fresh_option = click.option(
    "--fresh",
    is_flag=True,
    help="Ask the node to pull every member's stats first (a fraction of a second more).",
)


def global_options(*, group: bool) -> Callable[[F], F]:
    """The options every mesh command takes, on the group and again on the command
    (environment variables are read once, by the group)."""

    def decorate(f: F) -> F:
        for option in reversed(_options(group)):
            f = option(f)
        return f

    return decorate


def _options(group: bool) -> list[Callable[[F], F]]:
    return [
        click.option(
            "--mesh",
            metavar="NAME",
            callback=_store("mesh"),
            expose_value=False,
            help="Mesh name [env MESH_NAME; default: mesh].",
        ),
        click.option(
            "--seed",
            metavar="ADDRESS",
            multiple=True,
            callback=_store("seeds"),
            expose_value=False,
            help="A node to ask first, tcp://host:port[#KEY]; repeatable or a comma list "
            "[env MESH_SEEDS].",
        ),
        click.option(
            "--interface",
            metavar="IFACE",
            multiple=True,
            callback=_store("interfaces"),
            expose_value=False,
            help="Where zeroconf looks: interface names or IPv4 addresses; repeatable or a "
            "comma list [env MESH_INTERFACE; default: 127.0.0.1].",
        ),
        click.option(
            "--discovery/--no-discovery",
            default=None,
            callback=_store("discovery"),
            expose_value=False,
            help="Look for nodes with zeroconf when no seed answers [env MESH_DISCOVERY; "
            "default: on].",
        ),
        click.option(
            "--timeout",
            metavar="SECONDS",
            type=click.FloatRange(min=0, min_open=True),
            envvar="MESH_TIMEOUT" if group else None,
            callback=_store("timeout"),
            expose_value=False,
            help="How long to wait for a node to answer, and for a call's result "
            "[env MESH_TIMEOUT; default: the profile's].",
        ),
        click.option(
            "--profile",
            metavar="PROFILE",
            callback=_store("profile"),
            expose_value=False,
            help="Timing profile: lan, local or test [env MESH_PROFILE; default: lan].",
        ),
        click.option(
            "--secret-file",
            metavar="PATH",
            callback=_store("secret_file"),
            expose_value=False,
            help="The mesh secret, for a secured mesh [env MESH_SECRET_FILE].",
        ),
        click.option(
            "--keys-dir",
            metavar="DIR",
            callback=_store("keys_dir"),
            expose_value=False,
            help="A node keypair directory, for a mesh of allowed keys [env MESH_KEYS_DIR].",
        ),
        click.option(
            "--json",
            is_flag=True,
            callback=_store("as_json"),
            expose_value=False,
            help="Print JSON (docs/cli.md has the schemas).",
        ),
        click.option(
            "--debug",
            is_flag=True,
            callback=_store("debug"),
            expose_value=False,
            help="Print tracebacks with errors.",
        ),
    ]


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def exit_code(exc: BaseException) -> int:
    """The exit code of an error (docs/cli.md, "Exit codes")."""
    import mesh

    if isinstance(exc, mesh.NoMeshFound):
        return NO_MESH
    if isinstance(exc, mesh.CallTimeout):
        return TIMEOUT
    if isinstance(exc, mesh.NoProvider):
        return NO_PROVIDER
    if isinstance(exc, mesh.UnknownMethod | mesh.ConfigError | mesh.InvalidTopic):
        return USAGE
    return FAILED


def run(ctx: click.Context, work: Callable[[Settings, Config], Coroutine[Any, Any, T]]) -> T:
    """Build the Config and run ``work`` on a fresh event loop; errors become one line
    on stderr (a traceback with ``--debug``) and an exit code."""
    import asyncio

    import mesh

    given = settings(ctx)
    try:
        return asyncio.run(work(given, given.config()))
    except mesh.MeshError as exc:
        if given.debug:
            traceback.print_exc()
            remote = getattr(exc, "remote_traceback", "")
            if remote:
                click.echo(f"remote traceback:\n{remote.rstrip()}", err=True)
        fail(str(exc) or type(exc).__name__, exit_code(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        if given.debug:
            traceback.print_exc()
        hint = "" if given.debug else " (--debug shows the traceback)"
        fail(f"{type(exc).__name__}: {exc}{hint}", FAILED)


def to_json(value: Any) -> str:
    """``value`` as one line of JSON; what JSON lacks (bytes, other types) becomes text."""
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def echo_table(headers: list[str], rows: list[list[str]], right: set[int]) -> None:
    """Print an aligned table; columns in ``right`` (indices) are right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    click.echo(line(headers))
    for row in rows:
        click.echo(line(row))
    sys.stdout.flush()
