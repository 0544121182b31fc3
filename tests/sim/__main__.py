"""python -m tests.sim [--nodes N] [--seed S] [--profile P] [--set FIELD=VALUE ...]
[--loss L ...] [--json]

Runs the standard scenario (tests/sim/scenarios.py) and prints its figures; with
``--loss L`` (repeatable) runs the lossy scenario once per loss rate instead. ``just sim``
runs both at 10,000 nodes. ``--set suspicion_mult=2`` (repeatable) changes one field of
the profile's ``MembershipSettings``. Exits 1 if a join or crash was never seen by all,
or if a healthy node was declared dead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from collections.abc import Callable
from functools import partial

from mesh._config import PROFILES

from .scenarios import ISLAND, Report, lossy, standard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="lan")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one MembershipSettings field of the profile",
    )
    parser.add_argument(
        "--island",
        type=int,
        default=ISLAND,
        help=f"nodes the partition cuts off, at most (default {ISLAND}; 0: a tenth)",
    )
    parser.add_argument(
        "--loss",
        type=float,
        action="append",
        default=[],
        metavar="RATE",
        help="run the lossy scenario at this loss rate (0..1) instead; repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if any(not 0.0 <= rate < 1.0 for rate in args.loss):
        parser.error("--loss takes a rate from 0 up to (not including) 1")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    changes = {}
    for item in args.set:
        field, _, value = item.partition("=")
        changes[field] = ast.literal_eval(value)
    settings = dataclasses.replace(PROFILES[args.profile].membership, **changes)
    runs: list[Callable[[], Report]] = [
        partial(lossy, args.nodes, rate, args.seed, args.profile, settings, progress)
        for rate in args.loss
    ] or [partial(standard, args.nodes, args.seed, args.profile, settings, progress, args.island)]
    reports: list[Report] = []
    for run in runs:
        reports.append(run())
        if not args.json:
            print("\n".join(reports[-1].lines()), flush=True)
    if args.json:
        shown = [dataclasses.asdict(r) for r in reports]
        print(json.dumps(shown if args.loss else shown[0], indent=2))
    return int(any(r.false_positives or None in r.figures.values() for r in reports))


if __name__ == "__main__":
    sys.exit(main())
