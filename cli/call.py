"""``meshctl call``: call a method of a mesh service from the shell and print the result.

``meshctl call -`` reads calls from stdin, one JSON object a line, and makes them one
after another through one client, printing one JSON object a line for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli import _complete
from cli._common import OK, USAGE, Settings, exit_code, fail, global_options, run, settings, to_json

if TYPE_CHECKING:
    import mesh

F = TypeVar("F", bound=Callable[..., Any])

#: Keywords that mesh.Client.call takes for itself, so a call cannot pass them on.
RESERVED = frozenset({"target", "timeout", "node"})

#: What a line of ``meshctl call -`` may hold.
REQUEST_KEYS = frozenset({"target", "args", "kwargs", "node"})

#: A batch pulls the member list again before a call when it is older than this (s).
REFRESH_AFTER = 5.0

#: Lines of stdin read ahead of the calls.
READ_AHEAD = 64


class TooDeep(ValueError):
    """JSON that nests deeper than a message may (``Limits.max_depth``)."""


def load_json(text: str) -> Any:
    """``json.loads``, refusing with :class:`TooDeep` what nests deeper than a message
    may: the codec would refuse it, and past ~1,000 levels the parser itself fails."""
    import mesh

    max_depth = mesh.Limits().max_depth
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep(f"nests deeper than {max_depth} levels") from None
    todo = [(value, 1)]  # the value goes inside the message's args: one level more
    while todo:
        item, depth = todo.pop()
        if isinstance(item, list | dict):
            if depth >= max_depth:
                raise TooDeep(f"nests deeper than {max_depth} levels")
            todo.extend((child, depth + 1) for child in _children(item))
    return value


def _children(item: list[Any] | dict[str, Any]) -> list[Any]:
    return list(item.values()) if isinstance(item, dict) else item


def parse_value(text: str) -> Any:
    """A JSON value (``1``, ``2.5``, ``true``, ``null``, ``"x"``, ``[1, 2]``), else the
    text itself as a string; a usage error for JSON that nests too deep."""
    try:
        return load_json(text)
    except TooDeep as exc:
        raise click.UsageError(f"argument {text[:20]!r}...: {exc}") from None
    except ValueError:
        return text


def parse_keyword(text: str) -> tuple[str, Any]:
    """``name=value`` -> ``(name, parse_value(value))``."""
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise click.BadParameter(f"expected name=value, got {text!r}", param_hint="'--kw'")
    return name, parse_value(value)


def parse_args_json(text: str) -> list[Any]:
    """``--args-json``: a JSON array; raises ValueError saying what is wrong."""
    try:
        values = load_json(text)
    except TooDeep:
        raise
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(values, list):
        raise ValueError(f"expected a JSON array, got {type(values).__name__} {text!r:.40}")
    return values


def target_problem(target: str) -> str | None:
    """Why ``target`` is not ``service.method`` (None: it is)."""
    service, dot, method = target.rpartition(".")
    if not dot or not service or not method:
        return f"{target!r}: expected service.method or service@VERSION.method"
    return None


def arguments_options(f: F) -> F:
    """``--kw``, ``--args-json`` and ``--node``: what ``call`` and ``stream`` take."""
    f = click.option(
        "--node",
        metavar="NAME",
        shell_complete=_complete.nodes,
        help="Call the provider of this node name (or id).",
    )(f)
    f = click.option(
        "--args-json",
        metavar="JSON",
        help="The positional arguments as one JSON array, instead of ARGS: '[1, \"x\"]'.",
    )(f)
    f = click.option(
        "--kw",
        "keywords",
        metavar="NAME=VALUE",
        multiple=True,
        help="A keyword argument (value: JSON, else a string); repeatable.",
    )(f)
    return f


def call_arguments(
    target: str, args: tuple[str, ...], args_json: str | None, keywords: tuple[str, ...]
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of a call from the command line; a usage
    error (exit 2) for a bad target, bad JSON or a reserved keyword."""
    problem = target_problem(target)
    if problem:
        fail(problem, USAGE)
    if args_json is not None:
        if args:
            fail("give the arguments as ARGS or as --args-json, not both", USAGE)
        try:
            values = parse_args_json(args_json)
        except ValueError as exc:
            fail(f"--args-json: {exc}", USAGE)
    else:
        values = [parse_value(a) for a in args]
    kwargs = dict(parse_keyword(k) for k in keywords)
    taken = sorted(set(kwargs) & RESERVED)
    if taken:
        fail(f"--kw {taken[0]}=...: meshctl cannot pass a keyword named {taken[0]!r}", USAGE)
    return values, kwargs


def method_kind(members: list[mesh.MemberInfo], target: str) -> str | None:
    """``unary`` or ``stream``: what the live members' records say ``target``'s method is
    (None: no record lists it; the call says what is wrong)."""
    head, _, method = target.rpartition(".")
    service = head.partition("@")[0]
    for member in members:
        listed = None if member.record is None else member.record.service(service)
        if listed is None or member.status not in ("alive", "suspect"):
            continue
        for info in listed.methods:
            if info.name == method:
                return str(info.kind)
    return None


