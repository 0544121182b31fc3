"""``meshctl bench``: a load generator: many calls of one method through a mesh.Client.

The calls go as ``meshctl call`` makes them (a provider chosen per call, directly over
its RPC socket), ``--concurrency`` of them in flight at once from one event loop, until
``--calls`` have finished. One warm-up call goes first and is not counted: it connects
to the provider, and a target that cannot be called (no provider, no such method) stops
the run before it starts.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from cli import _complete
from cli._common import FAILED, USAGE, Settings, fail, global_options, run, settings, to_json
from cli.call import arguments_options, call_arguments, method_kind

if TYPE_CHECKING:
    import mesh

#: Upper bounds of the latency histogram's buckets, in milliseconds (1-2-5 steps); a
#: last bucket holds what is slower than the last bound.
BOUNDS_MS = tuple(round(m * 10.0**e, 2) for e in range(-2, 5) for m in (1, 2, 5))
#: Bar width of the text histogram, in characters.
BAR = 40


@dataclass
class Result:
    """What a run measured; latencies of the calls that returned, in seconds."""

    target: str
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    #: The first message of each error code, to show what went wrong.
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        latency = None
        if ordered:
            latency = {
                "min": _ms(ordered[0]),
                "p50": _ms(percentile(ordered, 0.50)),
                "p90": _ms(percentile(ordered, 0.90)),
                "p99": _ms(percentile(ordered, 0.99)),
                "max": _ms(ordered[-1]),
                "mean": _ms(sum(ordered) / len(ordered)),
            }
        return {
            "target": self.target,
            "calls": self.calls,
            "ok": len(ordered),
            "errors": dict(sorted(self.errors.items())),
            "error_examples": dict(sorted(self.examples.items())),
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 6),
            "calls_per_second": round(self.calls / self.seconds, 1) if self.seconds else None,
            "latency_ms": latency,
            "histogram": [{"le_ms": le, "count": n} for le, n in histogram(ordered)],
        }


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def histogram(ordered: list[float]) -> list[tuple[float | None, int]]:
    """``(upper bound in ms or None for the rest, count)`` per bucket, from the first
    bucket that holds a call to the last."""
    counts = [0] * (len(BOUNDS_MS) + 1)
    bucket = 0
    for seconds in ordered:  # sorted: the bucket only moves up
        while bucket < len(BOUNDS_MS) and seconds * 1000 > BOUNDS_MS[bucket]:
            bucket += 1
        counts[bucket] += 1
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return []
    bounds: list[float | None] = [*BOUNDS_MS, None]
    return [(bounds[i], counts[i]) for i in range(used[0], used[-1] + 1)]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", shell_complete=_complete.targets("unary"))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    metavar="N",
    help="How many calls to make in all.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    metavar="N",
    help="How many calls are in flight at once.",
)
@arguments_options
@global_options(group=False)
@click.pass_context
def bench(
    ctx: click.Context,
    target: str,
    args: tuple[str, ...],
    calls: int,
    concurrency: int,
    keywords: tuple[str, ...],
    args_json: str | None,
    node: str | None,
) -> None:
    """Call TARGET with ARGS --calls times, --concurrency at once, and report throughput,
    errors by code and the latency distribution.

    Arguments as for ``meshctl call``. A progress bar shows on stderr when it is a
    terminal (not with --json). Exits 1 when any call failed (after the report).
    """
    values, kwargs = call_arguments(target, args, args_json, keywords)
    as_json = settings(ctx).as_json
    concurrency = min(concurrency, calls)

    async def work(given: Settings, config: mesh.Config) -> Result | None:
        import mesh

        async with mesh.Client(config) as client:
            if method_kind(await client.members(), target) == "stream":
                return None
            call_timeout = given.timeout

            async def one() -> None:
                await client.call(target, *values, timeout=call_timeout, node=node, **kwargs)

            try:  # connects; a target that cannot be called stops here (exit 2, 3, ...)
                await one()
            except (mesh.UnknownMethod, mesh.NoProvider, mesh.ConfigError, mesh.NoMeshFound):
                raise
            except mesh.MeshError:
                pass  # the target can fail: the run counts how often
            result = Result(target, concurrency)
            progress = None if as_json or not sys.stderr.isatty() else _Progress(calls)
            await _load(one, calls, concurrency, result, progress)
            return result

    result = run(ctx, work)
    if result is None:
        fail(f"{target} is a stream: bench calls unary methods", USAGE)
    if as_json:
        click.echo(to_json(result.to_json()))
    else:
        _report(result)
    failed = sum(result.errors.values())
    if failed:
        fail(f"{failed} of {result.calls} calls failed", FAILED)


async def _load(
    one: Any, calls: int, concurrency: int, result: Result, progress: _Progress | None
) -> None:
    """Make ``calls`` calls of ``one``, ``concurrency`` at a time, into ``result``."""
    import mesh

    issued = 0
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal issued
        while issued < calls:
            issued += 1
            started = clock()
            try:
                await one()
            except mesh.MeshError as exc:
                result.errors[exc.code] += 1
                result.examples.setdefault(exc.code, str(exc) or type(exc).__name__)
            else:
                result.latencies.append(clock() - started)

    started = clock()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        if progress is None:
            await asyncio.gather(*workers)
        else:
            with progress:
                done = asyncio.gather(*workers)
                while not done.done():
                    await asyncio.wait([done], timeout=0.1)
                    progress.show(result.calls)
                await done
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        result.seconds = clock() - started


class _Progress:
    """A rich progress bar on stderr, redrawn by the caller (no thread of its own)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=True,
        )
        self.task = self.progress.add_task("calls", total=total)

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, done: int) -> None:
        self.progress.update(self.task, completed=done, refresh=True)


def _report(result: Result) -> None:
    """The result for people: one summary line, latencies, a histogram, errors."""
    data = result.to_json()
    failed = sum(result.errors.values())
    rate = data["calls_per_second"]
    click.echo(
        f"{result.target}: {result.calls} calls in {result.seconds:.2f} s, "
        f"{rate if rate is not None else 0:,.0f} calls/s, {result.concurrency} in flight, "
        f"{failed} failed"
    )
    latency = data["latency_ms"]
    if latency is not None:
        click.echo(
            "latency (ms): "
            + "  ".join(f"{k} {_fmt(latency[k])}" for k in ("p50", "p90", "p99", "max", "mean"))
        )
        click.echo()
        buckets = data["histogram"]
        top = max(b["count"] for b in buckets)
        labels = [
            f"<= {_fmt(b['le_ms'])} ms" if b["le_ms"] is not None else f"> {_fmt(BOUNDS_MS[-1])} ms"
            for b in buckets
        ]
        width = max(len(label) for label in labels)
        digits = len(str(top))
        for label, bucket in zip(labels, buckets, strict=True):
            n = bucket["count"]
            bar = "█" * math.ceil(BAR * n / top) if n else ""
            share = 100 * n / len(result.latencies)
            click.echo(f"  {label:>{width}}  {n:>{digits}}  {share:5.1f}%  {bar}".rstrip())
    if failed:
        click.echo("\nerrors:")
        for code, count in sorted(result.errors.items(), key=lambda item: -item[1]):
            click.echo(f"  {code}: {count} (first: {result.examples[code]})")


def _fmt(ms: float) -> str:
    """Milliseconds with three significant digits."""
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"
