"""python -m tests.sim [--nodes N] [--seed S] [--profile P] [--set FIELD=VALUE ...] [--json]

Runs the standard scenario (tests/sim/scenarios.py) and prints its figures; ``just sim``
runs it at 10,000 nodes. ``--set suspicion_mult=2`` (repeatable) changes one field of the
profile's ``MembershipSettings``. Exits 1 if a join or crash was never seen by all, or if a
healthy node was declared dead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys

from mesh._config import PROFILES

from .scenarios import ISLAND, standard


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
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    changes = {}
    for item in args.set:
        field, _, value = item.partition("=")
        changes[field] = ast.literal_eval(value)
    settings = dataclasses.replace(PROFILES[args.profile].membership, **changes)
    report = standard(
        args.nodes, args.seed, args.profile, settings, progress=progress, island_size=args.island
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print("\n".join(report.lines()))
    missing = [k for k, v in report.figures.items() if v is None]
    return 1 if missing or report.false_positives else 0


if __name__ == "__main__":
    sys.exit(main())