def echo_value(value: Any, as_json: bool) -> None:
    """A result or item: as JSON, or as it is when it is a string (JSON with --json)."""
    if isinstance(value, str) and not as_json:
        click.echo(value)
    else:
        click.echo(to_json(value))


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", shell_complete=_complete.targets("unary"))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@arguments_options
@global_options(group=False)
@click.pass_context
def call(
    ctx: click.Context,
    target: str,
    args: tuple[str, ...],
    keywords: tuple[str, ...],
    args_json: str | None,
    node: str | None,
) -> None:
    """Call TARGET (service.method, or service@VERSION.method) with ARGS and print the result.

    Each argument is a JSON value, else a string: ``meshctl call calc.add 1 2``,
    ``meshctl call echo.say hello``, ``meshctl call echo.say '"42"'`` (the string 42).
    The result is printed as JSON, or as it is when it is a string (JSON with --json).

    TARGET ``-`` reads calls from stdin, one JSON object a line,
    ``{"target": "calc.add", "args": [1, 2], "kwargs": {}}``, makes them in order through
    one client and prints one line for each, ``{"result": ...}`` or
    ``{"error": {"code": ..., "message": ..., "type": ...}}``; the exit code is the first
    failed call's (0 when none failed).
    """
    if target == "-":
        if args or args_json is not None or keywords:
            fail("call -: the calls come from stdin; give no ARGS, --args-json or --kw", USAGE)
        batch(ctx, node)
        return
    values, kwargs = call_arguments(target, args, args_json, keywords)

    async def work(given: Settings, config: mesh.Config) -> tuple[Any, bool]:
        import mesh

        async with mesh.Client(config) as client:
            if method_kind(await client.members(), target) == "stream":
                return None, False
            result = await client.call(target, *values, timeout=given.timeout, node=node, **kwargs)
            return result, True

    result, called = run(ctx, work)
    if not called:
        fail(f"{target} is a stream: use meshctl stream", USAGE)
    echo_value(result, settings(ctx).as_json)


# -- meshctl call - ----------------------------------------------------------------------


def parse_request(text: str) -> tuple[str, list[Any], dict[str, Any], str | None]:
    """One line of ``meshctl call -`` -> ``(target, args, kwargs, node)``; raises
    ValueError saying what is wrong with it."""
    try:
        request = load_json(text)
    except TooDeep:
        raise
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise ValueError('expected an object {"target": ..., "args": [...], "kwargs": {...}}')
    unknown = sorted(set(request) - REQUEST_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: args, kwargs, node, target)")
    target = request.get("target")
    if not isinstance(target, str):
        raise ValueError('"target": expected "service.method"')
    problem = target_problem(target)
    if problem:
        raise ValueError(problem)
    args = request.get("args")
    if args is None:
        args = []
    if not isinstance(args, list):
        raise ValueError('"args": expected an array')
    kwargs = request.get("kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ValueError('"kwargs": expected an object')
    taken = sorted(set(kwargs) & RESERVED)
    if taken:
        raise ValueError(f'"kwargs": meshctl cannot pass a keyword named {taken[0]!r}')
    node = request.get("node")
    if node is not None and not isinstance(node, str):
        raise ValueError('"node": expected a node name or id')
    return target, args, kwargs, node


def batch(ctx: click.Context, default_node: str | None) -> None:
    """``meshctl call -``: the calls of stdin's lines, one at a time, one client."""

    async def work(given: Settings, config: mesh.Config) -> tuple[int, int, int, str]:
        import mesh

        calls = failed = 0
        code, first = OK, ""
        async with mesh.Client(config) as client:
            await client.members()
            pulled = time.monotonic()
            async for number, line in stdin_lines():
                if not line.strip():
                    continue
                calls += 1
                if time.monotonic() - pulled > REFRESH_AFTER:
                    with contextlib.suppress(mesh.MeshError):  # else the list held will do
                        await client.members()
                    pulled = time.monotonic()
                answer, failed_with = await one_call(client, line, given.timeout, default_node)
                click.echo(to_json(answer))
                sys.stdout.flush()
                if failed_with != OK:
                    failed += 1
                    if code == OK:
                        code, first = failed_with, f"line {number}: {answer['error']['message']}"
        return code, failed, calls, first

    code, failed, calls, first = run(ctx, work)
    if failed:
        fail(f"{failed} of {calls} calls failed; the first on {first}", code)


async def one_call(
    client: mesh.Client, line: str, timeout: float | None, default_node: str | None
) -> tuple[dict[str, Any], int]:
    """The answer to one line of ``meshctl call -`` and its exit code (0: a result)."""
    import mesh

    try:
        target, args, kwargs, node = parse_request(line)
    except ValueError as exc:
        return {"error": {"code": "usage", "message": str(exc), "type": "BadRequest"}}, USAGE
    if node is None:
        node = default_node
    try:
        result = await client.call(target, *args, timeout=timeout, node=node, **kwargs)
    except mesh.MeshError as exc:
        error = {"code": exc.code, "message": str(exc) or type(exc).__name__}
        return {"error": {**error, "type": type(exc).__name__}}, exit_code(exc)
    return {"result": result}, OK


async def stdin_lines() -> AsyncIterator[tuple[int, str]]:
    """``(line number, text)`` of stdin as they come, read by a daemon thread (a pipe, a
    terminal or a file alike; a thread blocked in a read never holds up the exit)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    room = threading.Semaphore(READ_AHEAD)

    def pump() -> None:
        try:
            while line := sys.stdin.buffer.readline():
                room.acquire()
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except (OSError, ValueError, RuntimeError):  # stdin or the loop closed: no one reads
            return

    threading.Thread(target=pump, name="meshctl call - stdin", daemon=True).start()
    number = 0
    while (line := await queue.get()) is not None:
        room.release()
        number += 1
        yield number, line.decode("utf-8", "replace")
