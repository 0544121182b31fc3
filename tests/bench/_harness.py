"""What the benchmarks share: argument types, CPU placement, the time limit, the verdict,
and the check their smoke tests make of every figure."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def counted(least: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``least``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value

    return parse


def positive(value: object) -> bool:
    """A figure as a report must give it: a finite number above 0 (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def placement(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """Two CPU sets, one for each side of a benchmark (clients and servers, publishers and
    subscribers) when pinning on a machine with two CPUs or more; else no pinning."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


class OutOfTime(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise OutOfTime("the benchmark ran out of time (--time-limit)")


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that end children


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise :class:`OutOfTime` in the block after ``seconds`` (SIGALRM), and turn SIGTERM
    into SystemExit, so both unwind through the finally blocks that end child processes."""
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)


def run(
    args: argparse.Namespace,
    measure: Callable[[argparse.Namespace], Any],
    report: Callable[[Any, argparse.Namespace], dict[str, Any]],
    print_table: Callable[[dict[str, Any]], None],
) -> int:
    """Measure within ``args.time_limit`` seconds (SIGTERM and the limit unwind through the
    code that ends the child processes), then print the table or ``--json``; with
    ``--check``, 1 when a ratio misses its target."""
    with time_limit(args.time_limit):
        figures = measure(args)
    result = report(figures, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    if args.check and not all(r["pass"] for r in result["ratios"].values()):
        return 1
    return 0
