"""``python -m tests.chaos [--short] [--json FILE] [--profile P] [--hosts N]``: run the
chaos campaign, print the report table, exit 1 when an invariant failed (2: cannot run)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from tests.chaos.campaign import SHORT, Campaign, Plan, interrupt_on_sigterm, report, write_json
from tests.chaos.faults import nft_unavailable
from tests.lan import lan_unavailable, remove_stale_namespaces


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short campaign (~1 min)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--profile", help="timings profile (default: lan; short: test)")
    parser.add_argument("--hosts", type=int, help="hosts at the start (default 10)")
    parser.add_argument("--per-host", type=int, help="node processes per host (default 3)")
    parser.add_argument("--calls-per-second", type=float, help="call load (default 8)")
    parser.add_argument("--faults", help="comma-separated fault names, in order")
    parser.add_argument("--logs", type=Path, help="keep node logs in this directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    for reason in (lan_unavailable(), nft_unavailable()):
        if reason is not None:
            print(f"cannot run the chaos campaign: {reason}", file=sys.stderr)
            return 2
    plan = SHORT if args.short else Plan()
    changes = {
        "profile": args.profile,
        "hosts": args.hosts,
        "per_host": args.per_host,
        "calls_per_second": args.calls_per_second,
        "faults": tuple(args.faults.split(",")) if args.faults else None,
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})
    interrupt_on_sigterm()
    remove_stale_namespaces()
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        campaign = Campaign(plan, workdir)
        try:
            campaign.run()
        finally:
            print(report(campaign))
            if args.json is not None:
                write_json(campaign, args.json)
    return 0 if campaign.passed() else 1


if __name__ == "__main__":
    sys.exit(main())
